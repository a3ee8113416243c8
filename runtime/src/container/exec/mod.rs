//! `docker exec`: one more process in a running container. It joins all of the container's
//! namespaces (through PID 1's pidfd, so never another process's) and its cgroup, and gets the
//! container's capabilities (all of them with `--privileged`), seccomp filter and
//! no_new_privs, set up by the same code as the container's PID 1 (`child::become_process`).
//! How the process gets into the pid namespace: see `child.rs`.
//!
//! ```ignore
//! let (process, io) = container::exec::spawn(&running, spec).await?;   // Err(StartError::Exec{..}) when the command cannot run
//! process.resize(rows, cols)?; let status = process.wait().await;
//! ```

mod child;
mod env;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_core::{Error, Result};

use super::io::{cloexec_pipe, make_stdio, FdStream, ParentIo};
use super::launch::{pidfd_open, StartError};
use super::plan::{cstring, exec_candidates, ChildPlan, PlanParts, Stage};
use super::running::{wait_exit, RunningContainer};
use super::scoped_path::ScopedRoot;
use super::security::SecuritySpec;
use super::spec::DEFAULT_PATH;
use super::{caps, console, seccomp, user, ExitStatus};
pub use env::exec_env;

/// What to run in the container, with the container's own settings it inherits.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The command: `args[0]` is looked up in `PATH` of `env` when it has no `/`.
    pub args: Vec<String>,
    /// The whole environment (see [`exec_env`]).
    pub env: Vec<String>,
    /// Absolute working directory in the container; empty means `/`.
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]`, looked up in the container's /etc/passwd and /etc/group.
    pub user: String,
    /// The container's `--group-add` groups, which its exec processes get too.
    pub group_add: Vec<String>,
    pub tty: bool,
    /// Keep stdin open for the caller (otherwise /dev/null).
    pub stdin: bool,
    /// `(rows, columns)` with `tty`.
    pub console_size: Option<(u16, u16)>,
    /// `exec --privileged`: every capability (the container's seccomp filter stays, as Docker).
    pub privileged: bool,
    /// The container's security settings and no_new_privs.
    pub security: SecuritySpec,
    pub no_new_privileges: bool,
}

/// The daemon's ends of the process's stdio. With a tty, `stdout` is the terminal and there
/// is no `stderr`.
pub struct ExecIo {
    pub stdin: Option<FdStream>,
    pub stdout: FdStream,
    pub stderr: Option<FdStream>,
}

/// A started exec process (a child of the daemon).
pub struct ExecProcess {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    pty: Option<OwnedFd>,
}

impl std::fmt::Debug for ExecProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecProcess")
            .field("pid", &self.pid)
            .finish()
    }
}

impl ExecProcess {
    /// The process as the host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Waits for the exit and reaps the process. Call it once.
    pub async fn wait(&self) -> ExitStatus {
        wait_exit(self.pid, &self.pidfd).await
    }

    /// Sets the terminal size (TIOCSWINSZ on the pty master); only with a tty.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let Some(master) = &self.pty else {
            return Err(Error::invalid("the exec process has no tty to resize"));
        };
        super::console::set_window_size(master, rows, cols)
            .map_err(|e| Error::io("resize tty", format!("exec process {}", self.pid), e))
    }
}

/// Everything the helper and the process do (see `child.rs`).
pub(super) struct ExecPlan {
    base: ChildPlan,
    /// PID 1's pidfd, for setns.
    container_pidfd: i32,
    ns_flags: libc::c_int,
    /// Write end of the pipe the helper reports the process's pid on.
    pid_fd: i32,
}

/// How long the helper and the process may take to reach exec.
const SETUP_DEADLINE: Duration = Duration::from_secs(60);

/// Starts `spec` in `container`. Returns when the command has been exec'd (or failed to be).
pub async fn spawn(
    container: &RunningContainer,
    spec: ExecSpec,
) -> Result<(ExecProcess, ExecIo), StartError> {
    if spec.args.first().is_none_or(|a| a.is_empty()) {
        return Err(Error::invalid("No exec command specified").into());
    }
    let pid1 = container.pid();
    let pidfd = container.pidfd().clone();
    let cgroup = container.cgroup().clone();
    let (process, io) = tokio::task::spawn_blocking(move || launch(pid1, &pidfd, &cgroup, &spec))
        .await
        .map_err(Error::from)??;
    let io = into_streams(io, &process).map_err(|e| Error::io("exec stdio", "pipe", e))?;
    Ok((process, io))
}

fn into_streams(io: ParentIo, process: &ExecProcess) -> std::io::Result<ExecIo> {
    Ok(match io {
        ParentIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => ExecIo {
            stdin: stdin.map(FdStream::new).transpose()?,
            stdout: FdStream::new(stdout)?,
            stderr: Some(FdStream::new(stderr)?),
        },
        ParentIo::Pty { master } => ExecIo {
            stdin: Some(FdStream::new(master.try_clone()?)?),
            stdout: FdStream::new(master)?,
            stderr: None,
        },
        ParentIo::PtyPending { .. } => {
            return Err(std::io::Error::other(format!(
                "exec process {}: terminal never received",
                process.pid
            )))
        }
    })
}

/// The container's root as its PID 1 sees it (its mounts included), for the user lookup.
/// The pidfd is checked after the open: PID 1 still running means the pid named it.
fn container_root(pid1: i32, pidfd: &OwnedFd) -> Result<ScopedRoot> {
    let path = PathBuf::from(format!("/proc/{pid1}/root"));
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    let c = cstring(&path.to_string_lossy())?;
    let fd = unsafe { libc::open(c.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::io("open", &path, std::io::Error::last_os_error()));
    }
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // A pidfd is readable once its process has exited.
    if unsafe { libc::poll(&mut pfd, 1, 0) } != 0 {
        return Err(Error::busy(format!("container process {pid1} has exited")));
    }
    Ok(ScopedRoot::from_dir_fd(fd, path))
}

/// The namespaces PID 1 has that the daemon does not share (all of them, when it runs in
/// its own; `--network host` shares the daemon's network namespace, which is then left as is).
fn namespaces_to_join(pid1: i32) -> libc::c_int {
    use std::os::unix::fs::MetadataExt;
    let mut flags = 0;
    for (name, flag) in [
        ("mnt", libc::CLONE_NEWNS),
        ("pid", libc::CLONE_NEWPID),
        ("uts", libc::CLONE_NEWUTS),
        ("ipc", libc::CLONE_NEWIPC),
        ("net", libc::CLONE_NEWNET),
        ("cgroup", libc::CLONE_NEWCGROUP),
    ] {
        let theirs = std::fs::metadata(format!("/proc/{pid1}/ns/{name}"));
        let ours = std::fs::metadata(format!("/proc/self/ns/{name}"));
        let same =
            matches!((&theirs, &ours), (Ok(a), Ok(b)) if a.ino() == b.ino() && a.dev() == b.dev());
        if !same {
            flags |= flag;
        }
    }
    flags
}

/// The fds of the helper's pipes: its ends, and the daemon's ends it must close.
struct HelperFds {
    sync_r: RawFd,
    err_w: RawFd,
    pid_w: RawFd,
    daemon_ends: Vec<RawFd>,
}

/// The plan for the helper and the process: user, caps, seccomp, stdio, argv and envp.
fn plan(
    pid1: i32,
    pidfd: &OwnedFd,
    spec: &ExecSpec,
    child_io: &super::io::ChildIo,
    fds: HelperFds,
) -> Result<ExecPlan> {
    let root = container_root(pid1, pidfd)?;
    let user = user::resolve_with_groups(&root, &spec.user, &spec.group_add)?;
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let sec = &spec.security;
    let container_caps = caps::tweak(&sec.cap_add, &sec.cap_drop, sec.privileged)?;
    let keep_caps = if spec.privileged {
        caps::all_mask()
    } else {
        container_caps
    };
    // The filter the container's PID 1 got: compiled for the container's capabilities.
    let seccomp = if sec.privileged {
        None
    } else {
        seccomp::program(&sec.seccomp, container_caps)?
    };
    let cwd = if spec.cwd.is_empty() { "/" } else { &spec.cwd };
    if !cwd.starts_with('/') {
        return Err(Error::invalid(format!(
            "the working directory {cwd:?} is invalid, it needs to be an absolute path"
        )));
    }
    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
        .to_string();
    let base = ChildPlan::new(
        PlanParts {
            close_fds: fds.daemon_ends,
            sync_fd: fds.sync_r,
            error_fd: fds.err_w,
            stdio: child_io.stdio,
            console_socket: child_io.console_socket,
            console_size: spec.console_size.map(|(rows, cols)| libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            }),
            new_cgroupns: false,
            loopback_up: false,
            hostname: cstring("")?,
            steps: Vec::new(),
            keep_caps,
            last_cap: caps::last_cap(),
            uid: user.uid,
            gid: user.gid,
            groups: user.additional_gids.clone(),
            cwd: cstring(cwd)?,
            no_new_privileges: spec.no_new_privileges,
            seccomp,
            init: false,
            exec_candidates: exec_candidates(&spec.args[0], &path_var)?,
        },
        &spec.args,
        &env,
    )?;
    Ok(ExecPlan {
        base,
        container_pidfd: pidfd.as_raw_fd(),
        ns_flags: namespaces_to_join(pid1),
        pid_fd: fds.pid_w,
    })
}

/// Blocking: prepare, clone the helper, place it in the cgroup, learn the process's pid,
/// receive its terminal, and wait for the exec (EOF on the error pipe).
fn launch(
    pid1: i32,
    pidfd: &OwnedFd,
    cgroup: &crate::cgroups::Cgroup,
    spec: &ExecSpec,
) -> Result<(ExecProcess, ParentIo), StartError> {
    let (parent_io, child_io) = make_stdio(spec.tty, spec.stdin)?;
    let (sync_r, sync_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;
    let (pid_r, pid_w) = cloexec_pipe()?;
    let mut daemon_ends = parent_io.raw_fds();
    daemon_ends.extend([sync_w.as_raw_fd(), err_r.as_raw_fd(), pid_r.as_raw_fd()]);
    let fds = HelperFds {
        sync_r: sync_r.as_raw_fd(),
        err_w: err_w.as_raw_fd(),
        pid_w: pid_w.as_raw_fd(),
        daemon_ends,
    };
    let plan = plan(pid1, pidfd, spec, &child_io, fds)?;
    let flags = libc::SIGCHLD as libc::c_ulong;
    // SAFETY: the helper only runs `child::run_helper` (raw syscalls on the prepared plan)
    // and ends in _exit; it never returns into the daemon's code.
    let helper = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if helper < 0 {
        return Err(Error::io("clone", "exec", std::io::Error::last_os_error()).into());
    }
    if helper == 0 {
        child::run_helper(&plan);
    }
    let helper = helper as i32;
    drop((sync_r, err_w, pid_w, child_io));
    let started = (|| {
        cgroup.add_process(helper)?;
        nix::unistd::write(&sync_w, &[1]).map_err(|e| Error::io("start exec", "pipe", e.into()))?;
        Ok::<_, Error>(())
    })();
    drop(sync_w);
    let deadline = Instant::now() + SETUP_DEADLINE;
    let pid = read_pid(&pid_r, deadline);
    reap(helper);
    started?;
    let pid = match pid.map_err(|e| Error::io("read exec pid", "pipe", e))? {
        Some(pid) => pid,
        None => return Err(child_failure(&err_r, deadline, spec)),
    };
    let process_fd = match pidfd_open(pid) {
        Ok(fd) => Arc::new(fd),
        Err(e) => {
            kill_and_reap(pid);
            return Err(Error::io("pidfd_open", format!("/proc/{pid}"), e).into());
        }
    };
    let (io, pty) = match receive_terminal(parent_io) {
        Ok(x) => x,
        Err(e) => {
            kill_and_reap(pid);
            return Err(e.into());
        }
    };
    match super::launch::read_child_error(&err_r, deadline) {
        Ok(None) if io.is_some() => Ok((
            ExecProcess {
                pid,
                pidfd: process_fd,
                pty,
            },
            io.expect("checked above"),
        )),
        Ok(None) => {
            kill_and_reap(pid);
            Err(Error::Other("the exec process did not send its terminal".into()).into())
        }
        Ok(Some(record)) => {
            kill_and_reap(pid);
            Err(describe(record, spec))
        }
        Err(e) => {
            kill_and_reap(pid);
            Err(Error::io("read exec status", "pipe", e).into())
        }
    }
}

/// With a tty: the master the process sent (kept for resize, and the stream's fd).
fn receive_terminal(io: ParentIo) -> Result<(Option<ParentIo>, Option<OwnedFd>)> {
    match io {
        ParentIo::PtyPending { socket } => match console::receive_master(&socket) {
            Ok(Some(master)) => {
                let keep = master.try_clone().map_err(|e| Error::io("dup", "pty", e))?;
                Ok((Some(ParentIo::Pty { master }), Some(keep)))
            }
            Ok(None) => Ok((None, None)),
            Err(e) => Err(Error::io("receive pty", "exec", e)),
        },
        io => Ok((Some(io), None)),
    }
}

/// The process's pid from the helper, or `None` when the helper failed before forking it.
fn read_pid(fd: &OwnedFd, deadline: Instant) -> std::io::Result<Option<i32>> {
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < buf.len() {
        super::launch::wait_readable(fd, deadline)?;
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => return Ok(None),
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(i32::from_ne_bytes(buf)))
}

/// The helper's or the process's error record, as a start error.
fn child_failure(err_r: &OwnedFd, deadline: Instant, spec: &ExecSpec) -> StartError {
    match super::launch::read_child_error(err_r, deadline) {
        Ok(Some(record)) => describe(record, spec),
        Ok(None) => Error::Other("the exec helper exited without a report".into()).into(),
        Err(e) => Error::io("read exec status", "pipe", e).into(),
    }
}

fn describe(record: super::plan::ChildError, spec: &ExecSpec) -> StartError {
    let cmd = &spec.args[0];
    let why = super::launch::errno_text(record.errno);
    let stage = Stage::from_u32(record.stage);
    let message = match stage {
        Some(Stage::Exec) if record.errno == libc::ENOENT && !cmd.contains('/') => {
            format!("exec: \"{cmd}\": executable file not found in $PATH")
        }
        Some(Stage::Exec) => format!("exec: \"{cmd}\": stat {cmd}: {why}"),
        Some(Stage::Chdir) => format!(
            "chdir to cwd (\"{}\") set in config.json failed: {why}",
            if spec.cwd.is_empty() { "/" } else { &spec.cwd }
        ),
        Some(s) => format!("{}: {why}", format!("{s:?}").to_lowercase()),
        None => format!("stage {}: {why}", record.stage),
    };
    StartError::Exec {
        exit_code: 126,
        message: format!("OCI runtime exec failed: exec failed: unable to start container process: {message}: unknown"),
    }
}

fn reap(pid: i32) {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}

fn kill_and_reap(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    reap(pid);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cmd: &str) -> ExecSpec {
        ExecSpec {
            args: vec![cmd.into()],
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            group_add: Vec::new(),
            tty: false,
            stdin: false,
            console_size: None,
            privileged: false,
            security: SecuritySpec::default(),
            no_new_privileges: false,
        }
    }

    #[test]
    fn a_process_shares_every_namespace_with_itself() {
        assert_eq!(namespaces_to_join(std::process::id() as i32), 0);
    }

    #[test]
    fn start_failures_read_as_dockers() {
        let record = |stage: Stage, errno| super::super::plan::ChildError {
            stage: stage as u32,
            index: 0,
            errno,
        };
        let StartError::Exec { exit_code, message } =
            describe(record(Stage::Exec, libc::ENOENT), &spec("nosuch"))
        else {
            panic!("an exec failure");
        };
        assert_eq!(exit_code, 126);
        assert!(
            message.contains("exec: \"nosuch\": executable file not found in $PATH"),
            "{message}"
        );
        let StartError::Exec { message, .. } =
            describe(record(Stage::Chdir, libc::ENOENT), &spec("true"))
        else {
            panic!("a chdir failure");
        };
        assert!(message.contains("chdir to cwd (\"/\")"), "{message}");
    }
}
