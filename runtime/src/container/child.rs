//! The container process between clone and exec. It runs in a copy of a multithreaded
//! daemon, so it only makes raw syscalls on data the parent prepared ([`ChildPlan`]): no
//! allocation, no locks, no glibc wrappers that assume other threads (setuid and friends are
//! called as raw syscalls for that reason). Every failure is written to the error pipe as a
//! [`ChildError`] and the child exits.

use std::convert::Infallible;

use super::caps::{self, errno};
use super::console;
use super::init;
use super::plan::{ChildError, ChildPlan, Stage, Step};

/// Runs the plan and execs the command; never returns.
pub(crate) fn run(plan: &ChildPlan) -> ! {
    let code = match setup_and_exec(plan) {
        Ok(never) => match never {},
        Err(e) => {
            report(plan.error_fd, e);
            if e.stage == Stage::Exec as u32 {
                exec_exit_code(e.errno)
            } else {
                1
            }
        }
    };
    unsafe { libc::_exit(code) }
}

/// Docker's exit codes for a command that cannot run: 127 not found, 126 cannot execute.
pub(crate) fn exec_exit_code(errno: i32) -> i32 {
    if errno == libc::ENOENT || errno == libc::ENOTDIR {
        127
    } else {
        126
    }
}

pub(super) fn report(fd: i32, e: ChildError) {
    let bytes = e.to_bytes();
    unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
}

fn fail(stage: Stage) -> ChildError {
    ChildError {
        stage: stage as u32,
        index: 0,
        errno: errno(),
    }
}

fn check(r: libc::c_long, stage: Stage) -> Result<(), ChildError> {
    if r < 0 {
        Err(fail(stage))
    } else {
        Ok(())
    }
}

fn setup_and_exec(plan: &ChildPlan) -> Result<Infallible, ChildError> {
    for fd in &plan.close_fds {
        unsafe { libc::close(*fd) };
    }
    wait_for_go(plan.sync_fd)?;
    if plan.new_cgroupns {
        check(
            unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } as _,
            Stage::CgroupNs,
        )?;
    }
    if plan.loopback_up {
        loopback_up().map_err(|errno| ChildError {
            stage: Stage::Loopback as u32,
            index: 0,
            errno,
        })?;
    }
    let host = plan.hostname.as_bytes();
    check(
        unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } as _,
        Stage::Hostname,
    )?;
    for (i, step) in plan.steps.iter().enumerate() {
        run_step(step).map_err(|errno| ChildError {
            stage: Stage::Step as u32,
            index: i as u32,
            errno,
        })?;
    }
    become_process(plan, true)
}

/// The part shared with `exec` (`super::exec`), run once the process is inside the
/// container's mounts: terminal, session, stdio, seccomp, user and capabilities, working
/// directory, no_new_privs, signals, then exec. `bind_console` binds the pty on
/// /dev/console (the container's own terminal, not an exec's).
pub(super) fn become_process(
    plan: &ChildPlan,
    bind_console: bool,
) -> Result<Infallible, ChildError> {
    // Until exec this process is a copy of the daemon (its memory, environment, command
    // line): not dumpable, so a container process without CAP_SYS_PTRACE cannot read it
    // through /proc (mem, environ, maps). Exec makes the command dumpable again; `--init`
    // stays a copy for good and keeps this (see init.rs).
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let mut stdio = plan.stdio;
    if let Some(socket) = plan.console_socket {
        let slave = console::open_in_child(socket, plan.console_size.as_ref(), bind_console)
            .map_err(|errno| ChildError {
                stage: Stage::Console as u32,
                index: 0,
                errno,
            })?;
        stdio = [slave; 3];
    }
    check(unsafe { libc::setsid() } as _, Stage::Session)?;
    if plan.console_socket.is_some() {
        check(
            unsafe { libc::ioctl(stdio[0], libc::TIOCSCTTY, 0) } as _,
            Stage::Session,
        )?;
    }
    for (target, fd) in stdio.iter().enumerate() {
        let target = target as i32;
        let r = if *fd == target {
            unsafe { libc::fcntl(target, libc::F_SETFD, 0) }
        } else {
            unsafe { libc::dup2(*fd, target) }
        };
        check(r as _, Stage::Stdio)?;
    }
    unsafe { libc::umask(0o022) };
    // As runc: without no_new_privs, installing the filter needs CAP_SYS_ADMIN, so it goes in
    // before the capabilities are cut (the profile must then allow the few syscalls left);
    // with it, as late as possible.
    if !plan.no_new_privileges {
        install_seccomp(plan)?;
    }
    switch_user(plan)?;
    check(unsafe { libc::chdir(plan.cwd.as_ptr()) } as _, Stage::Chdir)?;
    if plan.no_new_privileges {
        check(
            unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } as _,
            Stage::NoNewPrivs,
        )?;
    }
    reset_signals();
    if plan.no_new_privileges {
        // Before the init fork, so the init is filtered too.
        install_seccomp(plan)?;
    }
    if plan.init {
        init::become_init_and_fork(plan.error_fd, plan.console_socket.is_some())?;
    }
    // Nothing of the daemon's leaks into the container: every fd above stderr closes on exec
    // (the error pipe too, which is how the parent learns the exec worked).
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    exec(plan)
}

