//! The parent's half of starting a container: prepare everything (files, user, mount targets,
//! stdio, cgroup, the child's plan), clone, place the child in its cgroup, let it go, and learn
//! from the error pipe whether it reached exec.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use strata_core::{Error, IoContext, Result};

use super::caps;
use super::child;
use super::console;
use super::etc_files;
use super::io::{cloexec_pipe, make_stdio, ParentIo};
use super::plan::{cpath, cstring, exec_candidates, ChildError, ChildPlan, PlanParts, Stage, Step};
use super::scoped_path::{Leaf, ScopedRoot};
use super::security;
use super::spec::{ContainerSpec, MountKind, Network, DEFAULT_PATH};
use super::user::{self, ResolvedUser};
use crate::cgroups::{Cgroup, CgroupVersion, Layout};

/// Device nodes bound from the host into the container's /dev tmpfs.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Why a container did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The command could not be executed. Record the container as exited with `exit_code`
    /// (127 not found, 126 not executable) and `message` as its error, as Docker does.
    #[error("{message}")]
    Exec { exit_code: i32, message: String },
    /// Anything else: bad spec, host problem, a setup step in the child failed.
    #[error(transparent)]
    Setup(#[from] Error),
}

impl From<StartError> for Error {
    fn from(e: StartError) -> Error {
        match e {
            StartError::Exec { message, .. } => Error::Other(message),
            StartError::Setup(e) => e,
        }
    }
}

/// A started child, before the async side takes over.
pub(crate) struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub cgroup: Cgroup,
    pub io: ParentIo,
}

/// Starts the container process; blocking (run it in `spawn_blocking`).
pub(crate) fn launch(spec: &ContainerSpec, layout: &Layout) -> Result<Launched, StartError> {
    spec.validate()?;
    std::fs::create_dir_all(&spec.container_dir).ctx("create", &spec.container_dir)?;
    let etc = etc_files::write_all(spec)?;
    let root = ScopedRoot::open(&spec.rootfs)?;
    let user = user::resolve_with_groups(&root, &spec.user, &spec.group_add)?;
    let env = build_env(spec, &user);
    let cwd = if spec.cwd.is_empty() {
        "/"
    } else {
        spec.cwd.as_str()
    };
    root.ensure(cwd, Leaf::Dir)?;
    let security = spec.security.prepare()?;
    let (parent_io, child_io) = make_stdio(spec.tty, spec.stdin)?;
    let steps = mount_steps(spec, &root, &etc, &security.nodes)?;
    let (sync_r, sync_w) = cloexec_pipe()?;
    let (err_r, err_w) = cloexec_pipe()?;

    let path_var = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let mut close_fds = parent_io.raw_fds();
    close_fds.extend([sync_w.as_raw_fd(), err_r.as_raw_fd()]);
    let plan = ChildPlan::new(
        PlanParts {
            close_fds,
            sync_fd: sync_r.as_raw_fd(),
            error_fd: err_w.as_raw_fd(),
            stdio: child_io.stdio,
            console_socket: child_io.console_socket,
            console_size: spec.console_size.map(|(rows, cols)| libc::winsize {
                ws_row: rows,
                ws_col: cols,
                ws_xpixel: 0,
                ws_ypixel: 0,
            }),
            new_cgroupns: layout.version() == CgroupVersion::V2,
            loopback_up: spec.network == Network::None,
            hostname: cstring(&spec.hostname)?,
            steps,
            keep_caps: security.caps,
            last_cap: caps::last_cap(),
            uid: user.uid,
            gid: user.gid,
            groups: user.additional_gids.clone(),
            cwd: cstring(cwd)?,
            no_new_privileges: spec.no_new_privileges,
            seccomp: security.seccomp,
            init: spec.init,
            exec_candidates: exec_candidates(&spec.args[0], path_var)?,
        },
        &spec.args,
        &env,
    )?;

    if spec.init {
        super::init::prepare();
    }
    let cgroup = Cgroup::create(layout, &spec.cgroup_parent, &spec.id, &spec.resources)?;
    if let Err(e) = cgroup.restrict_devices(&security.device_rules) {
        remove_cgroup(&cgroup);
        return Err(e.into());
    }
    let pid = match clone_child(spec.network, &plan) {
        Ok(pid) => pid,
        Err(e) => {
            remove_cgroup(&cgroup);
            return Err(Error::io("clone", &spec.rootfs, e).into());
        }
    };
    // The child's ends live on in the child only.
    drop((sync_r, err_w, child_io));
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            abandon(pid, &cgroup);
            return Err(Error::io("pidfd_open", format!("/proc/{pid}"), e).into());
        }
    };
    if let Err(e) = cgroup.add_process(pid) {
        abandon(pid, &cgroup);
        return Err(e.into());
    }
    if let Err(e) = nix::unistd::write(&sync_w, &[1]) {
        abandon(pid, &cgroup);
        return Err(Error::io("start container", &spec.rootfs, e.into()).into());
    }
    drop(sync_w);
    let io = match parent_io {
        ParentIo::PtyPending { socket } => match console::receive_master(&socket) {
            Ok(Some(master)) => Some(ParentIo::Pty { master }),
            // No master: the child failed; the error pipe says how.
            Ok(None) => None,
            Err(e) => {
                abandon(pid, &cgroup);
                return Err(Error::io("receive pty", &spec.container_dir, e).into());
            }
        },
        io => Some(io),
    };
    match (
        read_child_error(&err_r, std::time::Instant::now() + SETUP_DEADLINE),
        io,
    ) {
        (Ok(None), Some(io)) => Ok(Launched {
            pid,
            pidfd,
            cgroup,
            io,
        }),
        (Ok(None), None) => {
            abandon(pid, &cgroup);
            Err(Error::Other("the container exec'd without sending its terminal".into()).into())
        }
        (Ok(Some(record)), _) => {
            abandon(pid, &cgroup);
            Err(describe_failure(record, spec, &plan))
        }
        (Err(e), _) => {
            abandon(pid, &cgroup);
            Err(Error::io("read child status", &spec.container_dir, e).into())
        }
    }
}

