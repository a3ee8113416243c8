//! What containerd mounts for a snapshot. A driver that describes its mount
//! ([`LayerDriver::mount_spec`]: overlay2's overlay, its base layers' binds) lets containerd
//! mount it and this process holds nothing. Any other driver (vfs and btrfs directories,
//! fuse-overlay's FUSE filesystem, plugins) is mounted here through [`LayerDriver::mount`],
//! held while the snapshot lives, and handed to containerd as a bind mount of that path.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots::api::types::Mount;
use strata_core::{LayerDriver, LayerId, MountSpec};
use tokio::sync::Mutex;

use crate::error::Result;

/// Driver mounts taken for snapshots, by snapshot key; at most one per key.
pub struct Holds {
    driver: Arc<dyn LayerDriver>,
    held: Mutex<HashMap<String, (LayerId, String)>>,
}

impl Holds {
    pub fn new(driver: Arc<dyn LayerDriver>) -> Self {
        Self {
            driver,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The mounts of snapshot `key`, whose tree is layer `layer`.
    pub async fn mounts(&self, key: &str, layer: &LayerId, read_only: bool) -> Result<Vec<Mount>> {
        if let Some(spec) = self.driver.mount_spec(layer, read_only).await? {
            return Ok(vec![to_mount(spec)]);
        }
        let mut held = self.held.lock().await;
        let path = match held.get(key) {
            Some((_, path)) => path.clone(),
            None => {
                let path = self.driver.mount(layer, "").await?;
                let path = path.to_string_lossy().into_owned();
                held.insert(key.to_string(), (layer.clone(), path.clone()));
                path
            }
        };
        Ok(vec![bind(path, read_only)])
    }

    /// Gives back the driver mount taken for `key`, if any.
    pub async fn release(&self, key: &str) -> Result<()> {
        let taken = self.held.lock().await.remove(key);
        if let Some((layer, _)) = taken {
            self.driver.unmount(&layer).await?;
        }
        Ok(())
    }

    /// Gives back every driver mount (shutdown).
    pub async fn release_all(&self) {
        let all: Vec<_> = self.held.lock().await.drain().collect();
        for (key, (layer, _)) in all {
            if let Err(e) = self.driver.unmount(&layer).await {
                tracing::warn!(key, %layer, "releasing the mount: {e}");
            }
        }
    }
}

fn to_mount(spec: MountSpec) -> Mount {
    Mount {
        r#type: spec.fs_type,
        source: spec.source,
        target: String::new(),
        options: spec.options,
    }
}

fn bind(source: String, read_only: bool) -> Mount {
    Mount {
        r#type: "bind".into(),
        source,
        target: String::new(),
        options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
    }
}
