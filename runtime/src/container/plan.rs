//! The child's work list, built in the parent. The cloned child of a multithreaded daemon must
//! not allocate or take locks (another thread may have held the malloc lock at clone time), so
//! every string it needs is a `CString` made here and every step is data it only interprets.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use strata_core::{Error, Result};

/// One filesystem operation of the child. Paths before `PivotRoot` are host paths under the
/// rootfs; after it they are container paths.
#[derive(Debug)]
pub(crate) enum Step {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// mkdir, an existing directory is fine.
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    /// Creates an empty file (a bind target), an existing one is fine.
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// Remounts a bind mount read-only, keeping its nosuid/nodev/noexec/atime flags.
    RemountReadOnly {
        path: CString,
    },
    /// pivot_root into `root` and detach the old root.
    PivotRoot {
        root: CString,
    },
    /// Docker's masked paths: /dev/null over a file, an empty read-only tmpfs over a
    /// directory; a missing path is skipped.
    Mask {
        path: CString,
    },
    /// Docker's read-only paths: bound onto themselves read-only; missing is skipped.
    ReadOnlyPath {
        path: CString,
    },
    /// A device node (`--device`, `--privileged`), then chown; an existing node is replaced.
    Mknod {
        path: CString,
        mode: libc::mode_t,
        rdev: libc::dev_t,
        uid: libc::uid_t,
        gid: libc::gid_t,
    },
}

impl Step {
    pub(crate) fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            Step::Mount {
                source,
                target,
                fstype,
                ..
            } => format!(
                "mount {} ({}) on {}",
                source.as_ref().map(s).unwrap_or_default(),
                fstype
                    .as_ref()
                    .map(s)
                    .unwrap_or_else(|| "bind/propagation".into()),
                s(target)
            ),
            Step::Mkdir { path, .. } => format!("mkdir {}", s(path)),
            Step::Touch { path } => format!("create {}", s(path)),
            Step::Symlink { target, link } => format!("symlink {} -> {}", s(link), s(target)),
            Step::RemountReadOnly { path } => format!("remount {} read-only", s(path)),
            Step::PivotRoot { root } => format!("pivot_root into {}", s(root)),
            Step::Mask { path } => format!("mask {}", s(path)),
            Step::ReadOnlyPath { path } => format!("make {} read-only", s(path)),
            Step::Mknod { path, .. } => format!("mknod {}", s(path)),
        }
    }
}

/// Everything the child does, in order (see `child::run`).
pub(crate) struct ChildPlan {
    /// The parent's ends of our pipes, closed first thing in the child.
    pub close_fds: Vec<RawFd>,
    /// Read end of the "go" pipe: the parent writes one byte once the child is in its cgroup.
    pub sync_fd: RawFd,
    /// Write end of the CLOEXEC error pipe: a failed step writes `ChildError` here; a
    /// successful exec closes it, which the parent reads as EOF.
    pub error_fd: RawFd,
    /// The child's stdin, stdout, stderr (replaced by the pty slave with a tty).
    pub stdio: [RawFd; 3],
    /// With a tty: where to send the pty master, and the initial size.
    pub console_socket: Option<RawFd>,
    pub console_size: Option<libc::winsize>,
    pub new_cgroupns: bool,
    pub loopback_up: bool,
    pub hostname: CString,
    pub steps: Vec<Step>,
    pub keep_caps: u64,
    pub last_cap: u32,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    pub cwd: CString,
    pub no_new_privileges: bool,
    /// The seccomp program to install; `None` for unconfined.
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub init: bool,
    /// Full paths to try in order (the PATH lookup of `argv[0]`, done here, run there).
    pub exec_candidates: Vec<CString>,
    /// Keeps the strings `argv`/`envp` point into alive.
    _argv_owned: Vec<CString>,
    _envp_owned: Vec<CString>,
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
}

/// Where the child stopped, sent back over the error pipe with the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    Sync = 1,
    CgroupNs,
    Loopback,
    Hostname,
    Step,
    Session,
    Stdio,
    Capabilities,
    Groups,
    SetGid,
    SetUid,
    Chdir,
    NoNewPrivs,
    InitFork,
    Exec,
    Console,
    Seccomp,
    /// `exec`: joining the container's namespaces.
    JoinNamespaces,
    /// `exec`: forking the process that enters the container's pid namespace.
    Fork,
}

