//! Small filesystem helpers every driver needs: atomic metadata writes (and the per-document
//! locks that serialise their read-modify-write), disk usage walks, mount table queries,
//! backing filesystem detection.

pub mod copy;
pub mod doc_lock;
pub mod mounts;
pub mod sync;
pub mod usage;

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes `data` to `path` atomically: a temporary file beside it, fsync, rename, fsync of the
/// directory. A crash leaves either the old content or the new, never a torn file. The
/// temporary file has a unique random name (`.NAME.tmp-XXXXXX`), so concurrent writers of the
/// same path never share one; the last rename wins. Read-modify-write callers serialise
/// themselves (see [`doc_lock`]).
pub fn atomic_write(path: &Path, data: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .ctx("create a temporary file in", dir)?;
    tmp.write_all(data).ctx("write", tmp.path())?;
    tmp.as_file().sync_all().ctx("fsync", tmp.path())?;
    tmp.persist(path)
        .map_err(|e| crate::Error::io("rename", path, e.error))?;
    fsync_dir(dir)
}

/// Creates `dir` (and missing parents) if needed; a directory it made is made durable in its
/// parent, so a file written into it later survives a power cut with its directory.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).ctx("create directory", dir)?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => fsync_dir(parent),
        _ => Ok(()),
    }
}

/// Deletes the temporary files interrupted [`atomic_write`]s left in `dir` (`.NAME.tmp-*`);
/// a missing directory has none. Only for directories whose writers are not running yet.
pub fn remove_stale_temps(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::Error::io("read directory", dir, e)),
    };
    for entry in entries {
        let entry = entry.ctx("read directory", dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_temp = name.starts_with('.') && name.contains(".tmp-");
        if is_temp && entry.file_type().is_ok_and(|t| t.is_file()) {
            let path = entry.path();
            std::fs::remove_file(&path).ctx("remove", &path)?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Guards the shared temporary name: on 3af0184 the temporary file was named by process
    /// id, so concurrent writers of one path in one process renamed each other's file away
    /// ("rename ...: No such file or directory"). This failed there.
    #[test]
    fn concurrent_writers_of_one_path_all_succeed_and_leave_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("doc.json");
        std::thread::scope(|s| {
            let writers: Vec<_> = (0..16)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        for round in 0..20 {
                            atomic_write(path, format!("{i}-{round}").as_bytes())?;
                        }
                        Ok::<_, crate::Error>(())
                    })
                })
                .collect();
            for w in writers {
                w.join().unwrap().unwrap();
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with("-19"), "{text}");
        std::fs::write(t.path().join(".doc.json.tmp-abc123"), b"{").unwrap();
        remove_stale_temps(t.path()).unwrap();
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["doc.json"], "temporary files were left");
    }
}
