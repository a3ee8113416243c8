//! Where the host's cgroup controllers live: one unified (v2) tree, or one v1 hierarchy per
//! controller (possibly co-mounted, as `cpu,cpuacct` often is).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use strata_core::{Error, IoContext, Result};

/// The controllers Strata uses. v1 needs a directory in each; v2 enables them in
/// `cgroup.subtree_control` of every ancestor.
pub const CONTROLLERS: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

/// Controllers only v1 has as files: the device allowlist (v2 does it with eBPF).
pub const V1_ONLY_CONTROLLERS: [&str; 1] = ["devices"];

/// On a hybrid host (v1 controllers plus a cgroup2 tree, often at /sys/fs/cgroup/unified),
/// the v1 layout lists the cgroup2 tree under this name: containers get a directory there too,
/// so the eBPF device filter can be attached to them as on a pure v2 host.
pub const UNIFIED: &str = "unified";

/// cgroup v1 (legacy or hybrid hierarchy) or v2 (unified hierarchy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    /// As Docker prints it in `info` (`CgroupVersion`).
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The host's cgroup version: v2 when /sys/fs/cgroup itself is the unified hierarchy. A hybrid
/// host (v1 controllers plus an empty unified tree, like this one) counts as v1, as for Docker.
pub fn cgroup_version() -> CgroupVersion {
    match nix::sys::statfs::statfs("/sys/fs/cgroup") {
        Ok(st) if st.filesystem_type().0 == CGROUP2_SUPER_MAGIC => CgroupVersion::V2,
        _ => CgroupVersion::V1,
    }
}

/// The mount points a container cgroup is created under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Controller name → the root of the v1 hierarchy that carries it.
    V1(BTreeMap<String, PathBuf>),
    /// The root of the unified hierarchy.
    V2(PathBuf),
}

impl Layout {
    /// Reads the host's layout from /proc/self/mountinfo.
    pub fn detect() -> Result<Layout> {
        if cgroup_version() == CgroupVersion::V2 {
            return Ok(Layout::V2(PathBuf::from("/sys/fs/cgroup")));
        }
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).ctx("read", path)?;
        let mounts = v1_mounts(&text);
        let needed = CONTROLLERS.iter().chain(&V1_ONLY_CONTROLLERS);
        if let Some(missing) = needed.clone().find(|c| !mounts.contains_key(**c)) {
            return Err(Error::unsupported(format!(
                "the cgroup v1 controller {missing:?} is not mounted; mount it under /sys/fs/cgroup \
                 or boot with the unified hierarchy (systemd.unified_cgroup_hierarchy=1)"
            )));
        }
        Ok(Layout::V1(mounts))
    }

    pub fn version(&self) -> CgroupVersion {
        match self {
            Layout::V1(_) => CgroupVersion::V1,
            Layout::V2(_) => CgroupVersion::V2,
        }
    }
}

/// Parses the v1 cgroup mounts out of a mountinfo text: the super options after ` - cgroup X `
/// list the controllers of each hierarchy. The first mount of a controller wins. A cgroup2
/// mount is listed as [`UNIFIED`].
fn v1_mounts(mountinfo: &str) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut right = right.split(' ');
        let fstype = right.next();
        let Some(mount_point) = left.split(' ').nth(4) else {
            continue;
        };
        if fstype == Some("cgroup2") {
            out.entry(UNIFIED.to_string())
                .or_insert_with(|| PathBuf::from(mount_point));
            continue;
        }
        if fstype != Some("cgroup") {
            continue;
        }
        let super_opts = right.nth(1).unwrap_or("");
        for opt in super_opts.split(',') {
            if CONTROLLERS.contains(&opt) || V1_ONLY_CONTROLLERS.contains(&opt) {
                out.entry(opt.to_string())
                    .or_insert_with(|| PathBuf::from(mount_point));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separate_and_co_mounted_v1_controllers() {
        let text = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:10 - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
36 30 0:32 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices
34 30 0:30 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let m = v1_mounts(text);
        assert_eq!(m["cpu"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["cpuacct"], PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m["memory"], PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(m["pids"], PathBuf::from("/sys/fs/cgroup/pids"));
        assert_eq!(m["devices"], PathBuf::from("/sys/fs/cgroup/devices"));
        assert_eq!(m[UNIFIED], PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn host_layout_matches_host_version() {
        let layout = Layout::detect().unwrap();
        assert_eq!(layout.version(), cgroup_version());
    }
}
