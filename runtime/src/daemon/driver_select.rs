//! Picks the layer driver once, at start-up: the one named by `--storage-driver`, otherwise the
//! one whose layers the data root already holds, otherwise the first that works in priority
//! order. A data root keeps its driver: starting over it with another one is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata_core::registry::{DriverConfig, DriverRegistry};
use strata_core::{LayerDriver, StorageOpts};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(
        "the data root {root} holds layers of the storage driver {prior:?}, not {requested:?}. \
         Start stratad with --storage-driver {prior}, or use another --data-root, or delete \
         {root}/{prior} and {root}/image/{prior} to discard those layers and images"
    )]
    DriverMismatch {
        root: PathBuf,
        prior: String,
        requested: String,
    },
    #[error(
        "the data root {root} holds layers of several storage drivers ({found}); \
         choose one with --storage-driver"
    )]
    SeveralPrior { root: PathBuf, found: String },
    #[error("storage driver {name:?} failed to start: {source}")]
    Init {
        name: String,
        #[source]
        source: strata_core::Error,
    },
    #[error("no storage driver works on this host: {0}")]
    NoneWorks(String),
    #[error("{0}")]
    Unknown(strata_core::Error),
}

/// Drivers (built-in or plugin) whose image metadata (`image/<driver>/`) the data root holds.
/// A driver's own directory is not enough: a driver only tried at start-up may have left one.
pub fn prior_drivers(data_root: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(data_root.join("image"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| dir_has_entries(&e.path()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn dir_has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false)
}

pub async fn select_driver(
    registry: &DriverRegistry,
    plugins: &strata_plugin::PluginDirs,
    data_root: &Path,
    requested: Option<&str>,
    options: &StorageOpts,
) -> Result<Arc<dyn LayerDriver>, SelectError> {
    let prior = prior_drivers(data_root);
    let config = |name: &str| DriverConfig {
        root: data_root.join(name),
        options: options.clone(),
    };
    let open = |name: String| async move {
        if !registry.contains(&name) {
            // Not built in: a layer-driver plugin of that name, if one is installed.
            let opts: Vec<String> = options.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
            return match super::plugins::graph_driver(plugins, &name, data_root.join(&name), opts).await {
                Ok(Some(d)) => Ok(d),
                Ok(None) => Err(SelectError::Unknown(strata_core::Error::invalid(format!(
                    "unknown storage driver {name:?}: not built in ({}) and no plugin of that name in {}",
                    registry.names().collect::<Vec<_>>().join(", "),
                    plugins.sockets.iter().chain(&plugins.specs).map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                )))),
                Err(source) => Err(SelectError::Init { name, source }),
            };
        }
        registry
            .open(&name, config(&name))
            .await
            .map_err(|source| SelectError::Init { name, source })
    };

    if let Some(requested) = requested {
        if let Some(other) = prior.iter().find(|p| p.as_str() != requested) {
            return Err(SelectError::DriverMismatch {
                root: data_root.to_path_buf(),
                prior: other.clone(),
                requested: requested.to_string(),
            });
        }
        return open(requested.to_string()).await;
    }

    match prior.as_slice() {
        [one] => return open(one.clone()).await,
        [] => {}
        several => {
            return Err(SelectError::SeveralPrior {
                root: data_root.to_path_buf(),
                found: several.join(", "),
            })
        }
    }

    let mut failures = Vec::new();
    for name in registry.names() {
        match registry.open(name, config(name)).await {
            Ok(driver) => {
                tracing::info!(driver = name, "selected storage driver");
                return Ok(driver);
            }
            Err(e) => {
                tracing::info!(driver = name, "storage driver not usable here: {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    Err(SelectError::NoneWorks(failures.join("; ")))
}
