//! Container sizes for `ps -s`, inspect and `system df`. Image layers are sized once, when
//! registered (the layer store keeps it). A container's read-write layer is measured each time
//! the container stops and the figures are kept in its record (a stopped container cannot
//! change, so they stay exact across restarts of the daemon); one never started is measured
//! on first use and cached. A running container is measured on demand and cached for
//! [`RUNNING_TTL`] (the documented staleness).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_core::store::LayerStore;
use strata_core::{LayerDriver, LayerId, Result};

pub const RUNNING_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSize {
    /// Docker's SizeRw: bytes of file content changed in the container's layer.
    pub size_rw: u64,
    /// What the layer really occupies on this driver (allocated bytes; a vfs layer is a full
    /// copy, an overlay2 layer only its changes).
    pub on_disk: u64,
}

#[derive(Default)]
pub struct SizeCache {
    entries: Mutex<HashMap<String, (Instant, ContainerSize)>>,
}

impl SizeCache {
    pub fn invalidate(&self, container: &str) {
        if let Ok(mut e) = self.entries.lock() {
            e.remove(container);
        }
    }

    pub async fn get(
        &self,
        container: &str,
        running: bool,
        recorded: Option<ContainerSize>,
        layers: &LayerStore,
        driver: &dyn LayerDriver,
        extra: Vec<std::path::PathBuf>,
    ) -> Result<ContainerSize> {
        if let (false, Some(size)) = (running, recorded) {
            return Ok(size);
        }
        if let Ok(e) = self.entries.lock() {
            if let Some((at, size)) = e.get(container) {
                if !running || at.elapsed() < RUNNING_TTL {
                    return Ok(*size);
                }
            }
        }
        let size = measure(container, layers, driver, extra).await?;
        if let Ok(mut e) = self.entries.lock() {
            e.insert(container.to_string(), (Instant::now(), size));
        }
        Ok(size)
    }
}

/// Measures a container now: its read-write layer, plus (for `on_disk`) its own files in
/// `extra` (its directory and layerdb entry; see `accounting`).
pub async fn measure(
    container: &str,
    layers: &LayerStore,
    driver: &dyn LayerDriver,
    extra: Vec<std::path::PathBuf>,
) -> Result<ContainerSize> {
    let Some(rw) = layers.get_rw(container) else {
        return Ok(ContainerSize::default());
    };
    let parent: Option<LayerId> = rw
        .parent
        .as_ref()
        .and_then(|p| layers.get(p))
        .map(|l| l.cache_id);
    let size_rw = driver.diff_size(&rw.mount_id, parent.as_ref()).await?;
    let layer = driver.usage(&rw.mount_id).await?.bytes;
    let files: u64 = tokio::task::spawn_blocking(move || {
        extra.iter().map(|p| super::accounting::allocated(p)).sum()
    })
    .await?;
    Ok(ContainerSize {
        size_rw,
        on_disk: layer + files,
    })
}
