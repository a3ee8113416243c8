//! THE one place where drivers join the conformance suite. Both the test target
//! (`tests/conformance.rs`, one test per `DRIVER::CASE`) and the `strata-conformance` binary
//! read these lists.
//!
//! To add a layer driver, add one line to [`layer_factories`]:
//! ```text
//! LayerFactory::from_init("overlay2", strata_overlay2::init)
//!     .on_loop_fs(LoopFs::xfs_pquota()).into_arc(),
//! LayerFactory::from_init("btrfs", strata_btrfs::init).on_loop_fs(LoopFs::btrfs()).into_arc(),
//! ```
//! (and the driver crate to this crate's `[dependencies]`). The name must be what
//! `--storage-driver` takes and what the driver's `name()` returns. `on_loop_fs` gives every
//! case a fresh loop-mounted filesystem as the driver root; without it the root is a plain
//! temporary directory. A driver that cannot open (missing kernel feature or tool) fails all
//! its cases: it is never skipped.
//!
//! Volume drivers go in [`volume_factories`] the same way.

use std::sync::Arc;

use strata_core::volume::local::LocalVolumes;
use strata_core::VolumeDriver;

use crate::env::{DriverFactory, LayerFactory, LoopFs, VolumeDriverFactory, VolumeFactory};

/// Every built-in layer driver, as the suite runs it.
pub fn layer_factories() -> Vec<Arc<dyn DriverFactory>> {
    vec![
        LayerFactory::from_init("vfs", strata_vfs::init).into_arc(),
        LayerFactory::from_init("btrfs", strata_btrfs::init)
            .on_loop_fs(LoopFs::btrfs())
            .into_arc(),
        // Plain temp dir: this CI kernel has no XFS quota (CONFIG_XFS_QUOTA), so a pquota mount fails.
        LayerFactory::from_init("overlay2", strata_overlay2::init).into_arc(),
        LayerFactory::from_init("overlay2-naive", strata_overlay2::init_naive).into_arc(),
        LayerFactory::from_init("fuse-overlay", strata_fuse_overlay::init).into_arc(),
    ]
}

/// Every built-in volume driver, as the volume suite runs it.
pub fn volume_factories() -> Vec<Arc<dyn VolumeFactory>> {
    vec![VolumeDriverFactory::new("local", |root| async move {
        let driver: Arc<dyn VolumeDriver> = Arc::new(LocalVolumes::new(root).await?);
        Ok(driver)
    })
    .with_local_options()
    .into_arc()]
}

/// The built-in layer driver called `name`.
pub fn builtin(name: &str) -> Option<Arc<dyn DriverFactory>> {
    layer_factories().into_iter().find(|f| f.name() == name)
}

/// The built-in volume driver called `name`.
pub fn builtin_volume(name: &str) -> Option<Arc<dyn VolumeFactory>> {
    volume_factories().into_iter().find(|f| f.name() == name)
}
