//! Reference-counted mounts. The driver supplies the real steps ([`MountOps`]); the kit counts
//! references and serialises the steps per layer: the first `acquire` mounts, later ones share
//! the mount, the last `release` unmounts, and a mount and an unmount of the same layer never
//! run at once. Different layers mount in parallel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;

use crate::error::Result;
use crate::ids::LayerId;

use super::layers::Layers;

/// The real mount and unmount of one layer, given its record. Called with the layer's mount
/// lock held, so never twice at once for one layer.
#[async_trait]
pub trait MountOps<R: Sync>: Send + Sync + 'static {
    /// What a live mount keeps (a FUSE session, nothing).
    type Handle: Send + 'static;

    /// Makes the layer's tree visible; called for the first reference only.
    async fn mount(&self, id: &LayerId, record: &R) -> Result<(PathBuf, Self::Handle)>;

    /// Takes the mount down; called when the last reference goes. On an error the layer stays
    /// mounted with one reference.
    async fn unmount(
        &self,
        id: &LayerId,
        record: &R,
        path: &Path,
        handle: &mut Self::Handle,
    ) -> Result<()>;
}

/// For drivers whose layer directory is its tree (vfs, btrfs): a layer "mounts" at
/// `<dir>/<id>` with nothing mounted; the count only guards `remove`.
#[derive(Debug, Clone)]
pub struct InPlace(pub PathBuf);

#[async_trait]
impl<R: Sync> MountOps<R> for InPlace {
    type Handle = ();

    async fn mount(&self, id: &LayerId, _record: &R) -> Result<(PathBuf, ())> {
        Ok((self.0.join(id.as_str()), ()))
    }

    async fn unmount(&self, _: &LayerId, _: &R, _: &Path, _: &mut ()) -> Result<()> {
        Ok(())
    }
}

/// One layer's live mount, if any; its mutex is what serialises mount and unmount.
pub(super) type Slot<H> = tokio::sync::Mutex<Option<Active<H>>>;

pub(super) struct Active<H> {
    path: PathBuf,
    handle: H,
    count: usize,
}

/// One reference counted in `refs` before the real mount finished: given back unless kept,
/// so a cancelled or failed `acquire` cannot leave the layer looking busy.
struct PendingRef<'a, R: Clone, H> {
    layers: &'a Layers<R, H>,
    id: &'a LayerId,
    kept: bool,
}

impl<R: Clone, H> Drop for PendingRef<'_, R, H> {
    fn drop(&mut self) {
        if !self.kept {
            self.layers.drop_ref(self.id);
        }
    }
}

impl<R: Clone + Send + Sync + 'static, H: Send + 'static> Layers<R, H> {
    /// Mounts `id` (or counts one more user of its mount) and returns its tree.
    pub async fn acquire<O>(&self, id: &LayerId, ops: &O) -> Result<PathBuf>
    where
        O: MountOps<R, Handle = H>,
    {
        let (slot, record) = {
            let mut index = self.lock();
            let e = index
                .entries
                .get_mut(id)
                .filter(|e| e.is_ready())
                .ok_or_else(|| self.not_found(id))?;
            e.refs += 1;
            (Arc::clone(&e.slot), e.record.clone())
        };
        let mut pending = PendingRef {
            layers: self,
            id,
            kept: false,
        };
        let record = record.ok_or_else(|| self.not_found(id))?;
        let mut active = slot.lock().await;
        if let Some(a) = active.as_mut() {
            a.count += 1;
            pending.kept = true;
            return Ok(a.path.clone());
        }
        let (path, handle) = ops.mount(id, &record).await?;
        *active = Some(Active {
            path: path.clone(),
            handle,
            count: 1,
        });
        pending.kept = true;
        Ok(path)
    }

    /// Releases one `acquire`; the last one unmounts. Releasing a layer that is not mounted
    /// is not an error (Docker's Put is idempotent); an unknown layer is.
    pub async fn release<O>(&self, id: &LayerId, ops: &O) -> Result<()>
    where
        O: MountOps<R, Handle = H>,
    {
        let (slot, record) = {
            let index = self.lock();
            let e = index.entries.get(id).ok_or_else(|| self.not_found(id))?;
            (Arc::clone(&e.slot), e.record.clone())
        };
        let mut active = slot.lock().await;
        let Some(a) = active.as_mut() else {
            tracing::debug!(layer = %id, "unmount of a layer that is not mounted");
            return Ok(());
        };
        if a.count == 1 {
            let record = record.ok_or_else(|| self.not_found(id))?;
            ops.unmount(id, &record, &a.path, &mut a.handle).await?;
            *active = None;
        } else {
            a.count -= 1;
        }
        drop(active);
        self.drop_ref(id);
        Ok(())
    }

