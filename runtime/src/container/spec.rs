//! What the daemon asks for when it starts a container.

use std::path::PathBuf;

use strata_core::{Error, Result};

use super::security::SecuritySpec;
use crate::cgroups::Resources;

/// Docker's default PATH inside a container whose image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one container process.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// Container id: names the cgroup and the log file (`<id>-json.log`).
    pub id: String,
    /// The root filesystem: the storage driver's mount of the container's rw layer.
    pub rootfs: PathBuf,
    /// Where the container's own files live: hostname, hosts, resolv.conf, state, json log.
    pub container_dir: PathBuf,
    /// The command: `args[0]` is looked up in the container's PATH when it has no `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` pairs; PATH, HOSTNAME and HOME are added when missing.
    pub env: Vec<String>,
    /// Working directory inside the container (created when missing); empty means `/`.
    pub cwd: String,
    /// `uid[:gid]` or `name[:group]` from the image's /etc/passwd and /etc/group; empty is root.
    pub user: String,
    /// `--group-add`: more supplementary groups, by name (the image's /etc/group) or number.
    pub group_add: Vec<String>,
    pub hostname: String,
    /// Extra lines for /etc/hosts (`--add-host`), `ip\tname` each.
    pub extra_hosts: Vec<String>,
    /// Allocate a pseudo-terminal (`-t`).
    pub tty: bool,
    /// Initial terminal size `(rows, columns)` with `tty` (Docker's `ConsoleSize`).
    pub console_size: Option<(u16, u16)>,
    /// Keep stdin open for the caller to write (`-i`); otherwise stdin is /dev/null.
    pub stdin: bool,
    /// Mount the root filesystem read-only (`--read-only`).
    pub read_only_rootfs: bool,
    pub network: Network,
    pub mounts: Vec<MountSpec>,
    pub resources: Resources,
    /// Set no_new_privs so setuid binaries and file capabilities cannot raise privileges.
    /// On by default here; Docker sets it only with `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// Capabilities, seccomp, devices, `--privileged` (Docker's defaults by default).
    pub security: SecuritySpec,
    /// Run a tiny init as PID 1 that reaps zombies and forwards signals (`--init`).
    pub init: bool,
    /// The parent cgroup (Docker's `--cgroup-parent`); [`crate::cgroups::DEFAULT_PARENT`] by default.
    pub cgroup_parent: String,
}

impl ContainerSpec {
    /// A spec with Docker's defaults: root user, network none, no limits, no mounts.
    pub fn new(
        id: impl Into<String>,
        rootfs: PathBuf,
        container_dir: PathBuf,
        args: Vec<String>,
    ) -> Self {
        let id = id.into();
        ContainerSpec {
            hostname: id.chars().take(12).collect(),
            id,
            rootfs,
            container_dir,
            args,
            env: Vec::new(),
            cwd: String::new(),
            user: String::new(),
            group_add: Vec::new(),
            extra_hosts: Vec::new(),
            tty: false,
            console_size: None,
            stdin: false,
            read_only_rootfs: false,
            network: Network::None,
            mounts: Vec::new(),
            resources: Resources::default(),
            no_new_privileges: true,
            security: SecuritySpec::default(),
            init: false,
            cgroup_parent: crate::cgroups::DEFAULT_PARENT.to_string(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 128
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
            && !self.id.starts_with('.');
        if !id_ok {
            return Err(Error::invalid(format!(
                "container id {:?} must be 1-128 letters, digits, '_', '-' or '.'",
                self.id
            )));
        }
        if self.args.is_empty() || self.args[0].is_empty() {
            return Err(Error::invalid("no command specified"));
        }
        if self.hostname.len() > 64 || self.hostname.contains(['/', '\0', ' ']) {
            return Err(Error::invalid(format!(
                "invalid hostname {:?}",
                self.hostname
            )));
        }
        if !self.cwd.is_empty() && !self.cwd.starts_with('/') {
            return Err(Error::invalid(format!(
                "the working directory {:?} is invalid, it needs to be an absolute path",
                self.cwd
            )));
        }
        for e in &self.env {
            if !e.contains('=') || e.starts_with('=') {
                return Err(Error::invalid(format!(
                    "environment entry {e:?} is not KEY=VALUE"
                )));
            }
        }
        let any_nul = self
            .args
            .iter()
            .chain(&self.env)
            .chain([&self.cwd, &self.user, &self.hostname])
            .any(|s| s.contains('\0'));
        if any_nul {
            return Err(Error::invalid(
                "command, environment and user cannot contain NUL bytes",
            ));
        }
        for m in &self.mounts {
            m.validate()?;
        }
        self.security.validate()?;
        self.resources.validate()
    }
}

/// The container's network namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// A new network namespace with only loopback, up (`--network none`).
    #[default]
    None,
    /// The host's network namespace (`--network host`).
    Host,
}

/// What kind of mount a [`MountSpec`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountKind {
    /// A host path (`-v /host:/ctr`, `--mount type=bind`).
    Bind,
    /// A fresh tmpfs (`--tmpfs`, `--mount type=tmpfs`).
    Tmpfs,
    /// A named volume; `source` is the host path the volume driver gave for it.
    Volume,
}

