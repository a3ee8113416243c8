//! Strata core: the contracts every storage driver implements and the machinery they share.
//!
//! Drivers know nothing of containers or images; they store trees of files by id. Anything two
//! drivers would both need (archive handling, naive diff, id validation, sizes) lives here once.

pub mod archive;
pub mod driverkit;
pub mod error;
pub mod fsutil;
pub mod ids;
pub mod layer;
pub mod naive;
pub mod options;
pub mod registry;
pub mod rfc3339;
pub mod store;
pub mod stream;
#[cfg(any(test, feature = "test-driver"))]
pub mod testing;
pub mod volume;

pub use error::{Error, IoContext, Result};
pub use ids::{CallerId, LayerId, VolumeName};
pub use layer::{
    Capabilities, Change, ChangeKind, CreateOpts, LayerDriver, LayerKind, MountSpec, TarStream,
    Usage,
};
pub use options::StorageOpts;
pub use volume::{VolumeCapabilities, VolumeDriver, VolumeInfo, VolumeScope};
