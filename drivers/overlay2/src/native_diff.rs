//! The change list read from a layer's own upper directory instead of walking the whole tree.
//!
//! Only paths present in the upper directory can differ from the parent, so each is compared
//! with the parent's view of the same path by the rules of core's naive walk
//! (`archive::naive_changes`): mode, owner, size (not for directories), device numbers, mtime to
//! the nanosecond, symlink target, the xattrs a layer tar carries, and for regular files that
//! are different inodes with equal metadata, the bytes. A 0/0 character device is a deletion;
//! an opaque directory (`trusted.overlay.opaque=y`) hides every parent entry it does not hold
//! itself, and each of those is listed as deleted, so the list equals the naive walk's.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_core::{Change, ChangeKind, Error, Result};

const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const COMPARE_CHUNK: usize = 256 * 1024;

/// Changes of the layer whose upper directory is `upper`, against `parent` (the parent's full
/// tree, e.g. its mount; None when the layer has no parent).
pub fn changes(upper: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_dir(
        upper,
        parent.map(Path::to_path_buf),
        Path::new("/"),
        &mut out,
    )?;
    out.sort();
    Ok(out)
}

/// Whether `meta` is an overlay whiteout (a 0/0 character device).
pub fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Visits one upper directory. `parent_dir` is the parent's directory at the same path when
/// it exists and is a directory.
fn walk_dir(
    upper_dir: &Path,
    parent_dir: Option<PathBuf>,
    rel: &Path,
    out: &mut Vec<Change>,
) -> Result<()> {
    let opaque = is_opaque(upper_dir)?;
    let mut present: HashSet<OsString> = HashSet::new();
    for name in read_names(upper_dir)? {
        let upper_path = upper_dir.join(&name);
        let new = lstat(&upper_path)?.ok_or_else(|| vanished(&upper_path))?;
        let child_rel = rel.join(&name);
        let old_path = parent_dir.as_ref().map(|p| p.join(&name));
        let old = match &old_path {
            Some(p) => lstat(p)?,
            None => None,
        };
        if is_whiteout(&new) {
            // In an opaque dir the expansion below reports every hidden parent entry.
            if !opaque && old.is_some() {
                out.push(change(child_rel, ChangeKind::Delete));
            }
            continue;
        }
        present.insert(name.clone());
        match (&old, &old_path) {
            (Some(old_meta), Some(op)) => {
                if differs(&upper_path, &new, op, old_meta)? {
                    out.push(change(child_rel.clone(), ChangeKind::Modify));
                }
            }
            _ => out.push(change(child_rel.clone(), ChangeKind::Add)),
        }
        if new.is_dir() {
            let child_parent = match (&old, old_path) {
                (Some(m), Some(p)) if m.is_dir() => Some(p),
                _ => None,
            };
            walk_dir(&upper_path, child_parent, &child_rel, out)?;
        }
    }
    if opaque {
        if let Some(parent) = &parent_dir {
            for name in read_names(parent)? {
                if !present.contains(&name) {
                    out.push(change(rel.join(name), ChangeKind::Delete));
                }
            }
        }
    }
    Ok(())
}

/// core's `Walker::differs`, over paths.
fn differs(
    new_path: &Path,
    new: &std::fs::Metadata,
    old_path: &Path,
    old: &std::fs::Metadata,
) -> Result<bool> {
    if new.mode() != old.mode() || new.uid() != old.uid() || new.gid() != old.gid() {
        return Ok(true);
    }
    let ft = new.file_type();
    if !ft.is_dir() && new.size() != old.size() {
        return Ok(true);
    }
    if (ft.is_char_device() || ft.is_block_device()) && new.rdev() != old.rdev() {
        return Ok(true);
    }
    if new.mtime() != old.mtime() || new.mtime_nsec() != old.mtime_nsec() {
        return Ok(true);
    }
    if ft.is_symlink() {
        let a = std::fs::read_link(new_path).map_err(|e| Error::io("readlink", new_path, e))?;
        let b = std::fs::read_link(old_path).map_err(|e| Error::io("readlink", old_path, e))?;
        if a != b {
            return Ok(true);
        }
    }
    if carried_xattrs(new_path)? != carried_xattrs(old_path)? {
        return Ok(true);
    }
    if ft.is_file() && !(new.dev() == old.dev() && new.ino() == old.ino()) {
        return content_differs(new_path, old_path);
    }
    Ok(false)
}

/// The xattrs a layer tar carries (as core's `carried_xattr`): user.*, security.capability
/// and trusted.* except the overlay's own trusted.overlay.*; sorted by name.
fn carried_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    use std::os::unix::ffi::OsStrExt;
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("list xattrs of", path, e)),
    };
    let mut out = Vec::new();
    for name in names {
        let n = name.as_bytes();
        let carried = n.starts_with(b"user.")
            || n == b"security.capability"
            || (n.starts_with(b"trusted.") && !n.starts_with(b"trusted.overlay."));
        if !carried {
            continue;
        }
        if let Some(value) =
            xattr::get(path, &name).map_err(|e| Error::io("read xattr of", path, e))?
        {
            out.push((n.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Same size and mtime: only the bytes can tell.
fn content_differs(a: &Path, b: &Path) -> Result<bool> {
    let mut fa = std::fs::File::open(a).map_err(|e| Error::io("open", a, e))?;
    let mut fb = std::fs::File::open(b).map_err(|e| Error::io("open", b, e))?;
    let mut ba = vec![0u8; COMPARE_CHUNK];
    let mut bb = vec![0u8; COMPARE_CHUNK];
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(|e| Error::io("read", a, e))?;
        let m = read_full(&mut fb, &mut bb).map_err(|e| Error::io("read", b, e))?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(true);
        }
        if n < ba.len() {
            return Ok(false);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn is_opaque(dir: &Path) -> Result<bool> {
    match xattr::get(dir, OPAQUE_XATTR) {
        Ok(v) => Ok(v.as_deref() == Some(b"y")),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => Ok(false),
        Err(e) => Err(Error::io("read opaque flag of", dir, e)),
    }
}

fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(Error::io("stat", path, e)),
    }
}

fn read_names(dir: &Path) -> Result<Vec<OsString>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))?;
    entries
        .map(|e| {
            e.map(|e| e.file_name())
                .map_err(|err| Error::io("read directory", dir, err))
        })
        .collect()
}

fn vanished(path: &Path) -> Error {
    Error::Other(format!(
        "{} vanished while its layer was being compared (is the layer being written?)",
        path.display()
    ))
}

fn change(path: PathBuf, kind: ChangeKind) -> Change {
    Change { path, kind }
}
