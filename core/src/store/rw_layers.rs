//! Containers' read-write layers (Docker's RWLayer: `layerdb/mounts/<container>/`), created,
//! mounted and removed by the layer store that owns their parents, and the one way to get a
//! layer's tree mounted: a [`MountGuard`].

use std::path::Path;

use super::digest::Digest;
use super::layers::{LayerInfo, LayerStore, MountInfo};
use super::mount_guard::MountGuard;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::usage::tree_usage;
use crate::fsutil::{fsync_dir, remove_tree};
use crate::ids::LayerId;
use crate::layer::CreateOpts;

/// What a container's read-write layer costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RwLayerSize {
    /// Docker's SizeRw: bytes of file content changed in the layer.
    pub size_rw: u64,
    /// Allocated bytes: what the driver stores for the layer (a vfs layer is a full copy, an
    /// overlay2 layer only its changes) plus its `layerdb/mounts` entry.
    pub on_disk: u64,
}

impl LayerStore {
    /// Creates a container's read-write layer on `parent` (one driver layer, no init layer).
    pub async fn create_rw(
        &self,
        container: &str,
        parent: Option<&Digest>,
        opts: &CreateOpts,
    ) -> Result<MountInfo> {
        LayerId::new(container)?;
        if self.state().mounts.contains_key(container) {
            return Err(Error::AlreadyExists(format!(
                "read-write layer of container {container}"
            )));
        }
        let parent_info = parent.map(|p| self.acquire(p)).transpose()?;
        let mut staged = self.stage(parent).await?;
        let parent_cache = parent_info.as_ref().map(|p| p.cache_id.clone());
        let created = self
            .inner
            .driver
            .create(&staged.cache_id, parent_cache.as_ref(), opts)
            .await;
        let result = match created {
            Ok(()) => {
                let m = MountInfo {
                    container: container.to_string(),
                    mount_id: staged.cache_id.clone(),
                    parent: parent.cloned(),
                };
                staged.commit_mount(m).await
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            staged.discard().await;
        }
        result
    }

    pub fn get_rw(&self, container: &str) -> Option<MountInfo> {
        self.state().mounts.get(container).cloned()
    }

    pub fn mounts(&self) -> Vec<MountInfo> {
        self.state().mounts.values().cloned().collect()
    }

    /// Deletes a container's read-write layer (it must be unmounted) and releases its parent.
    /// Returns the image layers that went with it.
    pub async fn remove_rw(&self, container: &str) -> Result<Vec<LayerInfo>> {
        LayerId::new(container)?;
        let m = self.state().mounts.remove(container).ok_or_else(|| {
            Error::not_found(format!("read-write layer of container {container}"))
        })?;
        let dir = self.inner.root.join("mounts").join(container);
        let removing = self.inner.root.join("mounts").join(format!(
            "{container}-{}-removing",
            &LayerId::random()?.as_str()[..12]
        ));
        let (d, r) = (dir.clone(), removing.clone());
        tokio::task::spawn_blocking(move || {
            std::fs::rename(&d, &r).ctx("rename", &d)?;
            fsync_dir(r.parent().unwrap_or(Path::new("/")))
        })
        .await??;
        if let Err(e) = self.inner.driver.remove(&m.mount_id).await {
            // Keep the record so the caller can retry (for example after unmounting).
            let (d, r) = (dir, removing);
            tokio::task::spawn_blocking(move || std::fs::rename(&r, &d).ctx("rename", &r))
                .await??;
            self.state().mounts.insert(container.to_string(), m);
            return Err(e);
        }
        tokio::task::spawn_blocking(move || remove_tree(&removing)).await??;
        match &m.parent {
            Some(p) => self.release(p).await,
            None => Ok(Vec::new()),
        }
    }

    /// Mounts a container's read-write layer (its full tree, image included).
    pub async fn mount_rw(&self, container: &str) -> Result<MountGuard> {
        let m = self.get_rw(container).ok_or_else(|| {
            Error::not_found(format!("read-write layer of container {container}"))
        })?;
        MountGuard::mount(self, m.mount_id, None).await
    }

    /// Mounts a registered layer (its full tree), holding a reference on it while mounted.
    pub async fn mount_layer(&self, chain: &Digest) -> Result<MountGuard> {
        let info = self.acquire(chain)?;
        MountGuard::mount(self, info.cache_id, Some(chain.clone())).await
    }

    /// Mounts a driver layer this store is making (not yet registered).
    pub(super) async fn mount_staged(&self, id: &LayerId) -> Result<MountGuard> {
        MountGuard::mount(self, id.clone(), None).await
    }

    /// Removes the read-write layers that no owner claims: made for a container whose record
    /// was never written (a crash during create) or for a build step that never finished.
    /// `owned` says whether an owner exists for an id. Returns the ids removed.
    pub async fn remove_unowned_rw(&self, owned: impl Fn(&str) -> bool) -> Result<Vec<String>> {
        let orphans: Vec<String> = self
            .mounts()
            .into_iter()
            .map(|m| m.container)
            .filter(|c| !owned(c))
            .collect();
        for id in &orphans {
            tracing::info!(owner = %id, "removing a read-write layer that nothing owns");
            self.remove_rw(id).await?;
        }
        Ok(orphans)
    }

    /// Measures a container's read-write layer now (the caller decides when: a stopped
    /// container's layer does not change, so its figures can be kept).
    pub async fn measure_rw(&self, container: &str) -> Result<RwLayerSize> {
        let rw = self.get_rw(container).ok_or_else(|| {
            Error::not_found(format!("read-write layer of container {container}"))
        })?;
        let parent: Option<LayerId> = rw
            .parent
            .as_ref()
            .and_then(|p| self.get(p))
            .map(|l| l.cache_id);
        let driver = self.driver();
        let size_rw = driver.diff_size(&rw.mount_id, parent.as_ref()).await?;
        let layer = driver.usage(&rw.mount_id).await?.bytes;
        let entry = self.inner.root.join("mounts").join(container);
        let entry_bytes = tokio::task::spawn_blocking(move || tree_usage(&entry)).await??;
        Ok(RwLayerSize {
            size_rw,
            on_disk: layer + entry_bytes.bytes,
        })
    }
}
