//! The layer store: Docker's layerdb over any [`LayerDriver`].
//!
//! ```text
//! layerdb/sha256/<chainID-hex>/{diff,size,cache-id,parent,usage,tar-size,tar-split}
//! layerdb/mounts/<container>/{mount-id,parent}
//! layerdb/tmp/<cache-id>/        staging: `cache-id` is written (fsync) before the driver
//!                                 layer exists, everything else after; the directory is
//!                                 renamed into sha256/ or mounts/ only when complete
//! layerdb/sha256/<hex>-<rand>-removing, layerdb/mounts/<c>-<rand>-removing: being deleted
//! ```
//! Crash rule: after a crash at any moment there is either a whole layer or nothing. At open,
//! every staging directory and every `-removing` directory has its driver layer (named by its
//! `cache-id`/`mount-id`) removed and is deleted; since a driver layer is only ever created
//! after its staging record is durable, no driver layer is left that no entry owns.
//!
//! References: images and containers hold layers; a child layer and a container layer hold
//! their parent. A layer leaves the driver only when its count reaches zero.
//!
//! Containers' read-write layers (`mounts/`) are in `rw_layers.rs`, staging in `staged.rs`,
//! and every mount of a layer goes through a guard (`mount_guard.rs`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::digest::{chain_id, Digest};
use super::ingest::{Ingest, ProgressFn};
use super::layerdb_files::{find_leftovers, load_all};
use super::mount_guard::PendingUnmounts;
use super::staged::Staged;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::usage::tree_usage;
use crate::fsutil::{fsync_dir, remove_tree};
use crate::ids::LayerId;
use crate::layer::{CreateOpts, LayerDriver, TarStream, Usage};

/// Docker's limit on image depth.
pub const MAX_LAYER_DEPTH: usize = 125;

/// A registered (immutable) layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub chain_id: Digest,
    pub diff_id: Digest,
    pub parent: Option<Digest>,
    /// The driver's id for this layer.
    pub cache_id: LayerId,
    /// Bytes of file content the layer carries (the driver's `diff_size`), as Docker's `size`.
    pub size: u64,
    /// Bytes of the uncompressed layer tar.
    pub tar_size: u64,
    /// What the layer alone costs on disk, measured once at registration.
    pub usage: Usage,
    /// Layers below this one, this one included.
    pub depth: usize,
}

/// A container's read-write layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub container: String,
    pub mount_id: LayerId,
    pub parent: Option<Digest>,
}

/// Options of [`LayerStore::register`].
#[derive(Clone, Default)]
pub struct RegisterOpts {
    /// Refuse the layer (and keep nothing) unless its diffID is this.
    pub expected_diff_id: Option<Digest>,
    /// Uncompressed bytes read so far, for progress messages.
    pub progress: Option<ProgressFn>,
}

/// What [`LayerStore::register`] did. The caller holds one reference on `layer`.
#[derive(Debug, Clone)]
pub struct Registered {
    pub layer: LayerInfo,
    /// False when a layer with the same chain id existed and was reused.
    pub applied: bool,
}

pub(super) struct Entry {
    pub(super) info: LayerInfo,
    pub(super) refs: usize,
    /// Allocated bytes of the layer's `layerdb` entry (measured at registration and at open;
    /// an entry never changes once registered).
    pub(super) entry_bytes: u64,
}

#[derive(Default)]
pub(super) struct State {
    pub(super) layers: HashMap<Digest, Entry>,
    pub(super) mounts: HashMap<String, MountInfo>,
}

pub(super) struct Inner {
    pub(super) driver: Arc<dyn LayerDriver>,
    /// `layerdb`.
    pub(super) root: PathBuf,
    pub(super) state: Mutex<State>,
    pub(super) pending: Arc<PendingUnmounts>,
}

/// Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct LayerStore {
    pub(super) inner: Arc<Inner>,
}

