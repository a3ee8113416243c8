//! The built-in drivers, in the order used when no driver is named: overlay2, btrfs (it refuses
//! roots not on btrfs), fuse-overlay, vfs.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use strata_core::registry::DriverRegistry;
use strata_core::volume::local::LocalVolumes;
use strata_core::VolumeDriver;

pub fn layer_drivers() -> DriverRegistry {
    let mut r = DriverRegistry::new();
    r.register("overlay2", Arc::new(strata_overlay2::init));
    r.register("btrfs", Arc::new(strata_btrfs::init));
    r.register("fuse-overlay", Arc::new(strata_fuse_overlay::init));
    r.register("vfs", Arc::new(strata_vfs::init));
    r
}

pub async fn volume_drivers(
    data_root: &Path,
) -> strata_core::Result<BTreeMap<String, Arc<dyn VolumeDriver>>> {
    let local = LocalVolumes::new(data_root.join("volumes")).await?;
    let mut map: BTreeMap<String, Arc<dyn VolumeDriver>> = BTreeMap::new();
    map.insert("local".into(), Arc::new(local));
    Ok(map)
}
