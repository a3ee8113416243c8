//! Docker's overlay2 on-disk layout: `<root>/<id>/{diff,link,lower,work,merged,committed}`
//! and `<root>/l/<short> -> ../<id>/diff`. Everything here is plain path arithmetic and small
//! metadata files; no mounts.

use std::path::{Path, PathBuf};

use strata_core::{Error, IoContext, LayerId, Result};

/// Length of the short link names, as Docker's `idLength`.
pub const SHORT_ID_LEN: usize = 26;
/// The directory holding the short links.
pub const LINK_DIR: &str = "l";
/// Prefix of a layer directory still being built; renamed to `<id>` when complete.
pub const CREATING_PREFIX: &str = ".creating-";
/// Prefix of a layer directory being deleted.
pub const REMOVING_PREFIX: &str = ".removing-";
/// Prefix of the start-up probe's scratch directory.
pub const PROBE_PREFIX: &str = ".probe-";

/// Paths of the driver root.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join(LINK_DIR)
    }

    pub fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(id.as_str())
    }

    pub fn staging_dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(format!("{CREATING_PREFIX}{id}"))
    }

    pub fn removing_dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(format!("{REMOVING_PREFIX}{id}"))
    }

    pub fn diff(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join("diff")
    }

    pub fn merged(&self, id: &LayerId) -> PathBuf {
        self.layer_dir(id).join("merged")
    }

    /// `l/<short>` relative to the root (as the `lower` file and relative mounts use it).
    pub fn relative_link(short: &str) -> String {
        format!("{LINK_DIR}/{short}")
    }

    pub fn link_path(&self, short: &str) -> PathBuf {
        self.links_dir().join(short)
    }

    /// Creates `l/<short> -> ../<id>/diff` (replacing a stale link of the same name).
    pub fn make_link(&self, short: &str, id: &LayerId) -> Result<()> {
        let link = self.link_path(short);
        let target = format!("../{id}/diff");
        match std::os::unix::fs::symlink(&target, &link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&target, &link).ctx("symlink", &link)
            }
            Err(e) => Err(Error::io("symlink", &link, e)),
        }
    }

    /// The layer id a short link points at, if it is one of ours.
    pub fn link_target(&self, short: &str) -> Option<LayerId> {
        let target = std::fs::read_link(self.link_path(short)).ok()?;
        let s = target.to_str()?;
        let id = s.strip_prefix("../")?.strip_suffix("/diff")?;
        LayerId::new(id).ok()
    }
}

/// The metadata files of one layer directory (`dir` may be a staging directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerMeta {
    /// The short link name.
    pub link: String,
    /// `l/<short>` entries of the ancestors, nearest first (empty for a base layer).
    pub lower: Vec<String>,
    /// Mounted read-only (an image layer); Docker's `committed` marker.
    pub read_only: bool,
}

impl LayerMeta {
    pub fn read(dir: &Path) -> Result<Self> {
        let link_file = dir.join("link");
        let link = std::fs::read_to_string(&link_file).ctx("read", &link_file)?;
        if !is_short_id(link.trim()) {
            return Err(Error::Other(format!(
                "{} does not hold a short link id",
                link_file.display()
            )));
        }
        let lower = match std::fs::read_to_string(dir.join("lower")) {
            Ok(s) => parse_lower(&s, &dir.join("lower"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", dir.join("lower"), e)),
        };
        Ok(Self {
            link: link.trim().to_string(),
            lower,
            read_only: dir.join("committed").exists(),
        })
    }

    /// Writes the metadata files into the staging directory `dir` (no trailing newlines, as
    /// Docker), without fsync: the staging directory is the temporary, its rename into place
    /// is the atomic step, and the caller syncs everything at once afterwards (see
    /// `Overlay2::build_layer_dir`). Returns the names of the files written.
    pub fn write(&self, dir: &Path) -> Result<Vec<&'static str>> {
        let mut written = Vec::with_capacity(3);
        let mut put = |name: &'static str, data: &[u8]| {
            let path = dir.join(name);
            std::fs::write(&path, data).ctx("write", &path)?;
            written.push(name);
            Ok::<(), Error>(())
        };
        if self.read_only {
            put("committed", b"")?;
        }
        if !self.lower.is_empty() {
            put("lower", self.lower.join(":").as_bytes())?;
        }
        put("link", self.link.as_bytes())?;
        Ok(written)
    }

    /// The short name of the parent (the first entry of `lower`).
    pub fn parent_short(&self) -> Option<&str> {
        self.lower
            .first()
            .map(|l| l.strip_prefix("l/").unwrap_or(l))
    }
}

/// A `lower` file exists only for a layer with a parent, so an empty one is a write a crash
/// cut short, never a base layer.
fn parse_lower(text: &str, file: &Path) -> Result<Vec<String>> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::Other(format!("{} is empty", file.display())));
    }
    text.split(':')
        .map(|entry| match entry.strip_prefix("l/") {
            Some(short) if is_short_id(short) => Ok(entry.to_string()),
            _ => Err(Error::Other(format!(
                "{} holds a malformed entry {entry:?}",
                file.display()
            ))),
        })
        .collect()
}

pub fn is_short_id(s: &str) -> bool {
    s.len() == SHORT_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// A fresh 26-character `[A-Z0-9]` short id, as Docker's `overlayutils.GenerateID`
/// (base32 of random bytes).
pub fn new_short_id() -> strata_core::Result<String> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bytes = [0u8; SHORT_ID_LEN];
    strata_core::ids::fill_random(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(b & 31) as usize] as char)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_look_like_dockers() {
        let a = new_short_id().unwrap();
        assert!(is_short_id(&a), "{a}");
        assert_ne!(a, new_short_id().unwrap());
        assert!(!is_short_id("abc"));
    }

    #[test]
    fn meta_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let meta = LayerMeta {
            link: new_short_id().unwrap(),
            lower: vec![
                format!("l/{}", new_short_id().unwrap()),
                format!("l/{}", new_short_id().unwrap()),
            ],
            read_only: true,
        };
        let written = meta.write(t.path()).unwrap();
        assert_eq!(written.len(), 3);
        assert_eq!(LayerMeta::read(t.path()).unwrap(), meta);
        let lower = std::fs::read_to_string(t.path().join("lower")).unwrap();
        assert!(!lower.ends_with('\n'));
        assert_eq!(lower.len(), 2 * 28 + 1);
    }

    #[test]
    fn malformed_lower_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("link"), new_short_id().unwrap()).unwrap();
        std::fs::write(t.path().join("lower"), "l/../../etc").unwrap();
        assert!(LayerMeta::read(t.path()).is_err());
        // Torn writes: an empty lower, an empty or partial link.
        std::fs::write(t.path().join("lower"), "").unwrap();
        assert!(LayerMeta::read(t.path()).is_err());
        std::fs::remove_file(t.path().join("lower")).unwrap();
        assert!(LayerMeta::read(t.path()).is_ok());
        std::fs::write(t.path().join("link"), "").unwrap();
        assert!(LayerMeta::read(t.path()).is_err());
        std::fs::write(t.path().join("link"), &new_short_id().unwrap()[..10]).unwrap();
        assert!(LayerMeta::read(t.path()).is_err());
    }
}
