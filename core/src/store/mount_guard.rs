//! A mounted layer as a value: [`MountGuard`] holds one driver mount (and, for an image layer,
//! one reference on it) and gives both back when released or dropped. The layer store hands
//! out mounted paths only this way, so no caller has to remember an unmount in its error
//! branches.
//!
//! Drop cannot wait, so a dropped guard unmounts in a task on the runtime it was made on; the
//! store counts those tasks, and the daemon waits for them ([`LayerStore::settle_unmounts`])
//! before its driver's shutdown cleanup, so none is lost when the daemon stops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;
use tracing::warn;

use super::digest::Digest;
use super::layers::LayerStore;
use crate::error::Result;
use crate::ids::LayerId;

/// Unmounts handed to the runtime by dropped guards and not finished yet.
pub(super) struct PendingUnmounts {
    count: watch::Sender<usize>,
}

impl Default for PendingUnmounts {
    fn default() -> Self {
        Self {
            count: watch::channel(0).0,
        }
    }
}

impl PendingUnmounts {
    fn begin(&self) {
        self.count.send_modify(|n| *n += 1);
    }

    fn end(&self) {
        self.count.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Waits until no dropped guard's unmount is in flight; false if `limit` passed first.
    pub(super) async fn settle(&self, limit: Duration) -> bool {
        let mut rx = self.count.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// One mount of a layer. [`MountGuard::release`] unmounts and waits; dropping the guard
/// unmounts in the background.
pub struct MountGuard {
    store: LayerStore,
    layer: LayerId,
    path: PathBuf,
    /// The image layer reference taken for this mount, given back after the unmount.
    held: Option<Digest>,
    handle: tokio::runtime::Handle,
    released: bool,
}

impl std::fmt::Debug for MountGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountGuard")
            .field("layer", &self.layer)
            .field("path", &self.path)
            .finish()
    }
}

impl MountGuard {
    /// Mounts driver layer `layer`; `held` is a layer reference the guard owns from now on
    /// (given back here if the mount fails).
    pub(super) async fn mount(
        store: &LayerStore,
        layer: LayerId,
        held: Option<Digest>,
    ) -> Result<MountGuard> {
        match store.driver().mount(&layer, "").await {
            Ok(path) => Ok(MountGuard {
                store: store.clone(),
                layer,
                path,
                held,
                handle: tokio::runtime::Handle::current(),
                released: false,
            }),
            Err(e) => {
                if let Some(chain) = held {
                    if let Err(e) = store.release(&chain).await {
                        warn!(%chain, "could not release a layer after a failed mount: {e}");
                    }
                }
                Err(e)
            }
        }
    }

    /// Where the layer's tree is visible while the guard lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The driver layer mounted.
    pub fn layer(&self) -> &LayerId {
        &self.layer
    }

    /// Unmounts and waits for it (so, for example, a removal right after finds the layer
    /// free), then gives back the layer reference the mount held.
    pub async fn release(mut self) -> Result<()> {
        self.released = true;
        let held = self.held.take();
        unmount(&self.store, &self.layer, held).await
    }

    /// [`Self::release`] from a blocking thread (never from async code).
    pub fn release_blocking(self) -> Result<()> {
        let handle = self.handle.clone();
        handle.block_on(self.release())
    }
}

async fn unmount(store: &LayerStore, layer: &LayerId, held: Option<Digest>) -> Result<()> {
    let unmounted = store.driver().unmount(layer).await;
    if let Err(e) = &unmounted {
        warn!(%layer, "unmount failed: {e}");
    }
    if let Some(chain) = held {
        store.release(&chain).await?;
    }
    unmounted
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.released = true;
        let store = self.store.clone();
        let layer = self.layer.clone();
        let held = self.held.take();
        let pending = store.pending_unmounts();
        pending.begin();
        // Drop may run on a blocking thread (a finished stream) or in async code: the unmount
        // goes to the runtime either way, counted until it is done.
        self.handle.spawn(async move {
            let _ = unmount(&store, &layer, held).await;
            pending.end();
        });
    }
}
