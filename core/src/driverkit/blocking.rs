//! Blocking code behind the async [`LayerDriver`] trait. [`run_blocking`] is the one
//! `spawn_blocking` wrapper; [`Blocking`] turns a driver written as plain blocking code
//! ([`BlockingLayerDriver`]) into a `LayerDriver` by running each call on the blocking pool.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::Result;
use crate::ids::LayerId;
use crate::layer::{Capabilities, Change, CreateOpts, LayerDriver, MountSpec, TarStream, Usage};
use crate::stream;

/// Runs `f` on tokio's blocking pool (file trees, syscalls, ioctls) and returns its result.
pub async fn run_blocking<T, F>(f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f).await?
}

/// [`LayerDriver`] as blocking calls; every method runs on a blocking thread. The rules of
/// `LayerDriver` apply unchanged.
pub trait BlockingLayerDriver: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn capabilities(&self) -> Capabilities;
    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()>;
    fn remove(&self, id: &LayerId) -> Result<()>;
    fn exists(&self, id: &LayerId) -> Result<bool>;
    fn mount(&self, id: &LayerId, mount_label: &str) -> Result<PathBuf>;
    fn unmount(&self, id: &LayerId) -> Result<()>;
    fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let _ = (id, read_only);
        Ok(None)
    }
    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;
    /// Starts the diff (checks, mounts) and returns the stream; the tar itself is written
    /// later, e.g. by [`stream::blocking_chunk_stream`].
    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream>;
    /// Applies the tar read from `tar` (plain, gzip or zstd); returns the content bytes.
    fn apply_diff(&self, id: &LayerId, parent: Option<&LayerId>, tar: &mut dyn Read)
        -> Result<u64>;
    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;
    fn usage(&self, id: &LayerId) -> Result<Usage>;
    fn status(&self) -> Result<Vec<(String, String)>>;
    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>>;
    fn cleanup(&self) -> Result<()>;
}

/// A [`BlockingLayerDriver`] as a [`LayerDriver`].
pub struct Blocking<D>(Arc<D>);

impl<D: BlockingLayerDriver> Blocking<D> {
    pub fn new(driver: Arc<D>) -> Self {
        Self(driver)
    }

    /// The wrapped driver, for calls beyond the trait.
    pub fn driver(&self) -> &Arc<D> {
        &self.0
    }

    /// Runs `f` with the driver on a blocking thread.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&D) -> Result<T> + Send + 'static,
    {
        let d = Arc::clone(&self.0);
        run_blocking(move || f(&d)).await
    }
}

/// The wrapped driver's own methods (a quota query, its root) are reachable through `Deref`;
/// the `LayerDriver` methods of the wrapper come first for names they share.
impl<D> std::ops::Deref for Blocking<D> {
    type Target = D;

    fn deref(&self) -> &D {
        &self.0
    }
}

/// Owned copies of an id and an optional parent, for moving into a blocking call.
fn owned(id: &LayerId, parent: Option<&LayerId>) -> (LayerId, Option<LayerId>) {
    (id.clone(), parent.cloned())
}

#[async_trait]
impl<D: BlockingLayerDriver> LayerDriver for Blocking<D> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        let ((id, parent), opts) = (owned(id, parent), opts.clone());
        self.call(move |d| d.create(&id, parent.as_ref(), &opts))
            .await
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.call(move |d| d.remove(&id)).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        let id = id.clone();
        self.call(move |d| d.exists(&id)).await
    }

    async fn mount(&self, id: &LayerId, mount_label: &str) -> Result<PathBuf> {
        let (id, label) = (id.clone(), mount_label.to_string());
        self.call(move |d| d.mount(&id, &label)).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.call(move |d| d.unmount(&id)).await
    }

    async fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let id = id.clone();
        self.call(move |d| d.mount_spec(&id, read_only)).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let (id, parent) = owned(id, parent);
        self.call(move |d| d.changes(&id, parent.as_ref())).await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let (id, parent) = owned(id, parent);
        self.call(move |d| d.diff(&id, parent.as_ref())).await
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        let ((id, parent), d) = (owned(id, parent), Arc::clone(&self.0));
        stream::with_blocking_reader(tar, move |r| d.apply_diff(&id, parent.as_ref(), r)).await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let (id, parent) = owned(id, parent);
        self.call(move |d| d.diff_size(&id, parent.as_ref())).await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let id = id.clone();
        self.call(move |d| d.usage(&id)).await
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        self.call(|d| d.status()).await
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = id.clone();
        self.call(move |d| d.metadata(&id)).await
    }

    async fn cleanup(&self) -> Result<()> {
        self.call(|d| d.cleanup()).await
    }
}
