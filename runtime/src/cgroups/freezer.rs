//! Freezing a container's processes (`docker pause`): `cgroup.freeze` in the container's v2
//! cgroup, or the v1 freezer controller. Strata does not create v1 freezer cgroups at start,
//! so the first pause makes one at the container's relative path in the freezer hierarchy and
//! moves the container's processes into it (their children are born there); `remove_v1`
//! deletes it once the container has ended.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strata_core::{Error, IoContext, Result};

use super::files;
use super::{Cgroup, CgroupVersion, Layout};

const SETTLE: Duration = Duration::from_secs(5);

/// Freezes every process of the container and waits until the kernel reports them frozen.
pub fn freeze(cg: &Cgroup) -> Result<()> {
    match cg.version() {
        CgroupVersion::V2 => {
            let dir = v2_dir(cg)?;
            files::write(dir, "cgroup.freeze", "1")?;
            wait_for(|| {
                Ok(files::keyed_value(&files::read(dir, "cgroup.events")?, "frozen") == Some(1))
            })
        }
        CgroupVersion::V1 => {
            let dir = v1_dir(cg)?;
            std::fs::create_dir_all(&dir).ctx("create freezer cgroup", &dir)?;
            // Twice: a process forked while the first pass ran is caught by the second.
            for _ in 0..2 {
                for pid in cg.processes()? {
                    // A process that exited meanwhile cannot be moved; that is fine.
                    let _ = files::write(&dir, "cgroup.procs", &pid.to_string());
                }
            }
            wait_for(|| {
                files::write(&dir, "freezer.state", "FROZEN")?;
                Ok(files::read(&dir, "freezer.state")?.trim() == "FROZEN")
            })
        }
    }
}

/// Lets the container's processes run again.
pub fn thaw(cg: &Cgroup) -> Result<()> {
    match cg.version() {
        CgroupVersion::V2 => {
            let dir = v2_dir(cg)?;
            files::write(dir, "cgroup.freeze", "0")?;
            wait_for(|| {
                Ok(files::keyed_value(&files::read(dir, "cgroup.events")?, "frozen") == Some(0))
            })
        }
        CgroupVersion::V1 => {
            let dir = v1_dir(cg)?;
            if !dir.exists() {
                return Ok(());
            }
            wait_for(|| {
                files::write(&dir, "freezer.state", "THAWED")?;
                Ok(files::read(&dir, "freezer.state")?.trim() == "THAWED")
            })
        }
    }
}

/// Removes the v1 freezer cgroup made by `freeze` (no-op on v2 or when none was made).
pub fn remove_v1(cg: &Cgroup) -> Result<()> {
    if cg.version() != CgroupVersion::V1 {
        return Ok(());
    }
    let dir = v1_dir(cg)?;
    match std::fs::remove_dir(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove freezer cgroup", &dir, e))
        }
        _ => Ok(()),
    }
}

fn v2_dir(cg: &Cgroup) -> Result<&Path> {
    cg.dir("memory")
        .ok_or_else(|| Error::Other("the container has no cgroup directory".into()))
}

/// The container's directory in the v1 freezer hierarchy: its path relative to the memory
/// hierarchy's root, under the freezer's.
fn v1_dir(cg: &Cgroup) -> Result<PathBuf> {
    let Layout::V1(mounts) = Layout::detect()? else {
        return Err(Error::Other(
            "cgroup layout changed under the daemon".into(),
        ));
    };
    let memory_root = mounts
        .get("memory")
        .ok_or_else(|| Error::unsupported("the cgroup v1 memory controller is not mounted"))?;
    let memory_dir = v2_dir(cg)?;
    let relative = memory_dir.strip_prefix(memory_root).map_err(|_| {
        Error::Other(format!(
            "{} is not under {}",
            memory_dir.display(),
            memory_root.display()
        ))
    })?;
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(path).ctx("read", path)?;
    let freezer_root = freezer_mount(&text).ok_or_else(|| {
        Error::unsupported("pausing needs the cgroup v1 freezer controller, which is not mounted")
    })?;
    Ok(freezer_root.join(relative))
}

