//! Test fixtures: a temporary driver root that is unmounted and removed even when a test
//! fails, and a loop-mounted XFS with project quotas.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::fsutil::mounts;
use strata_core::{CreateOpts, LayerDriver, LayerId, StorageOpts};
use strata_overlay2::{Overlay2Driver, Settings};

/// A temporary directory whose mounts are all taken down on drop.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("overlay2")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(self.dir.path());
    }
}

pub async fn open(root: &Path) -> Overlay2Driver {
    strata_overlay2::open(root.to_path_buf(), &StorageOpts::default())
        .await
        .unwrap()
}

pub async fn open_with(root: &Path, settings: Settings) -> Overlay2Driver {
    strata_overlay2::open_with(root.to_path_buf(), settings)
        .await
        .unwrap()
}

pub fn id(n: usize) -> LayerId {
    LayerId::new(format!("{n:064x}")).unwrap()
}

pub async fn create_ro(d: &dyn LayerDriver, n: usize, parent: Option<usize>) -> LayerId {
    let parent = parent.map(id);
    d.create(&id(n), parent.as_ref(), &CreateOpts::read_only())
        .await
        .unwrap();
    id(n)
}

pub async fn create_rw(d: &dyn LayerDriver, n: usize, parent: Option<usize>) -> LayerId {
    let parent = parent.map(id);
    d.create(&id(n), parent.as_ref(), &CreateOpts::read_write())
        .await
        .unwrap();
    id(n)
}

pub fn mounted(path: &Path) -> bool {
    mounts::is_mounted(path).unwrap()
}

/// A sparse XFS image mounted with `-o loop,OPTIONS`; unmounted (which detaches the loop
/// device) and deleted on drop.
pub struct XfsLoop {
    pub dir: tempfile::TempDir,
    pub mnt: PathBuf,
}

impl XfsLoop {
    pub fn new(options: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("xfs.img");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(512 << 20).unwrap();
        drop(f);
        let fixture = Self { dir, mnt };
        run(Command::new("mkfs.xfs").arg("-q").arg(&img));
        run(Command::new("mount")
            .args(["-o", &format!("loop,{options}")])
            .arg(&img)
            .arg(&fixture.mnt));
        fixture
    }
}

impl Drop for XfsLoop {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(&self.mnt);
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
