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
//!
//! `plugin-vfs` and `plugin-loopvol` are drivers served in process by core's `PluginServer`
//! on a socket in each case's environment and driven through core's plugin clients, so the
//! suite proves the protocol's both sides with a real driver behind them (see [`crate::plugin`]).
//!
//! `snapshotter-DRIVER` runs the cases through containerd's Snapshots API against a
//! strata-snapshotter served in process on each case's root (see [`crate::snapshots`]).

use std::path::PathBuf;
use std::sync::Arc;

use strata_core::registry::DriverConfig;
use strata_core::volume::local::LocalVolumes;
use strata_core::{StorageOpts, VolumeDriver};
use strata_plugin::GraphFactory;
use strata_plugin_examples::loopvol::LoopVolumes;

use crate::env::{DriverFactory, LayerFactory, LoopFs, VolumeDriverFactory, VolumeFactory};
use crate::plugin::{GraphPluginFactory, VolumePluginFactory};
use crate::snapshots::SnapshotterFactory;

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
        GraphPluginFactory::in_process("plugin-vfs", vfs_plugin()).into_arc(),
        // The same cases through containerd's Snapshots API, a strata-snapshotter per case.
        SnapshotterFactory::in_process("vfs").into_arc(),
        SnapshotterFactory::in_process("overlay2").into_arc(),
        SnapshotterFactory::in_process("btrfs").into_arc(),
        // Not fuse-overlay: the snapshotter mounts its FUSE filesystem for every live active
        // snapshot (containerd gets a bind of it) and holds it until Commit or Remove, which
        // the suite's "nothing mounted after cleanup()" check counts against the driver.
        // snapshotter/tests cover fuse-overlay under containerd and through the API.
    ]
}

/// What `strata-vfs-plugin` serves: vfs on the home and options of `GraphDriver.Init`.
fn vfs_plugin() -> GraphFactory {
    Arc::new(|home: PathBuf, opts: Vec<String>| {
        Box::pin(async move {
            let options = StorageOpts::parse(&opts)?;
            strata_vfs::init(DriverConfig {
                root: home,
                options,
            })
            .await
        })
    })
}

/// Every built-in volume driver, as the volume suite runs it.
pub fn volume_factories() -> Vec<Arc<dyn VolumeFactory>> {
    vec![
        VolumeDriverFactory::new("local", |root| async move {
            let driver: Arc<dyn VolumeDriver> = Arc::new(LocalVolumes::new(root).await?);
            Ok(driver)
        })
        .with_local_options()
        .into_arc(),
        VolumePluginFactory::in_process("plugin-loopvol", |root| async move {
            let driver = tokio::task::spawn_blocking(move || LoopVolumes::new(root)).await??;
            let driver: Arc<dyn VolumeDriver> = Arc::new(driver);
            Ok(driver)
        })
        .into_arc(),
    ]
}

/// The built-in layer driver called `name`.
pub fn builtin(name: &str) -> Option<Arc<dyn DriverFactory>> {
    layer_factories().into_iter().find(|f| f.name() == name)
}

/// The built-in volume driver called `name`.
pub fn builtin_volume(name: &str) -> Option<Arc<dyn VolumeFactory>> {
    volume_factories().into_iter().find(|f| f.name() == name)
}
