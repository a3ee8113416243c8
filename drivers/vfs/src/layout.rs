//! Where things live under the driver root, and the small per-layer record kept beside the
//! layer tree.
//!
//! ```text
//! <root>/dir/<id>         the layer's full tree (Docker's vfs layout)
//! <root>/meta/<id>.json   {"parent": "<id>" | null}, written atomically
//! <root>/tmp/             staging: a layer is copied here, synced, then renamed into dir/;
//!                         removed layers are renamed here before they are deleted
//! ```
//! A layer exists when `dir/<id>` exists. The record is written before the rename into `dir/`
//! and deleted after the rename out of it, so a crash can only leave a record without a tree
//! (dropped at start-up), never a tree without its parent link.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_core::fsutil::{atomic_write, fsync_dir, remove_tree};
use strata_core::{Error, IoContext, LayerId, Result};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct LayerRecord {
    parent: Option<LayerId>,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn dirs_root(&self) -> PathBuf {
        self.root.join("dir")
    }

    pub fn layer_dir(&self, id: &LayerId) -> PathBuf {
        self.dirs_root().join(id.as_str())
    }

    pub fn staging_root(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn staging_dir(&self, id: &LayerId) -> PathBuf {
        self.staging_root().join(id.as_str())
    }

    /// A unique name in staging for a layer on its way out.
    pub fn removal_dir(&self, id: &LayerId) -> PathBuf {
        let mut suffix = [0u8; 8];
        strata_core::ids::fill_random(&mut suffix);
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        self.staging_root()
            .join(format!("{}-removing-{suffix}", id.as_str()))
    }

    fn meta_root(&self) -> PathBuf {
        self.root.join("meta")
    }

    fn record_path(&self, id: &LayerId) -> PathBuf {
        self.meta_root().join(format!("{}.json", id.as_str()))
    }

    /// Creates the directories, deletes staging leftovers of a crash and returns every layer
    /// with its parent.
    pub fn recover(&self) -> Result<HashMap<LayerId, Option<LayerId>>> {
        for d in [self.root.clone(), self.dirs_root(), self.meta_root()] {
            make_private_dir(&d)?;
        }
        remove_tree(&self.staging_root())?;
        make_private_dir(&self.staging_root())?;

        let mut records = HashMap::new();
        let meta_root = self.meta_root();
        for entry in std::fs::read_dir(&meta_root).ctx("read directory", &meta_root)? {
            let entry = entry.ctx("read directory", &meta_root)?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let id = name
                .strip_suffix(".json")
                .and_then(|n| LayerId::new(n).ok());
            let Some(id) = id else {
                // A temporary file of an interrupted atomic write, or something foreign.
                remove_file(&path)?;
                continue;
            };
            if !self.layer_dir(&id).is_dir() {
                tracing::info!(layer = %id, "vfs: dropping the record of a layer that was never completed");
                remove_file(&path)?;
                continue;
            }
            let text = std::fs::read(&path).ctx("read", &path)?;
            let record: LayerRecord = serde_json::from_slice(&text).map_err(|e| {
                Error::Other(format!(
                    "vfs layer record {} is corrupt ({e}); remove the layer directory {} and its record to drop it",
                    path.display(),
                    self.layer_dir(&id).display()
                ))
            })?;
            records.insert(id, record.parent);
        }

        let mut layers = HashMap::new();
        let dirs_root = self.dirs_root();
        for entry in std::fs::read_dir(&dirs_root).ctx("read directory", &dirs_root)? {
            let entry = entry.ctx("read directory", &dirs_root)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(id) = LayerId::new(&name) else {
                tracing::warn!(entry = %name, "vfs: ignoring a foreign entry in the layer directory");
                continue;
            };
            let parent = records.remove(&id).unwrap_or_else(|| {
                tracing::warn!(layer = %id, "vfs: layer without a record; treating it as a base layer");
                None
            });
            layers.insert(id, parent);
        }
        Ok(layers)
    }

    pub fn write_record(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        let record = LayerRecord {
            parent: parent.cloned(),
        };
        let data = serde_json::to_vec(&record)
            .map_err(|e| Error::Other(format!("encode vfs layer record: {e}")))?;
        atomic_write(&self.record_path(id), &data)
    }

    pub fn remove_record(&self, id: &LayerId) -> Result<()> {
        remove_file(&self.record_path(id))?;
        fsync_dir(&self.meta_root())
    }
}

fn make_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(Error::io("mkdir", path, e)),
    }
}

fn remove_file(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}