/// Mount propagation of a bind mount (`bind-propagation=`); Docker's default is rprivate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    RPrivate,
    Private,
    RShared,
    Shared,
    RSlave,
    Slave,
}

impl Propagation {
    pub(crate) fn flags(self) -> libc::c_ulong {
        match self {
            Propagation::RPrivate => libc::MS_PRIVATE | libc::MS_REC,
            Propagation::Private => libc::MS_PRIVATE,
            Propagation::RShared => libc::MS_SHARED | libc::MS_REC,
            Propagation::Shared => libc::MS_SHARED,
            Propagation::RSlave => libc::MS_SLAVE | libc::MS_REC,
            Propagation::Slave => libc::MS_SLAVE,
        }
    }
}

/// One mount into the container.
#[derive(Debug, Clone)]
pub struct MountSpec {
    pub kind: MountKind,
    /// Host path for bind and volume; ignored for tmpfs.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: String,
    pub read_only: bool,
    /// tmpfs size in bytes; `None` for the kernel default (half of RAM).
    pub tmpfs_size: Option<u64>,
    /// tmpfs root mode; `None` for 1777 as Docker.
    pub tmpfs_mode: Option<u32>,
    pub propagation: Propagation,
}

impl MountSpec {
    pub fn bind(source: impl Into<PathBuf>, target: impl Into<String>, read_only: bool) -> Self {
        MountSpec {
            kind: MountKind::Bind,
            source: source.into(),
            target: target.into(),
            read_only,
            tmpfs_size: None,
            tmpfs_mode: None,
            propagation: Propagation::RPrivate,
        }
    }

    pub fn tmpfs(target: impl Into<String>, size: Option<u64>, mode: Option<u32>) -> Self {
        MountSpec {
            kind: MountKind::Tmpfs,
            source: PathBuf::new(),
            target: target.into(),
            read_only: false,
            tmpfs_size: size,
            tmpfs_mode: mode,
            propagation: Propagation::RPrivate,
        }
    }

    pub fn volume(
        host_path: impl Into<PathBuf>,
        target: impl Into<String>,
        read_only: bool,
    ) -> Self {
        MountSpec {
            kind: MountKind::Volume,
            ..MountSpec::bind(host_path, target, read_only)
        }
    }

    fn validate(&self) -> Result<()> {
        if !self.target.starts_with('/') || self.target == "/" {
            return Err(Error::invalid(format!(
                "invalid mount target {:?}: it must be an absolute path other than /",
                self.target
            )));
        }
        if self.target.split('/').any(|p| p == "..") || self.target.contains('\0') {
            return Err(Error::invalid(format!(
                "invalid mount target {:?}",
                self.target
            )));
        }
        if self.kind != MountKind::Tmpfs && !self.source.is_absolute() {
            return Err(Error::invalid(format!(
                "invalid mount source {:?}: it must be an absolute host path",
                self.source
            )));
        }
        if self.tmpfs_mode.is_some_and(|m| m > 0o7777) {
            return Err(Error::invalid(
                "tmpfs mode must be an octal permission (at most 07777)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec::new("abc123", "/r".into(), "/d".into(), vec!["sh".into()])
    }

    #[test]
    fn defaults_are_dockers() {
        let s = spec();
        assert_eq!(s.network, Network::None);
        assert_eq!(s.hostname, "abc123");
        assert!(s.validate().is_ok());
    }

    #[test]
    fn bad_input_is_refused() {
        let mut s = spec();
        s.id = "../x".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.args.clear();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.cwd = "relative".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.mounts
            .push(MountSpec::bind("/tmp", "/a/../../etc", false));
        assert!(s.validate().is_err());
        let mut s = spec();
        s.mounts.push(MountSpec::bind("relative", "/a", false));
        assert!(s.validate().is_err());
        let mut s = spec();
        s.env.push("NOEQUALS".into());
        assert!(s.validate().is_err());
    }
}