/// The mount point of the v1 hierarchy carrying `freezer`, from a mountinfo text.
fn freezer_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut right = right.split(' ');
        (right.next() == Some("cgroup")).then_some(())?;
        let opts = right.nth(1)?;
        opts.split(',')
            .any(|o| o == "freezer")
            .then(|| left.split(' ').nth(4).map(PathBuf::from))?
    })
}

fn wait_for(mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + SETTLE;
    loop {
        if done()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Other(
                "the container's processes did not change freezer state in time".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};

    /// A `sleep` in `cg`, killed and reaped on drop.
    struct Sleeper(Child);

    impl Sleeper {
        fn start_in(cg: &Cgroup) -> Sleeper {
            let child = Command::new("sleep").arg("100").spawn().unwrap();
            let s = Sleeper(child);
            cg.add_process(s.0.id() as i32).unwrap();
            s
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// Thaws and removes a test cgroup on drop, also when an assertion failed.
    struct TestCgroup(Cgroup);

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            let _ = thaw(&self.0);
            let _ = remove_v1(&self.0);
            let _ = self.0.remove();
        }
    }

    fn unique(tag: &str) -> String {
        format!("freeze-{tag}-{}", std::process::id())
    }

    /// Guards `docker pause` on cgroup v1: the freezer cgroup is made at the container's
    /// relative path, takes its processes, reaches FROZEN and THAWED, and is removed after.
    #[test]
    fn v1_freezer_freezes_and_thaws() {
        let layout = Layout::detect().unwrap();
        assert_eq!(
            layout.version(),
            CgroupVersion::V1,
            "this test needs the cgroup v1 hierarchy the project's machines have"
        );
        let guard = TestCgroup(
            Cgroup::create(&layout, "strata-test", &unique("v1"), &Default::default()).unwrap(),
        );
        let cg = &guard.0;
        let sleeper = Sleeper::start_in(cg);
        freeze(cg).unwrap();
        let dir = v1_dir(cg).unwrap();
        assert_eq!(files::read(&dir, "freezer.state").unwrap().trim(), "FROZEN");
        assert!(files::read_pids(&dir)
            .unwrap()
            .contains(&(sleeper.0.id() as i32)));
        thaw(cg).unwrap();
        assert_eq!(files::read(&dir, "freezer.state").unwrap().trim(), "THAWED");
        drop(sleeper);
        remove_v1(cg).unwrap();
        assert!(!dir.exists());
    }

    /// Guards `docker pause` on cgroup v2 (`cgroup.freeze`), on the host's cgroup2 mount
    /// (the unified tree of a hybrid host counts).
    #[test]
    fn v2_cgroup_freeze_freezes_and_thaws() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let root = text
            .lines()
            .find_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                right.starts_with("cgroup2 ").then_some(())?;
                left.split(' ').nth(4).map(PathBuf::from)
            })
            .expect("a cgroup2 mount (the project's machines have one)");
        let guard =
            TestCgroup(Cgroup::open(&Layout::V2(root), "strata-test", &unique("v2")).unwrap());
        let cg = &guard.0;
        let dir = cg.dir("memory").unwrap().to_path_buf();
        std::fs::create_dir_all(&dir).unwrap();
        let sleeper = Sleeper::start_in(cg);
        freeze(cg).unwrap();
        let events = files::read(&dir, "cgroup.events").unwrap();
        assert_eq!(files::keyed_value(&events, "frozen"), Some(1));
        thaw(cg).unwrap();
        let events = files::read(&dir, "cgroup.events").unwrap();
        assert_eq!(files::keyed_value(&events, "frozen"), Some(0));
        drop(sleeper);
    }

    #[test]
    fn finds_the_freezer_hierarchy() {
        let text = "\
35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
";
        assert_eq!(
            freezer_mount(text),
            Some(PathBuf::from("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(
            freezer_mount("41 31 0:38 / /x rw - cgroup2 cgroup2 rw\n"),
            None
        );
    }
}
