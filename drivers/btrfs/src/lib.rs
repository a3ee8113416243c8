//! The btrfs layer driver (see DESIGN.md): a subvolume per layer at `subvolumes/<id>` under
//! `<data-root>/btrfs`, children as snapshots of their parent, sizes and `size=` through
//! qgroups. Subvolume operations go through libbtrfsutil (a thin FFI binding of our own),
//! qgroups through the kernel's ioctls.

mod driver;
mod ffi;
mod layout;
pub mod qgroup;
pub mod subvol;
mod usage;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use futures::future::BoxFuture;
use strata_core::registry::DriverConfig;
use strata_core::{LayerDriver, Result};

pub use driver::{open, Btrfs, BtrfsDriver, NAME};

/// The registry's constructor: opens the driver on `config.root` (`<data-root>/btrfs`).
pub fn init(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let driver = open(config.root, config.options).await?;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}
