//! The fuse-overlayfs-compatible binary: daemonizes once the mount is ready, serves it, exits
//! on unmount.

mod common;

use std::process::Command;

use common::*;

#[test]
fn daemonizes_serves_and_exits_on_unmount() {
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Unmount(tmp.path().to_path_buf());
    let dirs = mkdirs(tmp.path(), &["lower", "upper", "work", "mnt"]);
    std::fs::write(dirs[0].join("from-lower"), b"lower").unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_strata-fuse-overlayfs"))
        .arg("-o")
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            dirs[0].display(),
            dirs[1].display(),
            dirs[2].display()
        ))
        .arg(&dirs[3])
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    // The parent returned: the mount must already be usable.
    assert_eq!(std::fs::read(dirs[3].join("from-lower")).unwrap(), b"lower");
    std::fs::write(dirs[3].join("new"), b"upper").unwrap();
    assert_eq!(std::fs::read(dirs[1].join("new")).unwrap(), b"upper");
    strata_fuse_overlay::mount::unmount_path(&dirs[3]).unwrap();
    assert_no_mounts_under(tmp.path());
}

#[test]
fn refuses_a_bad_command_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata-fuse-overlayfs"))
        .arg("/nonexistent-mountpoint")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lowerdir"));
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.0);
    }
}
