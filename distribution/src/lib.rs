//! Strata's registry client: the OCI distribution spec and Docker's registry v2 API.
//!
//! - [`reference`]: image names normalised as Docker does (`busybox` is
//!   `docker.io/library/busybox:latest`).
//! - [`manifest`]: Docker schema2 and OCI manifests, manifest lists and indexes, platform
//!   choice.
//! - [`auth`]: credentials (`X-Registry-Auth`) and `WWW-Authenticate` challenges.
//! - [`transport`]: HTTPS with system roots and `certs.d` CAs; insecure registries.
//! - [`client`]: one registry's `/v2/` API with the Basic/Bearer auth flow.
//! - [`blob`]: blob streams verified against their digest while they stream.
//! - [`metadata`]: which blobs a layer was pulled from or pushed as.
//!
//! The engine's pull and push (`strata-runtime`'s `image::pull` and `image::push`) are built
//! on these.

pub mod auth;
pub mod blob;
pub mod client;
pub mod error;
pub mod manifest;
pub mod metadata;
pub mod reference;
pub mod transport;

pub use auth::AuthConfig;
pub use client::{FetchedManifest, Registry};
pub use error::{DistError, Result};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, Manifest, Platform};
pub use metadata::{BlobMetadata, BlobSource};
pub use reference::ImageRef;
pub use transport::ClientConfig;
