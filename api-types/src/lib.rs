//! The Docker Engine API models Strata serves (API 1.47, see `runtime/src/api/version.rs`),
//! shared by `stratad` and the `strata` CLI.
//!
//! # Own types, not `bollard-stubs`
//!
//! `bollard-stubs` (1.47.1-rc.27.3.1 matches our API version) is generated from the swagger
//! file: every field is an `Option` skipped when `None`, so a reply built from it cannot say
//! `"Entrypoint": null` or `"Labels": {}` the way moby's Go structs do, and the docker CLI and
//! SDKs are tested against the exact shape stratad sends today. Its request models would also
//! accept (and drop) fields we must refuse. These types follow moby's Go structs instead:
//! a field without `omitempty` in Go is always written (`null` for a missing list or map),
//! one with `omitempty` is skipped when empty, and JSON names are Go's.
//!
//! Requests: fields Docker's API has but Strata does not implement are typed too, so
//! [`unsupported::unsupported_field`] can refuse them by name when set to anything but their
//! default; fields Docker's API does not have are ignored, as Docker ignores them.

pub mod container;
pub mod create;
pub mod humanize;
pub mod image;
pub mod mount;
pub mod progress;
pub mod serde_util;
pub mod system;
pub mod unsupported;
pub mod volume;

pub use create::{Config, ContainerCreateRequest, HealthConfig, HostConfig, LogConfig};
pub use mount::Mount;
