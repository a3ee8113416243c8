//! The driver kit: what every layer driver needs besides its filesystem, written once.
//!
//! - [`Layers`]: the layer index (parent chains, children, the create and remove protocol) with
//!   reference-counted mounts ([`MountOps`] supplies the real mount and unmount; the kit counts
//!   and serialises them per layer). `remove` is refused (`Busy`) while a layer is mounted or
//!   has a child, under the same lock that counts mounts. The index lives in memory; each
//!   driver loads it at open from its own on-disk records, or from a [`RecordDir`].
//! - [`Blocking`] and [`run_blocking`]: a driver written as blocking code
//!   ([`BlockingLayerDriver`]) becomes an async [`crate::LayerDriver`].
//! - [`layer_size`] and [`crate::StorageOpts::flag`]/[`crate::StorageOpts::bytes`]: options.
//!
//! Drivers outside the tree may use it too; see docs/writing-a-driver.md.

mod blocking;
mod layers;
mod mounts;
mod options;
mod records;

pub use blocking::{run_blocking, Blocking, BlockingLayerDriver};
pub use layers::{Creating, Layers, Removing};
pub use mounts::{Held, InPlace, MountOps};
pub use options::layer_size;
pub use records::{LayerRecord, RecordDir};

#[cfg(test)]
mod tests;