impl LayerStore {
    /// Opens (creating if needed) `layerdb` under `image_root` (`<data-root>/image/<driver>`),
    /// finishing or undoing whatever a crash interrupted.
    pub async fn open(image_root: &Path, driver: Arc<dyn LayerDriver>) -> Result<Self> {
        let root = image_root.join("layerdb");
        for sub in ["sha256", "mounts", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        }
        let store = Self {
            inner: Arc::new(Inner {
                driver,
                root,
                state: Mutex::new(State::default()),
                pending: Default::default(),
            }),
        };
        store.recover().await?;
        let root = store.inner.root.clone();
        let (layers, mounts) = tokio::task::spawn_blocking(move || {
            let (layers, mounts) = load_all(&root)?;
            let sized: Vec<(LayerInfo, u64)> = layers
                .into_iter()
                .map(|info| {
                    let entry = root.join("sha256").join(info.chain_id.hex());
                    let bytes = tree_usage(&entry).map_or(0, |u| u.bytes);
                    (info, bytes)
                })
                .collect();
            Ok::<_, Error>((sized, mounts))
        })
        .await??;
        let mut state = store.state();
        for (info, entry_bytes) in layers {
            state.layers.insert(
                info.chain_id.clone(),
                Entry {
                    info,
                    refs: 0,
                    entry_bytes,
                },
            );
        }
        for m in mounts {
            state.mounts.insert(m.container.clone(), m);
        }
        let parents: Vec<Digest> = state
            .layers
            .values()
            .filter_map(|e| e.info.parent.clone())
            .chain(state.mounts.values().filter_map(|m| m.parent.clone()))
            .collect();
        for p in parents {
            match state.layers.get_mut(&p) {
                Some(e) => e.refs += 1,
                None => warn!(parent = %p, "layerdb names a parent layer that does not exist"),
            }
        }
        drop(state);
        Ok(store)
    }

    pub fn driver(&self) -> &Arc<dyn LayerDriver> {
        &self.inner.driver
    }

    pub(super) fn pending_unmounts(&self) -> Arc<PendingUnmounts> {
        self.inner.pending.clone()
    }

