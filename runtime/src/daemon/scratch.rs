//! `<data-root>/tmp`: the scratch space of loads, pulls and builds (`load-*`, `pull-*`,
//! `build-*` directories, removed when their operation ends, but left behind by a crash), and
//! `blobs/`, the partial layer blobs a pull keeps so the next pull of the same blob resumes.
//! Cleaned once at start, before anything uses it.

use std::path::Path;
use std::time::{Duration, SystemTime};

use strata_core::{IoContext, Result};

/// Partial blobs not resumed for this long are given up.
const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Removes what interrupted operations left; returns how many entries went.
pub fn clean_at_start(data_root: &Path) -> Result<usize> {
    let tmp = data_root.join("tmp");
    let entries = match std::fs::read_dir(&tmp) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).ctx("read", &tmp),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.ctx("read", &tmp)?;
        let path = entry.path();
        if entry.file_name() == "blobs" {
            removed += clean_partials(&path)?;
            continue;
        }
        remove_entry(&path)?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes a file or a directory tree (never following a symlink).
fn remove_entry(path: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).ctx("stat", path)?;
    if meta.is_dir() {
        strata_core::fsutil::remove_tree(path)
    } else {
        std::fs::remove_file(path).ctx("remove", path)
    }
}

/// Keeps the partial blobs a pull may still resume: regular `*.partial` files younger than
/// [`PARTIAL_MAX_AGE`].
fn clean_partials(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).ctx("read", dir)? {
        let entry = entry.ctx("read", dir)?;
        let meta = std::fs::symlink_metadata(entry.path()).ctx("stat", entry.path())?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default();
        let keep = meta.is_file()
            && entry.file_name().to_string_lossy().ends_with(".partial")
            && age < PARTIAL_MAX_AGE;
        if !keep {
            remove_entry(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_go_and_resumable_blobs_stay() {
        let root = tempfile::tempdir().unwrap();
        let tmp = root.path().join("tmp");
        std::fs::create_dir_all(tmp.join("pull-abc/x")).unwrap();
        std::fs::create_dir_all(tmp.join("load-def")).unwrap();
        std::fs::create_dir_all(tmp.join("blobs/odd-dir")).unwrap();
        std::fs::write(tmp.join("blobs/aa.partial"), b"kept").unwrap();
        std::fs::write(tmp.join("blobs/stray"), b"x").unwrap();
        assert_eq!(clean_at_start(root.path()).unwrap(), 4);
        let mut left: Vec<_> = walk(&tmp);
        left.sort();
        assert_eq!(left, vec!["blobs", "blobs/aa.partial"]);
        assert_eq!(clean_at_start(&root.path().join("missing")).unwrap(), 0);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
            }
            out.push(name);
        }
        out
    }
}
