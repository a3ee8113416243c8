//! Shared helpers for the container tests: a busybox rootfs in a temp dir, specs, running a
//! container to its end and reading its log. Needs root. Cleans up in Drop, also on failure.

#![allow(dead_code)]

pub mod stratad;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use futures::StreamExt;
use strata_runtime::cgroups::{Cgroup, Layout};
use strata_runtime::container::logs::{read_logs, LogReadOptions};
use strata_runtime::container::{
    self, ContainerSpec, ExitStatus, RunningContainer, StartError, StreamKind,
};

pub const FIXTURE: &str = "/work/shared/fixtures/bb-rootfs.tar";
pub const CGROUP_PARENT: &str = "strata-test";

/// A container's rootfs and directory under a temp dir; removes its cgroup and checks for
/// leftover mounts when dropped.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub dir: PathBuf,
    pub id: String,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        assert!(
            nix::unistd::geteuid().is_root(),
            "container tests need root"
        );
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let tmp = tempfile::Builder::new()
            .prefix("strata-ctr-")
            .tempdir()
            .unwrap();
        let rootfs = tmp.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(FIXTURE)
            .arg("-C")
            .arg(&rootfs)
            .status()
            .expect("run tar");
        assert!(status.success(), "extracting {FIXTURE} failed");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "t{}x{}x{:x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst),
            nanos
        );
        let dir = tmp.path().join("container");
        Sandbox {
            tmp,
            rootfs,
            dir,
            id,
        }
    }

    pub fn spec(&self, args: &[&str]) -> ContainerSpec {
        let mut spec = ContainerSpec::new(
            self.id.clone(),
            self.rootfs.clone(),
            self.dir.clone(),
            args.iter().map(|s| s.to_string()).collect(),
        );
        spec.cgroup_parent = CGROUP_PARENT.to_string();
        spec
    }

    pub fn sh(&self, script: &str) -> ContainerSpec {
        self.spec(&["sh", "-c", script])
    }

    pub fn cgroup(&self) -> Cgroup {
        Cgroup::open(&Layout::detect().unwrap(), CGROUP_PARENT, &self.id).unwrap()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.id))
    }

    /// Every directory of the container's cgroup is gone.
    pub fn cgroup_removed(&self) -> bool {
        let cg = self.cgroup();
        ["memory", "cpu", "cpuacct", "pids", "devices"]
            .iter()
            .filter_map(|c| cg.dir(c))
            .all(|d| !d.exists())
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Kills whatever a failed test left running, then removes the cgroup.
        if let Err(e) = self.cgroup().remove() {
            eprintln!("cleanup of cgroup {}: {e}", self.id);
        }
        let left = strata_core::fsutil::mounts::unmount_all_under(self.tmp.path()).unwrap_or(0);
        if left > 0 && !std::thread::panicking() {
            panic!(
                "{left} mounts were left under {}",
                self.tmp.path().display()
            );
        }
    }
}

pub async fn start(spec: ContainerSpec) -> RunningContainer {
    let (tx, _) = container::output_channel();
    match container::spawn(spec, tx).await {
        Ok(c) => c,
        Err(e) => panic!("container did not start: {e}"),
    }
}

pub async fn start_err(spec: ContainerSpec) -> StartError {
    let (tx, _) = container::output_channel();
    match container::spawn(spec, tx).await {
        Ok(c) => {
            c.kill(nix::sys::signal::Signal::SIGKILL).ok();
            c.wait().await;
            panic!("container started but should not have");
        }
        Err(e) => e,
    }
}

/// Reads the container's whole log as (stdout, stderr).
pub async fn logs(path: &Path) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    let mut entries = Box::pin(read_logs(
        path.to_path_buf(),
        LogReadOptions::default(),
        None,
    ));
    while let Some(e) = entries.next().await {
        let e = e.unwrap();
        match e.stream {
            StreamKind::Stdout => out.push_str(&e.log),
            StreamKind::Stderr => err.push_str(&e.log),
        }
    }
    (out, err)
}

/// Runs a container to its end (60 s at most) and returns its status, stdout and stderr.
pub async fn run(sb: &Sandbox, spec: ContainerSpec) -> (ExitStatus, String, String) {
    let c = start(spec).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(60), c.wait())
        .await
        .expect("container did not exit within 60 s");
    let (out, err) = logs(&sb.log_path()).await;
    (status, out, err)
}
