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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::digest::{chain_id, Digest};
use super::ingest::{Ingest, ProgressFn};
use super::layerdb_files::{find_leftovers, load_all, write_layer_files};
use super::write_file_synced;
use crate::error::{Error, IoContext, Result};
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

struct Entry {
    info: LayerInfo,
    refs: usize,
}

#[derive(Default)]
struct State {
    layers: HashMap<Digest, Entry>,
    mounts: HashMap<String, MountInfo>,
}

struct Inner {
    driver: Arc<dyn LayerDriver>,
    root: PathBuf,
    state: Mutex<State>,
}

/// Cheap to clone; all clones share one store.
#[derive(Clone)]
pub struct LayerStore {
    inner: Arc<Inner>,
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
            }),
        };
        store.recover().await?;
        let root = store.inner.root.clone();
        let (layers, mounts) = tokio::task::spawn_blocking(move || load_all(&root)).await??;
        let mut state = store.state();
        for info in layers {
            state
                .layers
                .insert(info.chain_id.clone(), Entry { info, refs: 0 });
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

    fn state(&self) -> MutexGuard<'_, State> {
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
            &LayerId::random().as_str()[..12]
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
        super::layer_sync::make_durable(&driver, &staged.cache_id).await?;
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
    async fn stage(&self, parent: Option<&Digest>) -> Result<Staged> {
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
            &LayerId::random().as_str()[..12]
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

/// A layer being created: its staging directory and driver layer, removed unless committed.
struct Staged {
    store: LayerStore,
    cache_id: LayerId,
    dir: PathBuf,
    /// The parent reference taken for the new layer (handed over on commit).
    parent: Option<Digest>,
    done: bool,
}

impl Staged {
    async fn new(store: LayerStore, parent: Option<Digest>) -> Result<Self> {
        let cache_id = LayerId::random();
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

    async fn commit_layer(&mut self, info: LayerInfo, tar_split: Vec<u8>) -> Result<LayerInfo> {
        let dir = self.dir.clone();
        let meta = info.clone();
        tokio::task::spawn_blocking(move || write_layer_files(&dir, &meta, &tar_split)).await??;
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

    async fn commit_mount(&mut self, m: MountInfo) -> Result<MountInfo> {
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
    async fn discard(&mut self) {
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