fn install_seccomp(plan: &ChildPlan) -> Result<(), ChildError> {
    let Some(filter) = &plan.seccomp else {
        return Ok(());
    };
    super::seccomp::install(filter).map_err(|errno| ChildError {
        stage: Stage::Seccomp as u32,
        index: 0,
        errno,
    })
}

pub(super) fn wait_for_go(fd: i32) -> Result<(), ChildError> {
    let mut byte = 0u8;
    loop {
        let r = unsafe { libc::read(fd, (&mut byte as *mut u8).cast(), 1) };
        if r == 1 {
            unsafe { libc::close(fd) };
            return Ok(());
        }
        if r < 0 && errno() == libc::EINTR {
            continue;
        }
        // EOF: the parent gave up (it could not place us in the cgroup).
        return Err(ChildError {
            stage: Stage::Sync as u32,
            index: 0,
            errno: if r == 0 { libc::EPIPE } else { errno() },
        });
    }
}

fn switch_user(plan: &ChildPlan) -> Result<(), ChildError> {
    caps::drop_bounding(plan.keep_caps, plan.last_cap).map_err(|errno| ChildError {
        stage: Stage::Capabilities as u32,
        index: 0,
        errno,
    })?;
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } as _,
        Stage::Capabilities,
    )?;
    // Raw syscalls: glibc's wrappers would try to change every thread of the daemon we were
    // copied from, and there is only this one.
    check(
        unsafe { libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) },
        Stage::Groups,
    )?;
    check(
        unsafe { libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) },
        Stage::SetGid,
    )?;
    check(
        unsafe { libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) },
        Stage::SetUid,
    )?;
    caps::set_process_caps(plan.keep_caps).map_err(|errno| ChildError {
        stage: Stage::Capabilities as u32,
        index: 0,
        errno,
    })
}

