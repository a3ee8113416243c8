//! Where things live under the driver's root (`<data-root>/btrfs`), Docker's layout plus two
//! scratch directories:
//!
//! ```text
//! subvolumes/<id>    one subvolume per complete layer (Docker's layout)
//! staging/<random>   a layer being created: snapshot here, then rename into subvolumes/
//! trash/<random>     a layer being removed: renamed here first, then deleted
//! qgroups-pending    ids of deleted subvolumes whose qgroup the kernel would not drop yet
//! ```
//! A rename is atomic, so after a crash every entry of `subvolumes/` is a whole layer and
//! everything in `staging/` and `trash/` is garbage, deleted at start-up.

use std::path::{Path, PathBuf};

use strata_core::LayerId;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn subvolumes(&self) -> PathBuf {
        self.root.join("subvolumes")
    }

    pub fn staging(&self) -> PathBuf {
        self.root.join("staging")
    }

    pub fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub fn pending_qgroups(&self) -> PathBuf {
        self.root.join("qgroups-pending")
    }

    pub fn layer(&self, id: &LayerId) -> PathBuf {
        self.subvolumes().join(id.as_str())
    }

    /// A fresh name in `staging/`.
    pub fn new_staging_path(&self) -> strata_core::Result<PathBuf> {
        Ok(self.staging().join(random_name()?))
    }

    /// A fresh name in `trash/`.
    pub fn new_trash_path(&self) -> strata_core::Result<PathBuf> {
        Ok(self.trash().join(random_name()?))
    }
}

/// 32 hex digits: never a clash in practice, and a valid file name whatever the layer id's
/// length (ids may be 255 bytes, so `<id>.staging` could be too long).
fn random_name() -> strata_core::Result<String> {
    let mut bytes = [0u8; 16];
    strata_core::ids::fill_random(&mut bytes)?;
    Ok(hex::encode(bytes))
}
