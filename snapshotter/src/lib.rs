//! Every Strata layer driver as a containerd snapshotter: containerd's
//! `containerd.services.snapshots.v1.Snapshots` gRPC service on a unix socket, backed by any
//! `LayerDriver` (a built-in by name or a graphdriver plugin), with its metadata in redb.

pub mod client;
pub mod df;
pub mod drivers;
pub mod error;
pub mod filters;
pub mod meta;
pub mod mounts;
pub mod recovery;
pub mod server;
pub mod service;

pub use containerd_snapshots::api;
pub use error::{Result, SnapError};
pub use service::StrataSnapshotter;
