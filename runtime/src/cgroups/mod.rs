//! Container resource limits through cgroups, v1 or v2, by writing the controller files.
//!
//! Why by hand and not youki's libcgroups or cgroups-rs: we need five controllers (memory,
//! cpu, cpuacct, pids, v1 devices), their limits and two counters (OOM kills, cpu usage). That
//! is a few dozen lines per controller. Both libraries take oci-spec's `LinuxResources` as
//! input (so we would build OCI types only to hand them over) and bring systemd/D-Bus code we
//! do not use; their value is breadth we do not need yet. Writing the files ourselves keeps
//! every write visible, each controller function takes its directory so it is unit-tested
//! against a temp dir, and every error names the exact file. The v2 device filter is a
//! hand-assembled eBPF program of a few instructions per rule (`devices_ebpf.rs`), as runc's
//! is, rather than an eBPF toolchain. If we later need the systemd driver, libcgroups is the
//! one to adopt (its `CgroupManager` shape matches this module's).
//!
//! Layout: one directory per container, `<hierarchy>/<parent>/<name>` (Docker's cgroupfs driver
//! uses parent `docker`; ours defaults to `strata`). On v1 the directory exists in every
//! hierarchy of [`CONTROLLERS`]; on v2 there is one directory and the controllers are enabled in
//! `cgroup.subtree_control` of its ancestors. One file per controller: [`memory`], [`cpu`],
//! [`pids`], [`devices`] (the v1 files) and [`devices_ebpf`] (the same rules on v2). On a hybrid
//! host the container also gets a directory in the cgroup2 tree ([`UNIFIED`]), where the eBPF
//! device filter is attached as well: both filters must allow an access.

pub mod cpu;
pub mod devices;
pub mod devices_ebpf;
mod files;
pub mod freezer;
pub mod layout;
pub mod memory;
pub mod pids;
pub mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_core::{Error, IoContext, Result};

pub use cpu::CpuLimits;
pub use devices::DeviceRule;
pub use layout::{
    cgroup_version, CgroupVersion, Layout, CONTROLLERS, UNIFIED, V1_ONLY_CONTROLLERS,
};
pub use memory::MemoryLimits;

/// The cgroup driver name `info` reports: we write cgroupfs directly, no systemd.
pub const DRIVER_NAME: &str = "cgroupfs";

/// The parent cgroup containers go under unless the daemon says otherwise.
pub const DEFAULT_PARENT: &str = "strata";

/// A container's resource limits (`docker run --memory --memory-swap --cpus --cpu-shares
/// --pids-limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub memory: MemoryLimits,
    pub cpu: CpuLimits,
    /// Maximum number of tasks; `None`, 0 or negative for no limit.
    pub pids_limit: Option<i64>,
}

impl Resources {
    pub fn validate(&self) -> Result<()> {
        self.memory.validate()?;
        self.cpu.validate()
    }
}

/// One container's cgroup (a directory per v1 hierarchy, or one v2 directory).
#[derive(Debug, Clone)]
pub struct Cgroup {
    version: CgroupVersion,
    /// Controller → its directory for this container (co-mounted controllers share one).
    dirs: BTreeMap<String, PathBuf>,
}

impl Cgroup {
    /// Creates the container's cgroup `parent/name` and applies `resources`. On failure nothing
    /// is left behind.
    pub fn create(
        layout: &Layout,
        parent: &str,
        name: &str,
        resources: &Resources,
    ) -> Result<Cgroup> {
        resources.validate()?;
        let cgroup = Cgroup::open(layout, parent, name)?;
        if let Layout::V2(root) = layout {
            enable_v2_controllers(root, &cgroup.dirs["memory"])?;
        }
        let result = cgroup.make_dirs().and_then(|()| cgroup.apply(resources));
        if let Err(e) = result {
            if let Err(cleanup) = cgroup.remove() {
                tracing::warn!("removing half-made cgroup {name}: {cleanup}");
            }
            return Err(e);
        }
        Ok(cgroup)
    }

