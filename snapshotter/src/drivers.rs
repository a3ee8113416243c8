//! The layer driver behind the snapshotter: a built-in by name, or a graphdriver plugin socket
//! through core's plugin client. Either way the snapshotter sees only `LayerDriver`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::registry::{DriverConfig, DriverRegistry};
use strata_core::{LayerDriver, Result, StorageOpts};
use strata_plugin::{GraphDriverPlugin, PluginAddr, Transport};

/// The four built-in drivers, as stratad registers them.
pub fn builtins() -> DriverRegistry {
    let mut r = DriverRegistry::new();
    r.register("overlay2", Arc::new(strata_overlay2::init));
    r.register("btrfs", Arc::new(strata_btrfs::init));
    r.register("fuse-overlay", Arc::new(strata_fuse_overlay::init));
    r.register("vfs", Arc::new(strata_vfs::init));
    r
}

/// Where the layers come from.
#[derive(Debug, Clone)]
pub enum DriverSource {
    Builtin(String),
    /// A graphdriver plugin's unix socket; its home is the snapshotter's layer directory.
    Plugin(PathBuf),
}

impl DriverSource {
    /// The name containerd knows the snapshotter by, without the `strata-` prefix.
    pub fn name(&self) -> String {
        match self {
            DriverSource::Builtin(n) => n.clone(),
            DriverSource::Plugin(p) => p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into()),
        }
    }

    /// Opens the driver with its data in `layers` (a directory the caller created).
    pub async fn open(&self, layers: &Path, options: &[String]) -> Result<Arc<dyn LayerDriver>> {
        match self {
            DriverSource::Builtin(name) => {
                let config = DriverConfig {
                    root: layers.to_path_buf(),
                    options: StorageOpts::parse(options)?,
                };
                builtins().open(name, config).await
            }
            DriverSource::Plugin(socket) => {
                let transport = Transport::new(self.name(), PluginAddr::Unix(socket.clone()));
                let plugin =
                    GraphDriverPlugin::connect(transport, layers.to_path_buf(), options.to_vec())
                        .await?;
                Ok(Arc::new(plugin))
            }
        }
    }
}