/// PATH, HOSTNAME and TERM first, then the caller's, then HOME if it gave none (Docker's order).
fn build_env(spec: &ContainerSpec, user: &ResolvedUser) -> Vec<String> {
    let has = |key: &str| {
        spec.env
            .iter()
            .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let mut env = Vec::new();
    if !has("PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has("HOSTNAME") {
        env.push(format!("HOSTNAME={}", spec.hostname));
    }
    if spec.tty && !has("TERM") {
        env.push("TERM=xterm".to_string());
    }
    env.extend(spec.env.iter().cloned());
    if !has("HOME") {
        env.push(format!("HOME={}", user.home));
    }
    env
}

/// The mount steps, before and after pivot_root (see `Step`).
fn mount_steps(
    spec: &ContainerSpec,
    root: &ScopedRoot,
    etc: &[(std::path::PathBuf, &'static str)],
    nodes: &[security::DeviceNode],
) -> Result<Vec<Step>> {
    let rootfs = root.path();
    let mount =
        |source: Option<&str>, target: &Path, fstype: Option<&str>, flags, data: Option<&str>| {
            Ok::<_, Error>(Step::Mount {
                source: source.map(cstring).transpose()?,
                target: cpath(target)?,
                fstype: fstype.map(cstring).transpose()?,
                flags,
                data: data.map(cstring).transpose()?,
            })
        };
    let bind = |source: &Path, target: &Path, flags| {
        Ok::<_, Error>(Step::Mount {
            source: Some(cpath(source)?),
            target: cpath(target)?,
            fstype: None,
            flags: libc::MS_BIND | flags,
            data: None,
        })
    };
    let proc_dir = root.ensure("/proc", Leaf::Dir)?;
    let dev = root.ensure("/dev", Leaf::Dir)?;
    let sys = root.ensure("/sys", Leaf::Dir)?;
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

    let mut steps = vec![
        // Nothing we mount may propagate back to the host.
        mount(
            None,
            Path::new("/"),
            None,
            libc::MS_REC | libc::MS_PRIVATE,
            None,
        )?,
        bind(rootfs, rootfs, libc::MS_REC)?,
        mount(
            Some("proc"),
            &proc_dir,
            Some("proc"),
            nosuid_nodev_noexec,
            None,
        )?,
        mount(
            Some("tmpfs"),
            &dev,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_STRICTATIME,
            Some("mode=755,size=65536k"),
        )?,
    ];
    for name in DEVICES {
        let target = dev.join(name);
        steps.push(Step::Touch {
            path: cpath(&target)?,
        });
        steps.push(bind(&Path::new("/dev").join(name), &target, 0)?);
    }
    steps.extend(security::node_steps(&dev, nodes)?);
    let pts = dev.join("pts");
    steps.push(Step::Mkdir {
        path: cpath(&pts)?,
        mode: 0o755,
    });
    steps.push(mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?);
    let shm = dev.join("shm");
    steps.push(Step::Mkdir {
        path: cpath(&shm)?,
        mode: 0o1777,
    });
    steps.push(mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid_nodev_noexec,
        Some("mode=1777,size=65536k"),
    )?);
    let mqueue = dev.join("mqueue");
    steps.push(Step::Mkdir {
        path: cpath(&mqueue)?,
        mode: 0o755,
    });
    steps.push(mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        nosuid_nodev_noexec,
        None,
    )?);
    for (target, link) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/kcore", "core"),
    ] {
        steps.push(Step::Symlink {
            target: cstring(target)?,
            link: cpath(&dev.join(link))?,
        });
    }
    if spec.tty {
        // The child binds its pty slave here after pivot_root (see console.rs).
        steps.push(Step::Touch {
            path: cpath(&dev.join("console"))?,
        });
    }
    // Docker mounts /sys read-write only for a privileged container.
    let sys_ro = if spec.security.privileged {
        0
    } else {
        libc::MS_RDONLY
    };
    steps.push(mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nosuid_nodev_noexec | sys_ro,
        None,
    )?);
    for (source, target) in etc {
        let target = root.ensure(target, Leaf::File)?;
        steps.push(bind(source, &target, 0)?);
    }
    steps.extend(user_mount_steps(spec, root, &dev)?);
    steps.push(Step::PivotRoot {
        root: cpath(rootfs)?,
    });
    steps.extend(spec.security.path_steps()?);
    if spec.read_only_rootfs {
        steps.push(Step::RemountReadOnly {
            path: cstring("/")?,
        });
    }
    Ok(steps)
}

