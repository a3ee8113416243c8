//! What a layer case works with: the driver, its environment, and helpers that keep track of
//! every mount so the runner can undo them whatever happens to the case.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_core::stream::{from_bytes, read_all};
use strata_core::{CreateOpts, LayerDriver, LayerId};

use crate::env::{DriverFactory, Environment};
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::{self, Snapshot};

/// A case's handle on its driver. Cheap to clone; all clones share the mount bookkeeping.
#[derive(Clone)]
pub struct Ctx {
    inner: Arc<Inner>,
}

struct Inner {
    factory: Arc<dyn DriverFactory>,
    env: Arc<dyn Environment>,
    driver: Mutex<Arc<dyn LayerDriver>>,
    /// Mounts made through [`Ctx::mount`] and not yet released, per layer.
    mounts: Mutex<BTreeMap<LayerId, usize>>,
    next_id: AtomicU64,
}

impl Ctx {
    pub(crate) fn new(
        factory: Arc<dyn DriverFactory>,
        env: Arc<dyn Environment>,
        driver: Arc<dyn LayerDriver>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                factory,
                env,
                driver: Mutex::new(driver),
                mounts: Mutex::new(BTreeMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn driver(&self) -> Arc<dyn LayerDriver> {
        self.inner
            .driver
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The driver's root.
    pub fn root(&self) -> &Path {
        self.inner.env.root()
    }

    /// The suite's own directory, outside the driver root.
    pub fn scratch(&self) -> &Path {
        self.inner.env.scratch()
    }

    /// A fresh, readable layer id: `LABEL-N`.
    pub fn id(&self, label: &str) -> LayerId {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        LayerId::new(format!("{label}-{n}")).expect("suite labels are valid ids")
    }

    pub async fn create(
        &self,
        label: &str,
        parent: Option<&LayerId>,
        opts: CreateOpts,
    ) -> CaseResult<LayerId> {
        let id = self.id(label);
        self.driver()
            .create(&id, parent, &opts)
            .await
            .step(&format!("create {id} (parent {parent:?}, {:?})", opts.kind))?;
        Ok(id)
    }

    pub async fn create_rw(&self, label: &str, parent: Option<&LayerId>) -> CaseResult<LayerId> {
        self.create(label, parent, CreateOpts::read_write()).await
    }

    pub async fn create_ro(&self, label: &str, parent: Option<&LayerId>) -> CaseResult<LayerId> {
        self.create(label, parent, CreateOpts::read_only()).await
    }

    /// Mounts through the driver and records it, so the runner can release it on failure.
    pub async fn mount(&self, id: &LayerId) -> CaseResult<PathBuf> {
        let path = self
            .driver()
            .mount(id, "")
            .await
            .step(&format!("mount {id}"))?;
        *self.lock_mounts().entry(id.clone()).or_insert(0) += 1;
        Ok(path)
    }

    pub async fn unmount(&self, id: &LayerId) -> CaseResult<()> {
        self.driver()
            .unmount(id)
            .await
            .step(&format!("unmount {id}"))?;
        let mut mounts = self.lock_mounts();
        if let Some(n) = mounts.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                mounts.remove(id);
            }
        }
        Ok(())
    }

    fn lock_mounts(&self) -> std::sync::MutexGuard<'_, BTreeMap<LayerId, usize>> {
        self.inner.mounts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mounts `id`, runs `ops` on the mount path (on a blocking thread), unmounts.
    pub async fn modify<F>(&self, id: &LayerId, ops: F) -> CaseResult<()>
    where
        F: FnOnce(&Path) -> io::Result<()> + Send + 'static,
    {
        let path = self.mount(id).await?;
        let outcome = on_dir(&path, ops)
            .await
            .step(&format!("changing layer {id} through its mount"));
        self.unmount(id).await?;
        outcome
    }

    /// A read-write layer on `parent`, changed through its mount by `ops`.
    pub async fn build_rw<F>(
        &self,
        label: &str,
        parent: Option<&LayerId>,
        ops: F,
    ) -> CaseResult<LayerId>
    where
        F: FnOnce(&Path) -> io::Result<()> + Send + 'static,
    {
        let id = self.create_rw(label, parent).await?;
        self.modify(&id, ops).await?;
        Ok(id)
    }

    /// A new, empty reference directory (mode 0755, owned by root, like a layer root).
    pub async fn reference(&self, label: &str) -> CaseResult<PathBuf> {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let dir = self.scratch().join(format!("ref-{label}-{n}"));
        tree::ops::mkdir(&dir, 0o755).step("making a reference directory")?;
        tree::ops::chown(&dir, 0, 0)?;
        Ok(dir)
    }

    /// The snapshot of a layer, taken through a mount.
    pub async fn snapshot_layer(&self, id: &LayerId) -> CaseResult<Snapshot> {
        let path = self.mount(id).await?;
        let snap = snapshot_of(&path)
            .await
            .step(&format!("reading layer {id}"));
        self.unmount(id).await?;
        snap
    }

    /// Fails unless layer `id` (mounted) is exactly `expected`.
    pub async fn expect_tree(
        &self,
        id: &LayerId,
        expected: &Snapshot,
        what: &str,
    ) -> CaseResult<()> {
        let got = self.snapshot_layer(id).await?;
        expected
            .compare(&got, &format!("{what} (layer {id})"))
            .map_err(Failure::new)
    }

    pub async fn diff_bytes(&self, id: &LayerId, parent: Option<&LayerId>) -> CaseResult<Vec<u8>> {
        let what = format!("diff {id} against {parent:?}");
        let stream = self.driver().diff(id, parent).await.step(&what)?;
        read_all(stream).await.step(&what)
    }

    /// Checks `upper` both ways: its own mount equals `expected`, and its diff against
    /// `parent`, applied to a fresh read-only child of `parent` (an image-style layer), gives
    /// the same tree; `apply_diff`'s returned size must equal `diff_size`.
    pub async fn expect_tree_both_ways(
        &self,
        upper: &LayerId,
        parent: Option<&LayerId>,
        expected: &Snapshot,
        what: &str,
    ) -> CaseResult<LayerId> {
        self.expect_tree(upper, expected, what).await?;
        let tar = self.diff_bytes(upper, parent).await?;
        let size = self
            .driver()
            .diff_size(upper, parent)
            .await
            .step(&format!("diff_size {upper} against {parent:?}"))?;
        let applied_id = self.create_ro("applied", parent).await?;
        let applied = self
            .driver()
            .apply_diff(&applied_id, parent, from_bytes(tar))
            .await
            .step(&format!(
                "{what}: apply_diff of {upper}'s diff onto a fresh child of {parent:?}"
            ))?;
        crate::ensure!(
            applied == size,
            "{what}: apply_diff returned {applied} bytes but diff_size of {upper} says {size}"
        );
        self.expect_tree(
            &applied_id,
            expected,
            &format!("{what}, rebuilt from its diff"),
        )
        .await?;
        Ok(applied_id)
    }

    /// Drops the current driver and opens a new one on the same root (a daemon restart).
    /// Callers must drop their own clones of the old driver first.
    pub async fn reopen(&self) -> CaseResult<Arc<dyn LayerDriver>> {
        let new = self
            .inner
            .factory
            .open(self.root())
            .await
            .step("opening a second driver on the same root")?;
        *self.inner.driver.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        self.lock_mounts().clear();
        Ok(new)
    }

    /// Releases every mount the case left behind (the runner calls this after each case).
    pub(crate) async fn release_mounts(&self) -> Vec<String> {
        let left: Vec<(LayerId, usize)> = std::mem::take(&mut *self.lock_mounts())
            .into_iter()
            .collect();
        let driver = self.driver();
        let mut errors = Vec::new();
        for (id, n) in left {
            for _ in 0..n {
                if let Err(e) = driver.unmount(&id).await {
                    errors.push(format!("unmount {id} after the case: {e}"));
                }
            }
        }
        errors
    }
}

/// Runs blocking tree operations on `dir`.
pub async fn on_dir<F>(dir: &Path, ops: F) -> CaseResult<()>
where
    F: FnOnce(&Path) -> io::Result<()> + Send + 'static,
{
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || ops(&dir))
        .await?
        .map_err(Failure::from)
}

/// Takes a snapshot on a blocking thread.
pub async fn snapshot_of(dir: &Path) -> CaseResult<Snapshot> {
    let dir = dir.to_path_buf();
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || tree::snapshot(&dir))
        .await?
        .map_err(|e| Failure::new(format!("reading the tree at {shown}: {e}")))
}

/// Applies `ops` to a fresh reference directory and returns its snapshot.
pub async fn reference_snapshot<F>(
    ctx: &Ctx,
    label: &str,
    ops: F,
) -> CaseResult<(PathBuf, Snapshot)>
where
    F: FnOnce(&Path) -> io::Result<()> + Send + 'static,
{
    let dir = ctx.reference(label).await?;
    on_dir(&dir, ops)
        .await
        .step("building the reference tree")?;
    let snap = snapshot_of(&dir).await?;
    Ok((dir, snap))
}