    /// The handle of an existing cgroup `parent/name` (after a daemon restart), without
    /// creating anything.
    pub fn open(layout: &Layout, parent: &str, name: &str) -> Result<Cgroup> {
        let relative = relative_path(parent, name)?;
        let dirs = match layout {
            Layout::V1(mounts) => {
                let mut dirs: BTreeMap<String, PathBuf> = CONTROLLERS
                    .iter()
                    .chain(&V1_ONLY_CONTROLLERS)
                    .map(|c| {
                        let root = mounts.get(*c).ok_or_else(|| {
                            Error::unsupported(format!("cgroup v1 controller {c} is not mounted"))
                        })?;
                        Ok((c.to_string(), root.join(&relative)))
                    })
                    .collect::<Result<_>>()?;
                if let Some(unified) = mounts.get(UNIFIED) {
                    dirs.insert(UNIFIED.to_string(), unified.join(&relative));
                }
                dirs
            }
            Layout::V2(root) => CONTROLLERS
                .iter()
                .map(|c| (c.to_string(), root.join(&relative)))
                .collect(),
        };
        Ok(Cgroup {
            version: layout.version(),
            dirs,
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The directory of one controller (for v2, the one directory).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.get(controller).map(PathBuf::as_path)
    }

    /// Each distinct directory once (co-mounted v1 controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = self.dirs.values().map(PathBuf::as_path).collect();
        out.sort();
        out.dedup();
        out
    }

    fn make_dirs(&self) -> Result<()> {
        for dir in self.unique_dirs() {
            std::fs::create_dir_all(dir).ctx("create cgroup", dir)?;
        }
        Ok(())
    }

    /// The cgroup2 directory that takes the eBPF device filter: the one directory on v2, the
    /// [`UNIFIED`] one on a hybrid host.
    pub fn unified_dir(&self) -> Option<&Path> {
        match self.version {
            CgroupVersion::V2 => self.dir("memory"),
            CgroupVersion::V1 => self.dir(UNIFIED),
        }
    }

    /// Replaces the device allowlist (created with Docker's defaults) by `rules`: the v1
    /// devices files and, where there is a cgroup2 directory, an eBPF program attached to it.
    /// On a hybrid host a failed eBPF attach is only a warning (the v1 controller enforces the
    /// same rules); on v2 it is the only filter, so it is an error.
    pub fn restrict_devices(&self, rules: &[DeviceRule]) -> Result<()> {
        if let Some(dir) = self.dirs.get("devices") {
            devices::apply_v1(dir, rules)?;
        }
        let Some(dir) = self.unified_dir() else {
            return Ok(());
        };
        match devices_ebpf::attach(dir, rules) {
            Err(e) if self.version == CgroupVersion::V1 => {
                tracing::warn!("device filter not attached in the cgroup2 tree: {e}");
                Ok(())
            }
            r => r,
        }
    }

    /// New limits for a running container (`docker update`).
    pub fn update(&self, r: &Resources) -> Result<()> {
        r.validate()?;
        memory::apply(self.version, &self.dirs["memory"], &r.memory)?;
        cpu::apply(self.version, &self.dirs["cpu"], &r.cpu)?;
        pids::apply(&self.dirs["pids"], r.pids_limit)
    }

    fn apply(&self, r: &Resources) -> Result<()> {
        if let Some(dir) = self.dirs.get("devices") {
            devices::apply_v1(dir, &devices::default_rules())?;
        }
        memory::apply(self.version, &self.dirs["memory"], &r.memory)?;
        cpu::apply(self.version, &self.dirs["cpu"], &r.cpu)?;
        pids::apply(&self.dirs["pids"], r.pids_limit)
    }

    /// Moves a process (and so its future children) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        for dir in self.unique_dirs() {
            files::write(dir, "cgroup.procs", &pid.to_string())?;
        }
        Ok(())
    }

    /// Did the OOM killer kill a process of this container?
    pub fn oom_killed(&self) -> Result<bool> {
        Ok(memory::oom_kills(self.version, &self.dirs["memory"])? > 0)
    }

    /// CPU time used by the container's processes so far.
    pub fn cpu_usage(&self) -> Result<Duration> {
        cpu::usage(self.version, &self.dirs["cpuacct"])
    }

    /// Number of tasks in the container now (`pids.current`).
    pub fn pids_current(&self) -> Result<u64> {
        pids::current(&self.dirs["pids"])
    }

    /// The processes in the cgroup now.
    pub fn processes(&self) -> Result<Vec<i32>> {
        files::read_pids(&self.dirs["pids"])
    }

    /// Removes the cgroup. Processes still in it (stragglers of a pid namespace being torn down)
    /// get SIGKILL; a cgroup that is already gone is not an error.
    pub fn remove(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in self.unique_dirs() {
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e)
                        if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline =>
                    {
                        for pid in files::read_pids(dir).unwrap_or_default() {
                            // The pid is in our container's cgroup, so it is one of its processes.
                            let _ = nix::sys::signal::kill(
                                nix::unistd::Pid::from_raw(pid),
                                nix::sys::signal::Signal::SIGKILL,
                            );
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(Error::io("remove cgroup", dir, e)),
                }
            }
        }
        Ok(())
    }
}

/// `parent/name` checked to stay inside the hierarchy (no `..`, no absolute parts).
fn relative_path(parent: &str, name: &str) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for part in parent.split('/').filter(|p| !p.is_empty()).chain([name]) {
        if part == "." || part == ".." || part.contains('\0') || part.is_empty() {
            return Err(Error::invalid(format!(
                "cgroup path {parent:?}/{name:?} must be plain names without '..'"
            )));
        }
        out.push(part);
    }
    if name.contains('/') || name.is_empty() {
        return Err(Error::invalid(format!(
            "cgroup name {name:?} must be one path component"
        )));
    }
    Ok(out)
}