    /// [`Self::acquire`] tied to a guard that releases it; the guard owns what it needs, so it
    /// may outlive the call (a diff stream).
    pub async fn hold<O>(&self, id: &LayerId, ops: &Arc<O>) -> Result<Held>
    where
        O: MountOps<R, Handle = H>,
    {
        let path = self.acquire(id, ops.as_ref()).await?;
        let (layers, ops, held_id) = (self.clone(), Arc::clone(ops), id.clone());
        Ok(Held {
            path,
            id: id.clone(),
            release: Some(Box::new(move || {
                Box::pin(async move { layers.release(&held_id, ops.as_ref()).await })
            })),
        })
    }

    /// [`Self::acquire`] for a driver written as blocking code: waits on this thread, so call
    /// it from a blocking thread (a [`super::BlockingLayerDriver`] method) only.
    pub fn acquire_blocking<O>(&self, id: &LayerId, ops: &O) -> Result<PathBuf>
    where
        O: MountOps<R, Handle = H>,
    {
        futures::executor::block_on(self.acquire(id, ops))
    }

    /// [`Self::release`] from a blocking thread (see [`Self::acquire_blocking`]).
    pub fn release_blocking<O>(&self, id: &LayerId, ops: &O) -> Result<()>
    where
        O: MountOps<R, Handle = H>,
    {
        futures::executor::block_on(self.release(id, ops))
    }

    /// [`Self::hold`] from a blocking thread (see [`Self::acquire_blocking`]).
    pub fn hold_blocking<O>(&self, id: &LayerId, ops: &Arc<O>) -> Result<Held>
    where
        O: MountOps<R, Handle = H>,
    {
        futures::executor::block_on(self.hold(id, ops))
    }

    /// Unmounts every mounted layer whatever its count (daemon shutdown). Tries them all and
    /// returns the first error.
    pub async fn release_all<O>(&self, ops: &O) -> Result<()>
    where
        O: MountOps<R, Handle = H>,
    {
        let slots: Vec<_> = {
            let index = self.lock();
            index
                .entries
                .iter()
                .map(|(id, e)| (id.clone(), Arc::clone(&e.slot), e.record.clone()))
                .collect()
        };
        let mut first_error = None;
        for (id, slot, record) in slots {
            let mut active = slot.lock().await;
            let (Some(a), Some(record)) = (active.as_mut(), record) else {
                continue;
            };
            match ops.unmount(&id, &record, &a.path, &mut a.handle).await {
                Ok(()) => {
                    let count = a.count;
                    *active = None;
                    let mut index = self.lock();
                    if let Some(e) = index.entries.get_mut(&id) {
                        e.refs = e.refs.saturating_sub(count);
                    }
                }
                Err(e) => {
                    tracing::warn!(layer = %id, "unmount at cleanup: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether `id` has a mount reference (or one being taken).
    pub fn is_mounted(&self, id: &LayerId) -> bool {
        self.lock().entries.get(id).is_some_and(|e| e.refs > 0)
    }

    /// How many layers are mounted.
    pub fn mounted(&self) -> usize {
        self.lock().entries.values().filter(|e| e.refs > 0).count()
    }
}

impl<R: Clone, H> Layers<R, H> {
    pub(super) fn drop_ref(&self, id: &LayerId) {
        if let Some(e) = self.lock().entries.get_mut(id) {
            e.refs = e.refs.saturating_sub(1);
        }
    }
}

type ReleaseFn = Box<dyn FnOnce() -> BoxFuture<'static, Result<()>> + Send>;

/// A mount reference held for as long as some work needs the tree. Release it with
/// [`Held::release`] (async code) or [`Held::release_blocking`] (on a blocking thread); a guard
/// dropped unreleased is released by a task spawned on the current runtime.
pub struct Held {
    pub path: PathBuf,
    id: LayerId,
    release: Option<ReleaseFn>,
}

impl Held {
    pub async fn release(mut self) -> Result<()> {
        match self.release.take() {
            Some(f) => f().await,
            None => Ok(()),
        }
    }

    /// Releases from blocking code: waits on this thread, so never call it on an async worker.
    pub fn release_blocking(mut self) -> Result<()> {
        match self.release.take() {
            Some(f) => futures::executor::block_on(f()),
            None => Ok(()),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let Some(f) = self.release.take() else {
            return;
        };
        let id = self.id.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if let Err(e) = f().await {
                        tracing::warn!(layer = %id, "releasing a held mount: {e}");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(layer = %id, "a held mount was dropped outside a runtime; its reference stays")
            }
        }
    }
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish()
    }
}