/// Bind, volume and tmpfs mounts, parents before children (sorted by depth, as Docker).
fn user_mount_steps(spec: &ContainerSpec, root: &ScopedRoot, dev: &Path) -> Result<Vec<Step>> {
    let mut mounts: Vec<_> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| m.target.split('/').filter(|p| !p.is_empty()).count());
    let mut steps = Vec::new();
    for m in mounts {
        let leaf = match m.kind {
            MountKind::Tmpfs => Leaf::Dir,
            MountKind::Bind | MountKind::Volume => {
                let meta = std::fs::metadata(&m.source).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Error::invalid(format!(
                            "invalid mount config: bind source path does not exist: {}",
                            m.source.display()
                        ))
                    } else {
                        Error::io("stat", &m.source, e)
                    }
                })?;
                if meta.is_dir() {
                    Leaf::Dir
                } else {
                    Leaf::File
                }
            }
        };
        let target = match m.target.strip_prefix("/dev/") {
            // /dev is our tmpfs, not the image's: create the target there, in the child.
            Some(below) => {
                let mut path = dev.to_path_buf();
                let parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
                for (i, part) in parts.iter().enumerate() {
                    path.push(part);
                    steps.push(if i + 1 == parts.len() && leaf == Leaf::File {
                        Step::Touch {
                            path: cpath(&path)?,
                        }
                    } else {
                        Step::Mkdir {
                            path: cpath(&path)?,
                            mode: 0o755,
                        }
                    });
                }
                path
            }
            None => root.ensure(&m.target, leaf)?,
        };
        let target_c = cpath(&target)?;
        match m.kind {
            MountKind::Tmpfs => {
                let mut data = format!("mode={:o}", m.tmpfs_mode.unwrap_or(0o1777));
                if let Some(size) = m.tmpfs_size {
                    data.push_str(&format!(",size={size}"));
                }
                let ro = if m.read_only { libc::MS_RDONLY } else { 0 };
                steps.push(Step::Mount {
                    source: Some(cstring("tmpfs")?),
                    target: target_c,
                    fstype: Some(cstring("tmpfs")?),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | ro,
                    data: Some(cstring(&data)?),
                });
            }
            MountKind::Bind | MountKind::Volume => {
                steps.push(Step::Mount {
                    source: Some(cpath(&m.source)?),
                    target: target_c.clone(),
                    fstype: None,
                    flags: libc::MS_BIND | libc::MS_REC,
                    data: None,
                });
                steps.push(Step::Mount {
                    source: None,
                    target: target_c.clone(),
                    fstype: None,
                    flags: m.propagation.flags(),
                    data: None,
                });
                if m.read_only {
                    steps.push(Step::RemountReadOnly { path: target_c });
                }
            }
        }
    }
    Ok(steps)
}