/// Default dispositions and an empty mask: the daemon ignores SIGPIPE, and ignored signals
/// would survive exec.
fn reset_signals() {
    for sig in 1..libc::SIGRTMAX() {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Tries each PATH candidate like execvp: remembers EACCES, moves on over ENOENT/ENOTDIR.
fn exec(plan: &ChildPlan) -> Result<Infallible, ChildError> {
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for candidate in &plan.exec_candidates {
        unsafe { libc::execve(candidate.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
        last = errno();
        match last {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::ENAMETOOLONG => {}
            _ => break,
        }
    }
    Err(ChildError {
        stage: Stage::Exec as u32,
        index: 0,
        errno: if saw_eacces && (last == libc::ENOENT || last == libc::ENOTDIR) {
            libc::EACCES
        } else {
            last
        },
    })
}

fn loopback_up() -> Result<(), i32> {
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(errno());
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    let mut result = Ok(());
    unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) < 0 {
            result = Err(errno());
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) < 0 {
                result = Err(errno());
            }
        }
        libc::close(sock);
    }
    result
}

fn run_step(step: &Step) -> Result<(), i32> {
    let ok = |r: libc::c_int| if r < 0 { Err(errno()) } else { Ok(()) };
    let ptr = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    match step {
        Step::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => ok(unsafe {
            libc::mount(
                ptr(source),
                target.as_ptr(),
                ptr(fstype),
                *flags,
                ptr(data).cast(),
            )
        }),
        Step::Mkdir { path, mode } => match ok(unsafe { libc::mkdir(path.as_ptr(), *mode) }) {
            Err(libc::EEXIST) => Ok(()),
            r => r,
        },
        Step::Touch { path } => {
            let flags = libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW;
            let fd = unsafe { libc::open(path.as_ptr(), flags, 0o644) };
            if fd < 0 {
                return match errno() {
                    libc::EISDIR => Ok(()),
                    e => Err(e),
                };
            }
            unsafe { libc::close(fd) };
            Ok(())
        }
        Step::Symlink { target, link } => {
            match ok(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }) {
                Err(libc::EEXIST) => Ok(()),
                r => r,
            }
        }
        Step::RemountReadOnly { path } => remount_read_only(path.as_ptr()),
        Step::PivotRoot { root } => pivot_root(root.as_ptr()),
        Step::Mask { path } => {
            let Some(is_dir) = stat_is_dir(path.as_ptr())? else {
                return Ok(());
            };
            if is_dir {
                ok(unsafe {
                    libc::mount(
                        c"tmpfs".as_ptr(),
                        path.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY,
                        std::ptr::null(),
                    )
                })
            } else {
                ok(unsafe {
                    libc::mount(
                        c"/dev/null".as_ptr(),
                        path.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    )
                })
            }
        }
        Step::Mknod {
            path,
            mode,
            rdev,
            uid,
            gid,
        } => {
            unsafe { libc::unlink(path.as_ptr()) };
            ok(unsafe { libc::mknod(path.as_ptr(), *mode, *rdev) })?;
            ok(unsafe { libc::chown(path.as_ptr(), *uid, *gid) })?;
            // mknod applies the umask; the host node's permissions are wanted.
            ok(unsafe { libc::chmod(path.as_ptr(), *mode & 0o7777) })
        }
        Step::ReadOnlyPath { path } => {
            if stat_is_dir(path.as_ptr())?.is_none() {
                return Ok(());
            }
            ok(unsafe {
                libc::mount(
                    path.as_ptr(),
                    path.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            })?;
            remount_read_only(path.as_ptr())
        }
    }
}

/// `Some(is_dir)`, or `None` when the path does not exist.
fn stat_is_dir(path: *const libc::c_char) -> Result<Option<bool>, i32> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::stat(path, &mut st) } < 0 {
        return match errno() {
            libc::ENOENT => Ok(None),
            e => Err(e),
        };
    }
    Ok(Some(st.st_mode & libc::S_IFMT == libc::S_IFDIR))
}

/// A read-only remount must repeat the mount's locked flags or the kernel refuses it.
fn remount_read_only(path: *const libc::c_char) -> Result<(), i32> {
    // glibc fills f_flag from statfs(2)'s f_flags (ST_VALID kernels): no /proc read, no malloc.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path, &mut st) } < 0 {
        return Err(errno());
    }
    let f = st.f_flag as libc::c_ulong;
    let mut keep: libc::c_ulong = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if f & st_flag != 0 {
            keep |= ms_flag;
        }
    }
    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | keep;
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            path,
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// runc's pivot: pivot_root(".", ".") stacks the old root on the new one; making it a slave
/// keeps the unmount from propagating to the host, then it is detached.
fn pivot_root(root: *const libc::c_char) -> Result<(), i32> {
    unsafe {
        let flags = libc::O_DIRECTORY | libc::O_RDONLY | libc::O_CLOEXEC;
        let old = libc::open(c"/".as_ptr(), flags);
        if old < 0 {
            return Err(errno());
        }
        let new = libc::open(root, flags);
        if new < 0 {
            let e = errno();
            libc::close(old);
            return Err(e);
        }
        let result = (|| {
            if libc::fchdir(new) < 0
                || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0
                || libc::fchdir(old) < 0
                || libc::mount(
                    std::ptr::null(),
                    c".".as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ) < 0
                || libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0
                || libc::chdir(c"/".as_ptr()) < 0
            {
                return Err(errno());
            }
            Ok(())
        })();
        libc::close(old);
        libc::close(new);
        result
    }
}
