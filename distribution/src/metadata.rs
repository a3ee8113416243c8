//! What the daemon remembers about blobs it pulled or pushed, in Docker's layout under
//! `<image-root>/distribution/`:
//! - `diffid-by-digest/sha256/<blob hex>`: the diffID a compressed blob expands to, so a pull
//!   knows a layer is present before downloading it;
//! - `v2metadata-by-diffid/sha256/<diffID hex>`: the blobs (digest, repository) a layer was
//!   pulled from or pushed as, so a push reuses them instead of compressing again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_core::store::Digest;

use crate::error::Result;

/// One compressed form of a layer and the repository it is known in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobSource {
    #[serde(rename = "Digest")]
    pub digest: Digest,
    /// `registry/repository` (`127.0.0.1:5000/x/y`, `docker.io/library/busybox`).
    #[serde(rename = "SourceRepository")]
    pub source_repository: String,
    /// Compressed size, when known.
    #[serde(rename = "Size", default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// Remembered blob facts. Writes are atomic (temp file, rename); losing one only costs a
/// download or a recompression.
#[derive(Debug, Clone)]
pub struct BlobMetadata {
    root: PathBuf,
}

/// Kept entries per layer (Docker keeps 50 too).
const MAX_SOURCES: usize = 50;

impl BlobMetadata {
    pub fn new(image_root: &Path) -> Self {
        Self {
            root: image_root.join("distribution"),
        }
    }

    fn diff_path(&self, blob: &Digest) -> PathBuf {
        self.root.join("diffid-by-digest/sha256").join(blob.hex())
    }

    fn sources_path(&self, diff_id: &Digest) -> PathBuf {
        self.root
            .join("v2metadata-by-diffid/sha256")
            .join(diff_id.hex())
    }

    /// The diffID `blob` was found to expand to, if known.
    pub fn diff_id(&self, blob: &Digest) -> Option<Digest> {
        let text = std::fs::read_to_string(self.diff_path(blob)).ok()?;
        Digest::parse(text.trim()).ok()
    }

    /// The blobs `diff_id` is known as, most recent first.
    pub fn sources(&self, diff_id: &Digest) -> Vec<BlobSource> {
        std::fs::read(self.sources_path(diff_id))
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    /// Records that `source` holds the layer `diff_id`.
    pub fn record(&self, diff_id: &Digest, source: BlobSource) -> Result<()> {
        write_atomic(&self.diff_path(&source.digest), diff_id.as_str().as_bytes())?;
        let mut sources = self.sources(diff_id);
        sources.retain(|s| {
            !(s.digest == source.digest && s.source_repository == source.source_repository)
        });
        sources.insert(0, source);
        sources.truncate(MAX_SOURCES);
        let raw = serde_json::to_vec(&sources).map_err(std::io::Error::other)?;
        write_atomic(&self.sources_path(diff_id), &raw)
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, data)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_blobs_of_a_layer() {
        let dir = tempfile::tempdir().unwrap();
        let meta = BlobMetadata::new(dir.path());
        let diff = Digest::of_bytes(b"tar");
        let (a, b) = (Digest::of_bytes(b"gz1"), Digest::of_bytes(b"gz2"));
        assert!(meta.sources(&diff).is_empty());
        assert_eq!(meta.diff_id(&a), None);
        let src = |d: &Digest, repo: &str| BlobSource {
            digest: d.clone(),
            source_repository: repo.into(),
            size: Some(3),
        };
        meta.record(&diff, src(&a, "h/x")).unwrap();
        meta.record(&diff, src(&b, "h/y")).unwrap();
        meta.record(&diff, src(&a, "h/x")).unwrap();
        assert_eq!(meta.diff_id(&a), Some(diff.clone()));
        assert_eq!(meta.sources(&diff), vec![src(&a, "h/x"), src(&b, "h/y")]);
        // Reopened, it reads the same.
        assert_eq!(BlobMetadata::new(dir.path()).sources(&diff).len(), 2);
    }
}
