//! A layer being created: its staging directory under `layerdb/tmp/` and its driver layer,
//! both removed unless the layer is committed (into `sha256/` as an image layer, or into
//! `mounts/` as a container's read-write layer). See `layers.rs` for the crash rule.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::digest::Digest;
use super::layerdb_files::write_layer_files;
use super::layers::{Entry, LayerInfo, LayerStore, MountInfo};
use super::write_file_synced;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::usage::tree_usage;
use crate::fsutil::{fsync_dir, remove_tree};
use crate::ids::LayerId;

/// A layer being created: its staging directory and driver layer, removed unless committed.
pub(super) struct Staged {
    store: LayerStore,
    pub(super) cache_id: LayerId,
    dir: PathBuf,
    /// The parent reference taken for the new layer (handed over on commit).
    parent: Option<Digest>,
    done: bool,
}

impl Staged {
    pub(super) async fn new(store: LayerStore, parent: Option<Digest>) -> Result<Self> {
        let cache_id = LayerId::random()?;
        let dir = store.tmp_dir().join(cache_id.as_str());
        let staged = Self {
            store,
            cache_id: cache_id.clone(),
            dir: dir.clone(),
            parent,
            done: false,
        };
        let made = tokio::task::spawn_blocking(move || {
            std::fs::create_dir(&dir).ctx("create directory", &dir)?;
            write_file_synced(&dir.join("cache-id"), cache_id.as_str().as_bytes())?;
            fsync_dir(&dir)?;
            fsync_dir(dir.parent().unwrap_or(Path::new("/")))
        })
        .await
        .map_err(Error::from)
        .and_then(|r| r);
        match made {
            Ok(()) => Ok(staged),
            Err(e) => {
                // Nothing was staged: the caller still owns the parent reference and gives it
                // back (`stage`); this one must not release it a second time when dropped.
                let mut staged = staged;
                staged.parent = None;
                staged.done = true;
                let dir = staged.dir.clone();
                let _ = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
                Err(e)
            }
        }
    }

    pub(super) async fn commit_layer(
        &mut self,
        info: LayerInfo,
        tar_split: Vec<u8>,
    ) -> Result<LayerInfo> {
        let dir = self.dir.clone();
        let meta = info.clone();
        let entry_bytes = tokio::task::spawn_blocking(move || {
            write_layer_files(&dir, &meta, &tar_split)?;
            Ok::<_, Error>(tree_usage(&dir)?.bytes)
        })
        .await??;
        let store = self.store.clone();
        let dir = self.dir.clone();
        let committed = tokio::task::spawn_blocking(move || {
            let mut state = store.state();
            if let Some(e) = state.layers.get_mut(&info.chain_id) {
                // Registered by someone else while we applied: reuse theirs.
                e.refs += 1;
                return Ok::<_, Error>((e.info.clone(), false));
            }
            let target = store.inner.root.join("sha256").join(info.chain_id.hex());
            std::fs::rename(&dir, &target).ctx("rename", &target)?;
            fsync_dir(&store.inner.root.join("sha256"))?;
            state.layers.insert(
                info.chain_id.clone(),
                Entry {
                    info: info.clone(),
                    refs: 1,
                    entry_bytes,
                },
            );
            Ok((info, true))
        })
        .await??;
        if committed.1 {
            self.done = true;
        } else {
            self.discard().await;
        }
        Ok(committed.0)
    }

    pub(super) async fn commit_mount(&mut self, m: MountInfo) -> Result<MountInfo> {
        let store = self.store.clone();
        let dir = self.dir.clone();
        let mount = m.clone();
        tokio::task::spawn_blocking(move || {
            write_file_synced(&dir.join("mount-id"), mount.mount_id.as_str().as_bytes())?;
            fsync_dir(&dir)?;
            std::fs::remove_file(dir.join("cache-id")).ctx("remove", &dir)?;
            if let Some(p) = &mount.parent {
                write_file_synced(&dir.join("parent"), p.as_str().as_bytes())?;
            }
            fsync_dir(&dir)?;
            let mut state = store.state();
            if state.mounts.contains_key(&mount.container) {
                return Err(Error::AlreadyExists(format!(
                    "read-write layer of container {}",
                    mount.container
                )));
            }
            let target = store.inner.root.join("mounts").join(&mount.container);
            std::fs::rename(&dir, &target).ctx("rename", &target)?;
            fsync_dir(&store.inner.root.join("mounts"))?;
            state.mounts.insert(mount.container.clone(), mount);
            Ok(())
        })
        .await??;
        self.done = true;
        Ok(m)
    }

    /// Removes the driver layer and the staging directory, and gives back the parent reference.
    pub(super) async fn discard(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let driver = self.store.inner.driver.clone();
        if matches!(driver.exists(&self.cache_id).await, Ok(true)) {
            if let Err(e) = driver.remove(&self.cache_id).await {
                warn!(layer = %self.cache_id, error = %e, "could not remove a discarded layer; it goes at next start");
                return;
            }
        }
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
        if let Some(p) = self.parent.take() {
            if let Err(e) = self.store.release(&p).await {
                warn!(parent = %p, error = %e, "could not release a parent layer");
            }
        }
    }
}

impl Drop for Staged {
    /// A dropped registration (its future cancelled) cleans up in the background; a crash
    /// leaves the staging record, which `open` cleans.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut rest = Staged {
            store: self.store.clone(),
            cache_id: self.cache_id.clone(),
            dir: self.dir.clone(),
            parent: self.parent.take(),
            done: false,
        };
        self.done = true;
        handle.spawn(async move { rest.discard().await });
    }
}
