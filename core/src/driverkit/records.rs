//! A directory of small per-layer records, `<dir>/<id>.json` = `{"parent": id|null}` (plus
//! `"kind"` when a driver records it), each written atomically. For a driver whose layout has
//! no parent link of its own (vfs). Crash safety comes from the order the driver keeps: write
//! the record before the layer appears under its final name, delete it after the layer left
//! it; a record without a layer is then a create that never finished.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::fsutil::{atomic_write, fsync_dir};
use crate::ids::LayerId;
use crate::layer::LayerKind;

/// What is kept per layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub parent: Option<LayerId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<LayerKind>,
}

#[derive(Debug, Clone)]
pub struct RecordDir {
    dir: PathBuf,
}

impl RecordDir {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: &LayerId) -> PathBuf {
        self.dir.join(format!("{}.json", id.as_str()))
    }

    pub fn write(&self, id: &LayerId, record: &LayerRecord) -> Result<()> {
        let data = serde_json::to_vec(record)
            .map_err(|e| Error::Other(format!("encode the record of layer {id}: {e}")))?;
        atomic_write(&self.path(id), &data)
    }

    /// Deletes the record (a missing one is fine) durably.
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        remove_file(&self.path(id))?;
        fsync_dir(&self.dir)
    }

    /// Every record, after deleting leftovers of interrupted writes and names that are not
    /// layer ids. A record that does not parse is an error naming the file.
    pub fn load(&self) -> Result<Vec<(LayerId, LayerRecord)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).ctx("read directory", &self.dir)? {
            let path = entry.ctx("read directory", &self.dir)?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| LayerId::new(n).ok());
            let Some(id) = id else {
                remove_file(&path)?;
                continue;
            };
            let text = std::fs::read(&path).ctx("read", &path)?;
            let record = serde_json::from_slice(&text).map_err(|e| {
                Error::Other(format!("layer record {} is corrupt: {e}", path.display()))
            })?;
            out.push((id, record));
        }
        Ok(out)
    }

    /// Deletes the record of `id` without syncing (start-up clean-up of a failed create).
    pub fn discard(&self, id: &LayerId) -> Result<()> {
        remove_file(&self.path(id))
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}
