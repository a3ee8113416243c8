//! Small filesystem helpers every driver needs: atomic metadata writes, disk usage walks,
//! mount table queries, backing filesystem detection.

pub mod copy;
pub mod mounts;
pub mod sync;
pub mod usage;

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `data` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory. A crash leaves either the old content or the new, never a torn file.
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).ctx("create", &tmp)?;
        f.write_all(data).ctx("write", &tmp)?;
        f.sync_all().ctx("fsync", &tmp)?;
    }
    std::fs::rename(&tmp, path).ctx("rename", path)?;
    fsync_dir(dir)
}

/// Makes a directory's entries (a rename, a create) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx("fsync", dir)
}

/// Removes a directory tree if it exists; a missing path is not an error.
pub fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::Error::io("remove", path, e)),
    }
}

/// Well-known filesystem magic numbers (statfs f_type), for `Backing Filesystem` and checks.
pub fn filesystem_name(path: &Path) -> Result<String> {
    let st = nix::sys::statfs::statfs(path).ctx("statfs", path)?;
    let magic = st.filesystem_type().0 as u64;
    Ok(match magic {
        0xEF53 => "extfs",
        0x9123_683E => "btrfs",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x794C_7630 => "overlayfs",
        0x6573_5546 => "fuse",
        0x2FC1_2FC1 => "zfs",
        0x0187 => "autofs",
        0x5346_544E => "ntfs",
        _ => return Ok(format!("unknown (0x{magic:x})")),
    }
    .to_string())
}