    /// Waits (at most `limit`) for the unmounts of dropped [`MountGuard`]s still in flight;
    /// false if some did not finish. The daemon calls it before its driver's cleanup.
    ///
    /// [`MountGuard`]: super::mount_guard::MountGuard
    pub async fn settle_unmounts(&self, limit: std::time::Duration) -> bool {
        self.inner.pending.settle(limit).await
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes staging leftovers and half-removed entries, with their driver layers.
    async fn recover(&self) -> Result<()> {
        let root = self.inner.root.clone();
        let leftovers = tokio::task::spawn_blocking(move || find_leftovers(&root)).await??;
        for (dir, driver_id) in leftovers {
            if let Some(id) = driver_id {
                if self.inner.driver.exists(&id).await? {
                    info!(layer = %id, "removing a driver layer left by an interrupted operation");
                    self.inner.driver.remove(&id).await?;
                }
            }
            tokio::task::spawn_blocking(move || remove_tree(&dir)).await??;
        }
        Ok(())
    }

    pub fn get(&self, chain: &Digest) -> Option<LayerInfo> {
        self.state().layers.get(chain).map(|e| e.info.clone())
    }

    pub fn exists(&self, chain: &Digest) -> bool {
        self.state().layers.contains_key(chain)
    }

    /// Every registered layer.
    pub fn layers(&self) -> Vec<LayerInfo> {
        self.state()
            .layers
            .values()
            .map(|e| e.info.clone())
            .collect()
    }

    /// What a layer costs on disk: what its driver stores for it plus its `layerdb` entry
    /// (the engine's accounting model; both measured once, when the layer was registered).
    pub fn on_disk(&self, chain: &Digest) -> Option<u64> {
        self.state()
            .layers
            .get(chain)
            .map(|e| e.info.usage.bytes + e.entry_bytes)
    }

    /// The current reference count of a layer (children, containers, images, callers).
    pub fn refs(&self, chain: &Digest) -> Option<usize> {
        self.state().layers.get(chain).map(|e| e.refs)
    }

    /// Whether some registered layer has `parent` as its parent (`None`: base layers).
    pub fn has_children(&self, parent: Option<&Digest>) -> bool {
        self.state()
            .layers
            .values()
            .any(|e| e.info.parent.as_ref() == parent)
    }

    /// The layers from the base up to `chain`.
    pub fn stack(&self, chain: &Digest) -> Result<Vec<LayerInfo>> {
        let state = self.state();
        let mut out = Vec::new();
        let mut next = Some(chain.clone());
        while let Some(c) = next {
            let e = state
                .layers
                .get(&c)
                .ok_or_else(|| Error::not_found(format!("layer {c}")))?;
            next = e.info.parent.clone();
            out.push(e.info.clone());
        }
        out.reverse();
        Ok(out)
    }

    /// Takes one more reference on a layer.
    pub fn acquire(&self, chain: &Digest) -> Result<LayerInfo> {
        let mut state = self.state();
        let e = state
            .layers
            .get_mut(chain)
            .ok_or_else(|| Error::not_found(format!("layer {chain}")))?;
        e.refs += 1;
        Ok(e.info.clone())
    }

    /// Drops one reference; layers nobody refers to any more are removed from the driver and
    /// from layerdb, parents included. Returns the removed layers, top first.
    pub async fn release(&self, chain: &Digest) -> Result<Vec<LayerInfo>> {
        let mut removed = Vec::new();
        let mut next = Some(chain.clone());
        while let Some(c) = next.take() {
            let store = self.clone();
            let doomed = tokio::task::spawn_blocking(move || store.drop_ref(&c)).await??;
            let Some((info, removing)) = doomed else {
                break;
            };
            self.inner.driver.remove(&info.cache_id).await?;
            tokio::task::spawn_blocking(move || remove_tree(&removing)).await??;
            debug!(chain = %info.chain_id, "layer removed");
            next = info.parent.clone();
            removed.push(info);
        }
        Ok(removed)
    }

    /// Drops one reference; at zero, renames the layer's entry to `-removing` and forgets it,
    /// both under the state lock, so a registration of the same chain id (which renames into
    /// the same name under that lock) never meets the entry half gone.
    fn drop_ref(&self, chain: &Digest) -> Result<Option<(LayerInfo, PathBuf)>> {
        let mut state = self.state();
        let e = state
            .layers
            .get_mut(chain)
            .ok_or_else(|| Error::not_found(format!("layer {chain}")))?;
        e.refs = e.refs.saturating_sub(1);
        if e.refs > 0 {
            return Ok(None);
        }
        let sha = self.inner.root.join("sha256");
        let dir = sha.join(chain.hex());
        let removing = sha.join(format!(
            "{}-{}-removing",
            chain.hex(),
            &LayerId::random()?.as_str()[..12]
        ));
        std::fs::rename(&dir, &removing).ctx("rename", &dir)?;
        fsync_dir(&sha)?;
        let info = state.layers.remove(chain).map(|e| e.info);
        Ok(info.map(|i| (i, removing)))
    }

    /// Releases every layer that has no reference at all (left by an interrupted load or
    /// commit once images have taken theirs). Returns what was removed.
    pub async fn release_unreferenced(&self) -> Result<Vec<LayerInfo>> {
        let mut removed = Vec::new();
        loop {
            let orphan = self
                .state()
                .layers
                .values()
                .find(|e| e.refs == 0)
                .map(|e| e.info.chain_id.clone());
            let Some(c) = orphan else { break };
            self.acquire(&c)?;
            removed.extend(self.release(&c).await?);
        }
        Ok(removed)
    }

    /// Applies `tar` (plain, gzip or zstd) as a new layer on `parent` and registers it under
    /// its chain id. If that chain id exists already the new copy is dropped and the existing
    /// layer returned. The caller holds one reference on the result.
    pub async fn register(
        &self,
        parent: Option<&Digest>,
        tar: TarStream,
        opts: RegisterOpts,
    ) -> Result<Registered> {
        let parent_info = parent.map(|p| self.acquire(p)).transpose()?;
        let mut staged = self.stage(parent).await?;
        match self
            .register_staged(&mut staged, parent_info, tar, opts)
            .await
        {
            Ok(r) => Ok(r),
            Err(e) => {
                staged.discard().await;
                Err(e)
            }
        }
    }

    async fn register_staged(
        &self,
        staged: &mut Staged,
        parent: Option<LayerInfo>,
        tar: TarStream,
        opts: RegisterOpts,
    ) -> Result<Registered> {
        let depth = parent.as_ref().map_or(0, |p| p.depth) + 1;
        if depth > MAX_LAYER_DEPTH {
            return Err(Error::invalid(format!(
                "an image may have at most {MAX_LAYER_DEPTH} layers"
            )));
        }
        let driver = self.inner.driver.clone();
        let parent_cache = parent.as_ref().map(|p| p.cache_id.clone());
        driver
            .create(
                &staged.cache_id,
                parent_cache.as_ref(),
                &CreateOpts::read_only(),
            )
            .await?;
        let mut ingest = Ingest::start(tar, opts.progress.clone());
        let stream = std::mem::replace(&mut ingest.stream, Box::pin(tokio::io::empty()));
        let applied = driver
            .apply_diff(&staged.cache_id, parent_cache.as_ref(), stream)
            .await;
        let outcome = ingest.finish(applied.is_ok()).await;
        let size = applied?;
        let outcome = outcome?;
        if let Some(expected) = &opts.expected_diff_id {
            if *expected != outcome.diff_id {
                return Err(Error::invalid(format!(
                    "layer content does not match its digest: expected {expected}, got {} \
                     (the archive is corrupt or was modified)",
                    outcome.diff_id
                )));
            }
        }
        let chain = chain_id(parent.as_ref().map(|p| &p.chain_id), &outcome.diff_id);
        // Taken in one step: a layer seen here but released before a second call would fail
        // the load instead of being applied anew.
        if let Ok(existing) = self.acquire(&chain) {
            debug!(%chain, "layer exists already; dropping the new copy");
            staged.discard().await;
            return Ok(Registered {
                layer: existing,
                applied: false,
            });
        }
        let usage = driver.usage(&staged.cache_id).await?;
        // Its content is on stable storage before layerdb names it.
        super::layer_sync::make_durable(self, &staged.cache_id).await?;
        let info = LayerInfo {
            chain_id: chain,
            diff_id: outcome.diff_id,
            parent: parent.map(|p| p.chain_id),
            cache_id: staged.cache_id.clone(),
            size,
            tar_size: outcome.tar_size,
            usage,
            depth,
        };
        let layer = staged.commit_layer(info, outcome.tar_split).await?;
        Ok(Registered {
            applied: layer.cache_id == staged.cache_id,
            layer,
        })
    }

    /// Starts a staged layer; gives the parent reference back if staging fails.
    pub(super) async fn stage(&self, parent: Option<&Digest>) -> Result<Staged> {
        match Staged::new(self.clone(), parent.cloned()).await {
            Ok(s) => Ok(s),
            Err(e) => {
                if let Some(p) = parent {
                    self.release(p).await?;
                }
                Err(e)
            }
        }
    }

    /// The path of the encoded tar-split of a layer, if it has one.
    pub(crate) fn tar_split_path(&self, chain: &Digest) -> PathBuf {
        self.inner
            .root
            .join("sha256")
            .join(chain.hex())
            .join("tar-split")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }
}
