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

use std::path::{Path, PathBuf};

use strata_core::driverkit::{LayerRecord, RecordDir};
use strata_core::fsutil::remove_tree;
use strata_core::{Error, IoContext, LayerId, Result};

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    records: RecordDir,
}

impl Layout {
    pub fn new(root: PathBuf) -> Self {
        let records = RecordDir::new(root.join("meta"));
        Self { root, records }
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
    pub fn removal_dir(&self, id: &LayerId) -> Result<PathBuf> {
        let mut suffix = [0u8; 8];
        strata_core::ids::fill_random(&mut suffix)?;
        let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        Ok(self
            .staging_root()
            .join(format!("{}-removing-{suffix}", id.as_str())))
    }

    /// Creates the directories, deletes staging leftovers of a crash and returns every layer
    /// with its parent.
    pub fn recover(&self) -> Result<Vec<(LayerId, Option<LayerId>, ())>> {
        for d in [
            self.root.clone(),
            self.dirs_root(),
            self.records.dir().to_path_buf(),
        ] {
            make_private_dir(&d)?;
        }
        remove_tree(&self.staging_root())?;
        make_private_dir(&self.staging_root())?;

        let mut records = std::collections::HashMap::new();
        for (id, record) in self.records.load()? {
            if self.layer_dir(&id).is_dir() {
                records.insert(id, record.parent);
            } else {
                tracing::info!(layer = %id, "vfs: dropping the record of a layer that was never completed");
                self.records.discard(&id)?;
            }
        }

        let mut layers = Vec::new();
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
            layers.push((id, parent, ()));
        }
        Ok(layers)
    }

    pub fn write_record(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
        let record = LayerRecord {
            parent: parent.cloned(),
            kind: None,
        };
        self.records.write(id, &record)
    }

    pub fn remove_record(&self, id: &LayerId) -> Result<()> {
        self.records.remove(id)
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
