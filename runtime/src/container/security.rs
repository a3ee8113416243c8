//! A container's security settings (`--privileged`, `--cap-add/--cap-drop`, `--security-opt`,
//! `--device`, `--device-cgroup-rule`) and what they become before the clone: the capability
//! mask, the seccomp program, the device allowlist and the device nodes to create in /dev.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_core::{Error, IoContext, Result};

use super::caps;
use super::plan::{cpath, cstring, Step};
use super::seccomp::{self, SeccompMode};
use crate::cgroups::devices::{self, DeviceKind, DeviceRule};

/// Docker's masked paths (moby `oci/defaults.go`, plus powercap from later releases).
const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The security half of a [`super::ContainerSpec`]; the default is Docker's default container.
#[derive(Debug, Clone, Default)]
pub struct SecuritySpec {
    /// All capabilities, all devices (the host's /dev nodes created in the container's /dev),
    /// no seccomp, no masked or read-only paths, /sys writable.
    pub privileged: bool,
    /// Capability names, any case, with or without `CAP_`, or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub seccomp: SeccompMode,
    /// `--security-opt systempaths=unconfined`: no masked or read-only paths.
    pub unconfined_paths: bool,
    /// `--device`: host device nodes made in the container's /dev and allowed.
    pub devices: Vec<DeviceMapping>,
    /// `--device-cgroup-rule`: extra allow rules.
    pub device_rules: Vec<DeviceRule>,
}

/// One `--device HOST[:CONTAINER[:PERMS]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMapping {
    pub host_path: PathBuf,
    /// Under /dev (the container's own tmpfs); empty means the host path.
    pub container_path: String,
    /// [`devices::access`] bits.
    pub access: u32,
}

/// A device node to create in the container's /dev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceNode {
    /// Relative to /dev.
    pub relative: PathBuf,
    pub kind: DeviceKind,
    pub rdev: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// What the parent computed for the child and the cgroup.
pub(crate) struct Prepared {
    pub caps: u64,
    pub seccomp: Option<Vec<libc::sock_filter>>,
    pub device_rules: Vec<DeviceRule>,
    pub nodes: Vec<DeviceNode>,
}

impl SecuritySpec {
    /// Checks names and profiles (unknown capabilities, bad profiles, bad device paths).
    pub fn validate(&self) -> Result<()> {
        caps::tweak(&self.cap_add, &self.cap_drop, self.privileged)?;
        for d in &self.devices {
            container_dev_path(d)?;
        }
        if !self.privileged {
            seccomp::validate(&self.seccomp)?;
        }
        Ok(())
    }

    /// Docker's masked and read-only paths apply.
    pub(crate) fn confined_paths(&self) -> bool {
        !self.privileged && !self.unconfined_paths
    }

    /// The child's steps (after pivot_root) that mask and make read-only Docker's paths.
    pub(crate) fn path_steps(&self) -> Result<Vec<Step>> {
        if !self.confined_paths() {
            return Ok(Vec::new());
        }
        let masks = MASKED_PATHS
            .iter()
            .map(|p| Ok(Step::Mask { path: cstring(p)? }));
        let read_only = READONLY_PATHS
            .iter()
            .map(|p| Ok(Step::ReadOnlyPath { path: cstring(p)? }));
        masks.chain(read_only).collect()
    }

    pub(crate) fn prepare(&self) -> Result<Prepared> {
        let caps = caps::tweak(&self.cap_add, &self.cap_drop, self.privileged)?;
        let seccomp = if self.privileged {
            None
        } else {
            seccomp::program(&self.seccomp, caps)?
        };
        let mut device_rules = devices::default_rules();
        let mut nodes = Vec::new();
        if self.privileged {
            device_rules = vec![DeviceRule::ALLOW_ALL];
            host_devices(Path::new("/dev"), Path::new(""), &mut nodes)?;
        }
        for d in &self.devices {
            let node = device_node(d)?;
            device_rules.push(DeviceRule {
                kind: node.kind,
                major: Some(nix::sys::stat::major(node.rdev) as u32),
                minor: Some(nix::sys::stat::minor(node.rdev) as u32),
                access: d.access,
            });
            nodes.retain(|n| n.relative != node.relative);
            nodes.push(node);
        }
        device_rules.extend(self.device_rules.iter().copied());
        Ok(Prepared {
            caps,
            seccomp,
            device_rules,
            nodes,
        })
    }
}

/// The container path of a `--device`, relative to /dev. Only /dev (our own tmpfs, no image
/// content) may take device nodes, so the path cannot lead into the image.
fn container_dev_path(d: &DeviceMapping) -> Result<PathBuf> {
    let path = if d.container_path.is_empty() {
        d.host_path.to_string_lossy().into_owned()
    } else {
        d.container_path.clone()
    };
    let bad = || {
        Error::invalid(format!(
            "device {path:?}: the path in the container must be under /dev, without '..'"
        ))
    };
    let below = path.strip_prefix("/dev/").ok_or_else(bad)?;
    let parts: Vec<&str> = below.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|p| *p == ".." || *p == ".") || path.contains('\0') {
        return Err(bad());
    }
    Ok(parts.iter().collect())
}

