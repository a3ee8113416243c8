//! Out-of-process drivers over Docker's plugin protocols (JSON over HTTP on a unix socket):
//! both sides. [`GraphDriverPlugin`] and [`VolumeDriverPlugin`] make a plugin an ordinary
//! `Arc<dyn LayerDriver>` / `Arc<dyn VolumeDriver>`; [`server::serve`] turns any
//! implementation of those traits into a plugin. See docs/writing-a-driver.md.

pub mod discovery;
pub mod errors;
pub mod graph_client;
pub mod server;
pub mod tls;
pub mod transport;
pub mod volume_client;
pub mod wire;

pub use discovery::{FoundPlugin, PluginDirs};
pub use graph_client::GraphDriverPlugin;
pub use server::{serve, serve_at, serve_tls, GraphFactory, PluginServer};
pub use transport::{PluginAddr, Timeouts, Transport};
pub use volume_client::VolumeDriverPlugin;

#[cfg(test)]
mod docker_wire_tests;
#[cfg(test)]
mod tests;
