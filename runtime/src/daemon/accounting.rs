//! The engine's one disk accounting model, used by `system df`, `images`, `ps -s` and inspect:
//! **bytes allocated on disk** (st_blocks × 512), each inode counted once however many hard
//! links it has, and every byte of the data root attributed to exactly one object:
//!
//! - a **layer** costs what its driver stores for it (`LayerDriver::usage`) plus its `layerdb`
//!   entry, both measured once at registration and kept by the layer store
//!   (`LayerStore::on_disk`);
//! - an **image** costs its layers plus its config (`imagedb`); `SharedSize` is the part in
//!   layers that more than one image uses, and `LayersSize` counts every layer once plus every
//!   config;
//! - a **container** costs its read-write layer and its `layerdb/mounts` entry (measured by
//!   the layer store, `LayerStore::measure_rw`) and its directory (config, logs, hosts files),
//!   measured at each stop and kept in its record (see `sizes`);
//! - a **volume** costs what its driver stores for it (`VolumeDriver::usage`: the local
//!   driver's whole directory, kept by the driver and measured again when its last user
//!   unmounts it) and the engine's record of it.
//!
//! What is left (the data root's own directories, the driver's link directory, empty staging
//! directories) is a few pages, so the totals match `du` of the data root within a few KiB.

use std::path::{Path, PathBuf};

use strata_core::fsutil::usage::tree_usage;
use strata_core::store::Digest;

/// Allocated bytes of a path (file or tree); 0 when it does not exist.
pub fn allocated(path: &Path) -> u64 {
    tree_usage(path).map(|u| u.bytes).unwrap_or(0)
}

/// `<data-root>/image/<driver>`.
pub fn image_root(data_root: &Path, driver: &str) -> PathBuf {
    data_root.join("image").join(driver)
}

/// Allocated bytes of an image's own config files (not its layers).
pub fn image_config_bytes(image_root: &Path, id: &Digest) -> u64 {
    allocated(&image_root.join("imagedb/content/sha256").join(id.hex()))
        + allocated(&image_root.join("imagedb/metadata/sha256").join(id.hex()))
}
