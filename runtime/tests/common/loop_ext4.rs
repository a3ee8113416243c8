//! An ext4 filesystem image attached to a loop device and mounted, for tests that need the
//! data root on a filesystem of their own (full disks, power loss). Undone on drop, also when
//! the test fails: whatever the daemon left mounted below it, the mount, the loop device.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a host tool and insists on success; returns stdout.
pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/setup.sh installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Makes a journaled ext4 image of `size` bytes at `image`; lazy init is off so mkfs writes
/// everything now, not in the background after mount.
pub fn make_ext4(image: &Path, size: u64) {
    std::fs::File::create(image)
        .and_then(|f| f.set_len(size))
        .expect("create the image file");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-E",
            "lazy_itable_init=0,lazy_journal_init=0",
            image.to_str().unwrap(),
        ],
    );
}

pub struct LoopMount {
    device: String,
    at: PathBuf,
}

impl LoopMount {
    /// Attaches `image` to a free loop device and mounts it at `at` (created if missing).
    pub fn attach(image: &Path, at: &Path) -> LoopMount {
        std::fs::create_dir_all(at).expect("create the mount point");
        let device = run("losetup", &["--find", "--show", image.to_str().unwrap()]);
        let m = LoopMount {
            device,
            at: at.to_path_buf(),
        };
        run("mount", &["-t", "ext4", &m.device, at.to_str().unwrap()]);
        m
    }

    pub fn path(&self) -> &Path {
        &self.at
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.at.join("root"));
        let unmounted = Command::new("umount")
            .arg(&self.at)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
