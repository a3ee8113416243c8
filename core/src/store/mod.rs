//! The layer store (Docker's layerdb: diffIDs, chain ids, reference counts, crash-safe
//! registration) and the image store (imagedb and repositories.json) over any layer driver.
//!
//! Both live under `<data-root>/image/<driver>/`.

pub mod digest;
pub mod export;
mod image_inspect;
mod image_usage;
pub mod images;
pub mod ingest;
mod layer_sync;
mod layerdb_files;
pub mod layers;
pub mod mount_guard;
mod quarantine;
pub mod reference;
mod rw_layers;
mod staged;
pub mod tarsplit;
#[cfg(any(test, feature = "test-driver"))]
pub mod testdriver;

pub use digest::{chain_id, chain_ids, Digest};
pub use images::{ImageConfig, ImageInspect, ImageRecord, ImageStore};
pub use layers::{LayerInfo, LayerStore, MountInfo, RegisterOpts, Registered};
pub use mount_guard::MountGuard;
pub use reference::Reference;
pub use rw_layers::RwLayerSize;

use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

/// Writes a small metadata file and fsyncs it (inside a staging directory, so no rename).
pub(crate) fn write_file_synced(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).ctx("create", path)?;
    f.write_all(data).ctx("write", path)?;
    f.sync_all().ctx("fsync", path)
}

/// A small text file, trimmed; missing is an error.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .ctx("read", path)?
        .trim()
        .to_string())
}

/// A small text file, trimmed; `None` if missing.
pub(crate) fn read_opt(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::Error::io("read", path, e)),
    }
}

#[cfg(test)]
mod tests;