fn node_of(meta: &std::fs::Metadata) -> Option<(DeviceKind, u32)> {
    let ft = meta.file_type();
    if ft.is_char_device() {
        Some((DeviceKind::Char, libc::S_IFCHR))
    } else if ft.is_block_device() {
        Some((DeviceKind::Block, libc::S_IFBLK))
    } else {
        None
    }
}

fn device_node(d: &DeviceMapping) -> Result<DeviceNode> {
    let meta = std::fs::metadata(&d.host_path).ctx("stat device", &d.host_path)?;
    let (kind, _) = node_of(&meta).ok_or_else(|| {
        Error::invalid(format!(
            "error gathering device information while adding device {:?}: not a device node",
            d.host_path
        ))
    })?;
    Ok(DeviceNode {
        relative: container_dev_path(d)?,
        kind,
        rdev: meta.rdev(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// The host's device nodes below `dir`, as Docker's `HostDevices` lists them for a privileged
/// container (without pts, shm, mqueue and the nodes every container gets anyway).
fn host_devices(dir: &Path, relative: &Path, out: &mut Vec<DeviceNode>) -> Result<()> {
    const SKIP: [&str; 16] = [
        "pts", "shm", "mqueue", "fd", ".lxc", ".udev", "console", "ptmx", "null", "zero", "full",
        "random", "urandom", "tty", "core", "stdin",
    ];
    for entry in std::fs::read_dir(dir).ctx("read", dir)? {
        let entry = entry.ctx("read", dir)?;
        let name = entry.file_name();
        if SKIP.iter().any(|s| name == *s) {
            continue;
        }
        let meta = entry.metadata().ctx("stat", entry.path())?;
        let rel = relative.join(&name);
        if meta.is_dir() {
            host_devices(&entry.path(), &rel, out)?;
        } else if let Some((kind, _)) = node_of(&meta) {
            out.push(DeviceNode {
                relative: rel,
                kind,
                rdev: meta.rdev(),
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
            });
        }
    }
    Ok(())
}

/// The child's steps that create `nodes` under `dev` (the container's /dev tmpfs, before
/// pivot_root), parent directories first.
pub(crate) fn node_steps(dev: &Path, nodes: &[DeviceNode]) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for node in nodes {
        let mut dir = dev.to_path_buf();
        if let Some(parent) = node.relative.parent() {
            for part in parent.components() {
                dir.push(part);
                steps.push(Step::Mkdir {
                    path: cpath(&dir)?,
                    mode: 0o755,
                });
            }
        }
        let type_bits = match node.kind {
            DeviceKind::Block => libc::S_IFBLK,
            _ => libc::S_IFCHR,
        };
        steps.push(Step::Mknod {
            path: cpath(&dev.join(&node.relative))?,
            mode: type_bits | node.mode,
            rdev: node.rdev,
            uid: node.uid,
            gid: node.gid,
        });
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(host: &str, ctr: &str) -> DeviceMapping {
        DeviceMapping {
            host_path: host.into(),
            container_path: ctr.into(),
            access: devices::access::ALL,
        }
    }

    #[test]
    fn device_paths_stay_in_dev() {
        assert_eq!(
            container_dev_path(&mapping("/dev/null", "")).unwrap(),
            PathBuf::from("null")
        );
        assert_eq!(
            container_dev_path(&mapping("/dev/null", "/dev/sub/n")).unwrap(),
            PathBuf::from("sub/n")
        );
        for bad in ["/etc/passwd", "/dev/../etc/x", "/dev/", "relative"] {
            assert!(
                container_dev_path(&mapping("/dev/null", bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn device_mapping_allows_the_node_and_creates_it() {
        let spec = SecuritySpec {
            devices: vec![mapping("/dev/null", "/dev/xnull")],
            ..Default::default()
        };
        let p = spec.prepare().unwrap();
        assert_eq!(p.caps, caps::default_mask());
        assert!(p.seccomp.is_some());
        assert_eq!(p.nodes.len(), 1);
        assert_eq!(p.nodes[0].relative, PathBuf::from("xnull"));
        assert!(p.device_rules.contains(&"c 1:3 rwm".parse().unwrap()));
        let not_a_device = SecuritySpec {
            devices: vec![mapping("/etc/hostname", "/dev/h")],
            ..Default::default()
        };
        assert!(not_a_device.prepare().is_err());
    }

    #[test]
    fn privileged_gets_everything_and_no_filter() {
        let spec = SecuritySpec {
            privileged: true,
            ..Default::default()
        };
        let p = spec.prepare().unwrap();
        assert_eq!(p.caps, caps::all_mask());
        assert!(p.seccomp.is_none());
        assert_eq!(p.device_rules, [DeviceRule::ALLOW_ALL]);
        assert!(!spec.confined_paths());
    }
}