/// v2 only hands a controller to a child directory when every ancestor lists it in
/// `cgroup.subtree_control`. Enables ours from the root down to the container's parent.
fn enable_v2_controllers(root: &Path, container_dir: &Path) -> Result<()> {
    let available = files::read(root, "cgroup.controllers").unwrap_or_default();
    let wanted: Vec<&str> = ["memory", "cpu", "pids"]
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    if wanted.len() < 3 {
        return Err(Error::unsupported(format!(
            "the cgroup v2 root {} offers controllers [{}]; memory, cpu and pids are needed \
             (are they still bound to a v1 hierarchy?)",
            root.display(),
            available.trim()
        )));
    }
    let enable: String = wanted.iter().map(|c| format!("+{c} ")).collect();
    let mut dir = root.to_path_buf();
    let Ok(below) = container_dir.strip_prefix(root) else {
        return Err(Error::invalid("container cgroup is outside the hierarchy"));
    };
    let parents: Vec<_> = below.components().collect();
    for (i, part) in parents.iter().enumerate() {
        files::write(&dir, "cgroup.subtree_control", enable.trim_end())?;
        if i + 1 == parents.len() {
            break;
        }
        dir.push(part);
        std::fs::create_dir_all(&dir).ctx("create cgroup", &dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(dir: &Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f)).unwrap()
    }

    #[test]
    fn names_cannot_escape_the_hierarchy() {
        assert!(relative_path("strata", "..").is_err());
        assert!(relative_path("../x", "abc").is_err());
        assert!(relative_path("strata", "a/b").is_err());
        assert_eq!(
            relative_path("/strata/", "c1").unwrap(),
            PathBuf::from("strata/c1")
        );
    }

    #[test]
    fn v1_layout_writes_each_controller_in_its_hierarchy() {
        let tmp = tempfile::tempdir().unwrap();
        let mut mounts = BTreeMap::new();
        for c in ["memory", "pids", "devices"] {
            mounts.insert(c.to_string(), tmp.path().join(c));
        }
        // cpu and cpuacct co-mounted, as on many hosts.
        mounts.insert("cpu".into(), tmp.path().join("cpu,cpuacct"));
        mounts.insert("cpuacct".into(), tmp.path().join("cpu,cpuacct"));
        for d in mounts.values() {
            std::fs::create_dir_all(d.join("strata/c1")).unwrap();
        }
        std::fs::write(
            tmp.path()
                .join("memory/strata/c1/memory.memsw.limit_in_bytes"),
            "",
        )
        .unwrap();
        let res = Resources {
            memory: MemoryLimits {
                memory: Some(64 << 20),
                memory_swap: Some(64 << 20),
            },
            cpu: CpuLimits::from_nano_cpus(500_000_000),
            pids_limit: Some(10),
        };
        let cg = Cgroup::open(&Layout::V1(mounts), "strata", "c1").unwrap();
        cg.make_dirs().unwrap();
        cg.apply(&res).unwrap();
        assert_eq!(cg.unique_dirs().len(), 4);
        let devices = tmp.path().join("devices/strata/c1");
        assert_eq!(read(&devices, "devices.deny"), "a");
        let mem = tmp.path().join("memory/strata/c1");
        assert_eq!(read(&mem, "memory.limit_in_bytes"), (64 << 20).to_string());
        assert_eq!(
            read(&mem, "memory.memsw.limit_in_bytes"),
            (64 << 20).to_string()
        );
        let cpu = tmp.path().join("cpu,cpuacct/strata/c1");
        assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
        assert_eq!(read(&tmp.path().join("pids/strata/c1"), "pids.max"), "10");
        cg.add_process(4242).unwrap();
        assert_eq!(read(&cpu, "cgroup.procs"), "4242");
    }

    #[test]
    fn v2_layout_enables_controllers_down_to_the_parent() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let layout = Layout::V2(tmp.path().to_path_buf());
        let res = Resources {
            memory: MemoryLimits {
                memory: Some(32 << 20),
                memory_swap: None,
            },
            cpu: CpuLimits::from_nano_cpus(250_000_000),
            pids_limit: Some(50),
        };
        let cg = Cgroup::open(&layout, "strata/nested", "c2").unwrap();
        enable_v2_controllers(tmp.path(), cg.dir("memory").unwrap()).unwrap();
        cg.make_dirs().unwrap();
        cg.apply(&res).unwrap();
        for d in ["", "strata", "strata/nested"] {
            assert_eq!(
                read(&tmp.path().join(d), "cgroup.subtree_control"),
                "+memory +cpu +pids"
            );
        }
        let dir = tmp.path().join("strata/nested/c2");
        assert!(!dir.join("cgroup.subtree_control").exists());
        assert_eq!(read(&dir, "memory.max"), (32 << 20).to_string());
        assert_eq!(read(&dir, "memory.swap.max"), (32 << 20).to_string());
        assert_eq!(read(&dir, "cpu.max"), "25000 100000");
        assert_eq!(read(&dir, "pids.max"), "50");
    }

    #[test]
    fn v2_without_controllers_is_refused_with_a_reason() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("cgroup.controllers"), "\n").unwrap();
        let err = enable_v2_controllers(tmp.path(), &tmp.path().join("strata/c")).unwrap_err();
        assert!(
            err.to_string().contains("memory, cpu and pids are needed"),
            "{err}"
        );
    }
}
