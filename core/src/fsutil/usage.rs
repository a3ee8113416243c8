//! Disk usage of a tree: bytes allocated (st_blocks * 512) and inodes, each inode counted once
//! however many hard links it has. This is the accounting model of the whole engine.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::{Error, Result};
use crate::layer::Usage;

/// Walks `root` without following symlinks or crossing into other filesystems.
pub fn tree_usage(root: &Path) -> Result<Usage> {
    let meta = match std::fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Usage::default()),
        Err(e) => return Err(Error::io("stat", root, e)),
    };
    let dev = meta.dev();
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    let mut stack = Vec::new();
    count(&meta, &mut seen, &mut usage);
    if meta.is_dir() {
        stack.push(root.to_path_buf());
    }
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("read directory", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let path = entry.path();
            let m = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("stat", &path, e)),
            };
            if m.dev() != dev {
                continue;
            }
            count(&m, &mut seen, &mut usage);
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(usage)
}

fn count(m: &std::fs::Metadata, seen: &mut HashSet<u64>, usage: &mut Usage) {
    if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
        return;
    }
    usage.inodes += 1;
    usage.bytes += m.blocks() * 512;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardlinks_count_once() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("a");
        std::fs::write(&f, vec![7u8; 64 * 1024]).unwrap();
        std::fs::hard_link(&f, t.path().join("b")).unwrap();
        let u = tree_usage(t.path()).unwrap();
        assert_eq!(u.inodes, 2, "the directory and one file");
        assert!(u.bytes >= 64 * 1024 && u.bytes < 128 * 1024, "{u:?}");
        let file = tree_usage(&f).unwrap();
        assert_eq!(file.inodes, 1, "a file root is one inode");
    }
}
