//! The fuse-overlay layer driver: Strata's own overlay filesystem in userspace (see
//! DESIGN.md). `fs` is the filesystem (kernel overlay's on-disk format, served with `fuse3`),
//! `mount` serves it in-process, `driver` is the LayerDriver over overlay2's directory layout.

pub mod driver;
pub mod fs;
pub mod mount;

pub use driver::{init, FuseOverlayDriver, NAME};
pub use fs::{OverlayConfig, OverlayFs};
pub use mount::OverlayMount;