/// clone(2) with fork semantics (no new stack, SIGCHLD on exit) into new namespaces, so the
/// child is PID 1 of its pid namespace without an intermediate process.
fn clone_child(network: Network, plan: &ChildPlan) -> std::io::Result<i32> {
    let mut flags =
        libc::CLONE_NEWPID | libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if network == Network::None {
        flags |= libc::CLONE_NEWNET;
    }
    let flags = (flags | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: the child only runs `child::run`, which makes raw syscalls on `plan` (already
    // built) and ends in exec or _exit; it never returns into Rust code of the parent.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        child::run(plan);
    }
    Ok(pid as i32)
}

pub(crate) fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// How long a container's setup (mounts, pivot_root, exec) may take. A child stuck in it (a
/// mount on a hung filesystem, say) is killed after this, so a start never holds the
/// container's lock without bound.
const SETUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Reads the child's error record; EOF without one means exec succeeded. Gives up with
/// `TimedOut` when nothing has come by `deadline`.
pub(super) fn read_child_error(
    fd: &OwnedFd,
    deadline: std::time::Instant,
) -> std::io::Result<Option<ChildError>> {
    let mut buf = [0u8; ChildError::SIZE];
    let mut got = 0;
    while got < buf.len() {
        wait_readable(fd, deadline)?;
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    match got {
        0 => Ok(None),
        ChildError::SIZE => Ok(Some(ChildError::from_bytes(&buf))),
        _ => Err(std::io::Error::other(
            "short error record from the container process",
        )),
    }
}

/// Waits until `fd` has data or EOF, or fails with `TimedOut` at `deadline`.
pub(super) fn wait_readable(fd: &OwnedFd, deadline: std::time::Instant) -> std::io::Result<()> {
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the container's setup did not finish within {} s",
                    SETUP_DEADLINE.as_secs()
                ),
            ));
        }
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd for the duration of the call.
        match unsafe { libc::poll(&mut pfd, 1, ms.max(1)) } {
            0 => continue,
            n if n > 0 => return Ok(()),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Kills and reaps a child that will not become a container, and removes its cgroup.
fn abandon(pid: i32, cgroup: &Cgroup) {
    let pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
    remove_cgroup(cgroup);
}

fn remove_cgroup(cgroup: &Cgroup) {
    if let Err(e) = cgroup.remove() {
        tracing::warn!("removing cgroup of a failed start: {e}");
    }
}

pub(super) fn errno_text(errno: i32) -> String {
    let text = nix::errno::Errno::from_raw(errno).desc();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn describe_failure(record: ChildError, spec: &ContainerSpec, plan: &ChildPlan) -> StartError {
    let cmd = &spec.args[0];
    let why = errno_text(record.errno);
    let stage = Stage::from_u32(record.stage);
    if stage == Some(Stage::Exec) {
        let exit_code = child::exec_exit_code(record.errno);
        let message = if record.errno == libc::ENOENT && !cmd.contains('/') {
            format!("exec: \"{cmd}\": executable file not found in $PATH")
        } else if record.errno == libc::ENOENT {
            format!("exec: \"{cmd}\": stat {cmd}: {why}")
        } else {
            format!("exec: \"{cmd}\": {why}")
        };
        return StartError::Exec { exit_code, message };
    }
    let what = match stage {
        Some(Stage::Step) => plan
            .steps
            .get(record.index as usize)
            .map(|s| s.describe())
            .unwrap_or_else(|| format!("step {}", record.index)),
        Some(Stage::Chdir) => format!("chdir to {}", plan.cwd.to_string_lossy()),
        Some(s) => format!("{s:?}").to_lowercase(),
        None => format!("stage {}", record.stage),
    };
    StartError::Setup(Error::Other(format!(
        "container {} failed to start: {what}: {why}",
        spec.id
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gets_dockers_defaults() {
        let mut spec = ContainerSpec::new("c1", "/r".into(), "/d".into(), vec!["sh".into()]);
        spec.env = vec!["FOO=bar".into()];
        spec.tty = true;
        let user = ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            home: "/root".into(),
        };
        let env = build_env(&spec, &user);
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOSTNAME=c1".into(),
                "TERM=xterm".into(),
                "FOO=bar".into(),
                "HOME=/root".into()
            ]
        );
        spec.env = vec!["PATH=/x".into(), "HOME=/h".into()];
        spec.tty = false;
        let env = build_env(&spec, &user);
        assert_eq!(env, ["HOSTNAME=c1", "PATH=/x", "HOME=/h"]);
    }

    #[test]
    fn plan_mounts_masks_and_pivots_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let host_dir = tmp.path().join("data");
        std::fs::create_dir_all(&host_dir).unwrap();
        let mut spec = ContainerSpec::new(
            "c1",
            rootfs.clone(),
            tmp.path().join("ctr"),
            vec!["sh".into()],
        );
        spec.read_only_rootfs = true;
        spec.mounts.push(crate::container::MountSpec::bind(
            &host_dir,
            "/data/deep",
            true,
        ));
        spec.mounts.push(crate::container::MountSpec::tmpfs(
            "/data",
            Some(1 << 20),
            Some(0o700),
        ));
        let root = ScopedRoot::open(&rootfs).unwrap();
        let etc = vec![(tmp.path().join("hostname"), "/etc/hostname")];
        let steps = mount_steps(&spec, &root, &etc, &[]).unwrap();
        let text: Vec<String> = steps.iter().map(|s| s.describe()).collect();
        let pos = |needle: &str| {
            text.iter()
                .position(|t| t.contains(needle))
                .unwrap_or_else(|| panic!("{needle} in {text:#?}"))
        };
        assert!(pos("(proc)") < pos("pivot_root"));
        assert!(pos("(tmpfs) on") < pos("(devpts)"));
        // the tmpfs at /data goes before the bind at /data/deep
        assert!(pos("(tmpfs) on") < pos("/data/deep"));
        assert!(pos("remount") > pos("/data/deep"));
        assert!(pos("mask /proc/kcore") > pos("pivot_root"));
        assert!(text.last().unwrap().contains("remount / read-only"));
        assert!(rootfs.join("data/deep").is_dir());
        assert!(rootfs.join("etc/hostname").is_file());
        assert!(steps.iter().any(|s| matches!(s, Step::Mount { data: Some(d), .. } if d.to_str().unwrap() == "mode=700,size=1048576")));
    }

    #[test]
    fn missing_bind_source_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let mut spec = ContainerSpec::new(
            "c1",
            tmp.path().into(),
            tmp.path().join("c"),
            vec!["sh".into()],
        );
        spec.mounts.push(crate::container::MountSpec::bind(
            "/nonexistent/strata",
            "/x",
            false,
        ));
        let root = ScopedRoot::open(tmp.path()).unwrap();
        let err = mount_steps(&spec, &root, &[], &[]).unwrap_err();
        assert!(
            err.to_string().contains("bind source path does not exist"),
            "{err}"
        );
    }

    /// Guards the bound on a start: a child that never reports (stuck in its setup) made the
    /// start wait forever, holding the container's lock; now the wait ends with TimedOut.
    #[test]
    fn a_silent_child_times_out() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let started = std::time::Instant::now();
        let deadline = started + std::time::Duration::from_millis(200);
        let err = read_child_error(&r, deadline).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