impl Stage {
    pub(crate) fn from_u32(v: u32) -> Option<Stage> {
        use Stage::*;
        [
            Sync,
            CgroupNs,
            Loopback,
            Hostname,
            Step,
            Session,
            Stdio,
            Capabilities,
            Groups,
            SetGid,
            SetUid,
            Chdir,
            NoNewPrivs,
            InitFork,
            Exec,
            Console,
            Seccomp,
            JoinNamespaces,
            Fork,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

/// The error record: stage, step index (for `Stage::Step`), errno; 12 bytes, native endian.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChildError {
    pub stage: u32,
    pub index: u32,
    pub errno: i32,
}

impl ChildError {
    pub(crate) const SIZE: usize = 12;

    pub(crate) fn to_bytes(self) -> [u8; 12] {
        let mut b = [0u8; 12];
        b[0..4].copy_from_slice(&self.stage.to_ne_bytes());
        b[4..8].copy_from_slice(&self.index.to_ne_bytes());
        b[8..12].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }

    pub(crate) fn from_bytes(b: &[u8; 12]) -> ChildError {
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        ChildError {
            stage: u32::from_ne_bytes(word(0)),
            index: u32::from_ne_bytes(word(4)),
            errno: i32::from_ne_bytes(word(8)),
        }
    }
}

pub(crate) fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::invalid(format!("{s:?} contains a NUL byte")))
}

pub(crate) fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("{} contains a NUL byte", p.display())))
}

/// The pieces of a [`ChildPlan`] other than argv/envp.
pub(crate) struct PlanParts {
    pub close_fds: Vec<RawFd>,
    pub sync_fd: RawFd,
    pub error_fd: RawFd,
    pub stdio: [RawFd; 3],
    pub console_socket: Option<RawFd>,
    pub console_size: Option<libc::winsize>,
    pub new_cgroupns: bool,
    pub loopback_up: bool,
    pub hostname: CString,
    pub steps: Vec<Step>,
    pub keep_caps: u64,
    pub last_cap: u32,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub cwd: CString,
    pub no_new_privileges: bool,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub init: bool,
    pub exec_candidates: Vec<CString>,
}

impl ChildPlan {
    pub(crate) fn new(parts: PlanParts, args: &[String], env: &[String]) -> Result<ChildPlan> {
        let argv_owned = args
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>>>()?;
        let envp_owned = env.iter().map(|a| cstring(a)).collect::<Result<Vec<_>>>()?;
        let null_terminated = |v: &[CString]| {
            v.iter()
                .map(|c| c.as_ptr())
                .chain([std::ptr::null()])
                .collect::<Vec<_>>()
        };
        let argv = null_terminated(&argv_owned);
        let envp = null_terminated(&envp_owned);
        Ok(ChildPlan {
            close_fds: parts.close_fds,
            sync_fd: parts.sync_fd,
            error_fd: parts.error_fd,
            stdio: parts.stdio,
            console_socket: parts.console_socket,
            console_size: parts.console_size,
            new_cgroupns: parts.new_cgroupns,
            loopback_up: parts.loopback_up,
            hostname: parts.hostname,
            steps: parts.steps,
            keep_caps: parts.keep_caps,
            last_cap: parts.last_cap,
            uid: parts.uid,
            gid: parts.gid,
            groups: parts.groups,
            cwd: parts.cwd,
            no_new_privileges: parts.no_new_privileges,
            seccomp: parts.seccomp,
            init: parts.init,
            exec_candidates: parts.exec_candidates,
            _argv_owned: argv_owned,
            _envp_owned: envp_owned,
            argv,
            envp,
        })
    }
}

/// The PATH lookup of `cmd`, as a list of candidates for the child to try in order (the
/// files live in the container, which the parent cannot see yet in its final shape).
pub(crate) fn exec_candidates(cmd: &str, path_var: &str) -> Result<Vec<CString>> {
    if cmd.contains('/') {
        return Ok(vec![cstring(cmd)?]);
    }
    path_var
        .split(':')
        .map(|dir| {
            let dir = if dir.is_empty() { "." } else { dir };
            cstring(&format!("{}/{cmd}", dir.trim_end_matches('/')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_record_round_trips() {
        let e = ChildError {
            stage: Stage::Exec as u32,
            index: 7,
            errno: libc::ENOENT,
        };
        let back = ChildError::from_bytes(&e.to_bytes());
        assert_eq!(
            (back.stage, back.index, back.errno),
            (e.stage, 7, libc::ENOENT)
        );
        assert_eq!(Stage::from_u32(back.stage), Some(Stage::Exec));
        assert_eq!(Stage::from_u32(99), None);
    }

    #[test]
    fn path_lookup_candidates() {
        let c = exec_candidates("ls", "/usr/bin:/bin/:").unwrap();
        let c: Vec<_> = c.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(c, ["/usr/bin/ls", "/bin/ls", "./ls"]);
        let direct = exec_candidates("/bin/sh", "/x").unwrap();
        assert_eq!(direct[0].to_str().unwrap(), "/bin/sh");
    }
}
