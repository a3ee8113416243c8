//! A throwaway btrfs filesystem for tests (this crate's and the conformance suite's): a sparse
//! image file, `mkfs.btrfs`, a loop device, a mount in a temporary directory. Dropping it
//! unmounts everything below the mount point, detaches the loop device and deletes the
//! directory, also when the test panics. Needs root, btrfs-progs and loop devices.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::fsutil::mounts::{mounts_under, unmount};
use strata_core::{Error, IoContext, Result};

use crate::{qgroup, subvol};

/// mkfs.btrfs needs at least 114 MiB; 2 GiB leaves room for quota tests and costs nothing
/// (sparse).
pub const DEFAULT_SIZE: u64 = 2 << 30;

/// A mounted loop btrfs, gone on drop.
pub struct LoopBtrfs {
    dir: Option<tempfile::TempDir>,
    mount_point: PathBuf,
    device: Option<String>,
    mounted: bool,
}

impl LoopBtrfs {
    /// A 2 GiB btrfs with quotas off.
    pub fn new() -> Result<Self> {
        Self::with_size(DEFAULT_SIZE)
    }

    /// A 2 GiB btrfs with quotas on (rescan finished).
    pub fn with_quota() -> Result<Self> {
        let fs = Self::new()?;
        qgroup::enable_quota(fs.path())?;
        Ok(fs)
    }

    pub fn with_size(bytes: u64) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("strata-btrfs-")
            .tempdir()
            .ctx("create temporary directory", std::env::temp_dir())?;
        let image = dir.path().join("btrfs.img");
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).ctx("create directory", &mount_point)?;
        let file = std::fs::File::create(&image).ctx("create", &image)?;
        file.set_len(bytes).ctx("truncate", &image)?;
        drop(file);
        run(Command::new("mkfs.btrfs").arg("-q").arg("-f").arg(&image))?;
        let mut fs = Self {
            dir: Some(dir),
            mount_point,
            device: None,
            mounted: false,
        };
        let device = attach_loop(&image)?;
        fs.device = Some(device.clone());
        nix::mount::mount(
            Some(device.as_str()),
            &fs.mount_point,
            Some("btrfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .ctx("mount btrfs", &fs.mount_point)?;
        fs.mounted = true;
        Ok(fs)
    }

    /// The mount point: the filesystem's top-level subvolume.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The loop device backing the filesystem (`/dev/loopN`).
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// Every subvolume on the filesystem, as paths relative to the mount point, sorted.
    pub fn subvolumes(&self) -> Result<Vec<PathBuf>> {
        let mut all: Vec<PathBuf> = subvol::list_subvolumes(&self.mount_point)?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        all.sort();
        Ok(all)
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        if self.mounted {
            // Anything a test mounted below us first, deepest first, then the filesystem.
            if let Ok(below) = mounts_under(&self.mount_point) {
                for m in below {
                    if unmount(&m.mount_point, false).is_err() {
                        let _ = unmount(&m.mount_point, true);
                    }
                }
            }
            if unmount(&self.mount_point, false).is_err() {
                let _ = unmount(&self.mount_point, true);
            }
        }
        if let Some(device) = self.device.take() {
            if let Err(e) = run(Command::new("losetup").arg("-d").arg(&device)) {
                eprintln!("LoopBtrfs: detaching {device}: {e}");
            }
        }
        drop(self.dir.take());
    }
}

/// `losetup --find --show`, retried: parallel tests race for the same free device.
fn attach_loop(image: &Path) -> Result<String> {
    let mut last = None;
    for attempt in 0..8 {
        let out = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(image)
            .output()
            .ctx("run losetup", image)?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
        }
        last = Some(String::from_utf8_lossy(&out.stderr).trim().to_string());
        std::thread::sleep(std::time::Duration::from_millis(20 * (attempt + 1)));
    }
    Err(Error::Other(format!(
        "losetup --find --show {}: {} (are loop devices available? are we root?)",
        image.display(),
        last.unwrap_or_default()
    )))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::Other(format!("{shown}: {e} (is btrfs-progs installed?)")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
