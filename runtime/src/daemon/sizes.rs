//! Container sizes for `ps -s`, inspect and `system df`. Image layers are sized by the layer
//! store once, when registered. A container is measured (its read-write layer by the layer
//! store, its own directory here) each time it stops and after a copy into it while stopped,
//! and the figures are kept in its record (a stopped container does not change otherwise, so
//! they stay exact across restarts of the daemon); one never started is measured on first
//! use and cached. A running container is measured on demand and cached for [`RUNNING_TTL`]
//! (the documented staleness).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_core::store::LayerStore;
use strata_core::Result;

pub const RUNNING_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerSize {
    /// Docker's SizeRw: bytes of file content changed in the container's layer.
    pub size_rw: u64,
    /// What the container really occupies on this driver (allocated bytes of its layer, its
    /// layerdb entry and its directory; a vfs layer is a full copy, an overlay2 layer only
    /// its changes).
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
        own_dir: PathBuf,
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
        let size = measure(container, layers, own_dir).await?;
        if let Ok(mut e) = self.entries.lock() {
            e.insert(container.to_string(), (Instant::now(), size));
        }
        Ok(size)
    }
}

/// Measures a container now: its read-write layer (the layer store's figures) plus, for
/// `on_disk`, its own directory (config, logs, hosts files; see `accounting`).
pub async fn measure(
    container: &str,
    layers: &LayerStore,
    own_dir: PathBuf,
) -> Result<ContainerSize> {
    if layers.get_rw(container).is_none() {
        return Ok(ContainerSize::default());
    }
    let rw = layers.measure_rw(container).await?;
    let files = tokio::task::spawn_blocking(move || super::accounting::allocated(&own_dir)).await?;
    Ok(ContainerSize {
        size_rw: rw.size_rw,
        on_disk: rw.on_disk + files,
    })
}
