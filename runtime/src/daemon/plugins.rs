//! Plugins the daemon can use: found by name in the plugin directories, activated to learn
//! what they implement (for `info`), and connected on first use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use strata_core::{Error, LayerDriver, Result, VolumeDriver};
use strata_plugin::wire::ActivateReply;
use strata_plugin::{GraphDriverPlugin, PluginDirs, Timeouts, Transport, VolumeDriverPlugin};

/// Plugins seen at start-up, by what they implement.
#[derive(Debug, Clone, Default)]
pub struct PluginInventory {
    pub graph: Vec<String>,
    pub volume: Vec<String>,
}

fn transport(found: &strata_plugin::FoundPlugin) -> Transport {
    Transport::new(found.name.clone(), found.addr.clone())
}

/// Asks every discovered plugin what it implements, briefly: a dead plugin is left out.
pub async fn inventory(dirs: &PluginDirs) -> PluginInventory {
    let mut inv = PluginInventory::default();
    for name in dirs.names() {
        let Ok(Some(found)) = dirs.find(&name) else {
            continue;
        };
        let t = Transport {
            timeouts: Timeouts {
                connect_retry: Duration::ZERO,
                call: Duration::from_secs(2),
            },
            ..transport(&found)
        };
        match t
            .call::<_, ActivateReply>("Plugin.Activate", &serde_json::json!({}))
            .await
        {
            Ok(reply) => {
                if reply.implements.iter().any(|i| i == "GraphDriver") {
                    inv.graph.push(name.clone());
                }
                if reply.implements.iter().any(|i| i == "VolumeDriver") {
                    inv.volume.push(name.clone());
                }
            }
            Err(e) => tracing::warn!(plugin = %name, "plugin does not answer: {e}"),
        }
    }
    inv
}

/// The layer-driver plugin `name`, given `home` (`<data-root>/<name>`).
pub async fn graph_driver(
    dirs: &PluginDirs,
    name: &str,
    home: PathBuf,
    options: Vec<String>,
) -> Result<Option<Arc<dyn LayerDriver>>> {
    let Some(found) = dirs.find(name)? else {
        return Ok(None);
    };
    std::fs::create_dir_all(&home).map_err(|e| Error::io("create", &home, e))?;
    let plugin = GraphDriverPlugin::connect(transport(&found), home, options).await?;
    Ok(Some(Arc::new(plugin)))
}

/// The volume plugin `name`.
pub async fn volume_driver(dirs: &PluginDirs, name: &str) -> Result<Option<Arc<dyn VolumeDriver>>> {
    let Some(found) = dirs.find(name)? else {
        return Ok(None);
    };
    let scope = found.scope.clone();
    let plugin = VolumeDriverPlugin::connect(transport(&found), scope).await?;
    Ok(Some(Arc::new(plugin)))
}
