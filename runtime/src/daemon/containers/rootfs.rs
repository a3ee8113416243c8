//! A container's root filesystem held mounted for a file operation (cp, export), whether the
//! container runs or not: the driver's mount is reference counted, so a running container's
//! mount is shared and a stopped one's is made for us and released when we are done.
//!
//! What is seen is the layer's merged tree only: volumes, bind mounts and tmpfs mounts live in
//! the container's own mount namespace and are not part of it (see docs/api-coverage.md).

use std::io::{self, Write};
use std::sync::Arc;

use bytes::Bytes;
use strata_core::{LayerDriver, LayerId, Result};
use tokio::sync::mpsc;

use super::Container;
use crate::container::scoped_path::ScopedRoot;
use crate::daemon::Daemon;

/// One reference on the mount of a container's read-write layer; released on drop.
pub struct MountedRoot {
    driver: Arc<dyn LayerDriver>,
    layer: LayerId,
    /// The root's open fd; closed before the unmount (an open fd keeps the mount busy).
    scoped: Option<ScopedRoot>,
    handle: tokio::runtime::Handle,
    /// Set once released explicitly; Drop then has nothing to do.
    released: bool,
}

impl MountedRoot {
    pub async fn mount(d: &Daemon, c: &Container) -> Result<MountedRoot> {
        let layer = LayerId::new(c.record().rw_layer.clone())?;
        let path = d.driver.mount(&layer, "").await?;
        let scoped = match ScopedRoot::open(&path) {
            Ok(s) => s,
            Err(e) => {
                let _ = d.driver.unmount(&layer).await;
                return Err(e);
            }
        };
        Ok(MountedRoot {
            driver: d.driver.clone(),
            layer,
            scoped: Some(scoped),
            handle: tokio::runtime::Handle::current(),
            released: false,
        })
    }

    /// The root, for resolving container paths inside it.
    pub(crate) fn scoped(&self) -> &ScopedRoot {
        self.scoped
            .as_ref()
            .expect("the root is open until released")
    }
}

impl MountedRoot {
    /// Releases the mount and waits for it, so a `docker rm` right after the copy finds the
    /// layer free.
    pub async fn release(mut self) {
        self.released = true;
        self.scoped = None;
        if let Err(e) = self.driver.unmount(&self.layer).await {
            tracing::warn!(layer = %self.layer, "unmount after a file operation: {e}");
        }
    }

    /// [`Self::release`] from a blocking thread (never from async code).
    pub fn release_blocking(self) {
        let handle = self.handle.clone();
        handle.block_on(self.release());
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        self.scoped = None;
        let driver = self.driver.clone();
        let layer = self.layer.clone();
        // Drop may run on a blocking thread (a finished stream) or in async code: hand the
        // unmount to the runtime either way.
        self.handle.spawn(async move {
            if let Err(e) = driver.unmount(&layer).await {
                tracing::warn!(layer = %layer, "unmount after a file operation: {e}");
            }
        });
    }
}

/// A `Write` that hands its bytes to an async body in chunks; a gone receiver (the client
/// hung up) is a broken pipe, which stops the writer.
pub(crate) struct ChunkSender {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl ChunkSender {
    /// The writer and the stream of its chunks, for `Body::from_stream`.
    pub(crate) fn new() -> (
        ChunkSender,
        impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::channel(4);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            ChunkSender {
                tx,
                buf: Vec::with_capacity(CHUNK),
            },
            stream,
        )
    }

    /// Ends the stream with an error, so the client sees a broken transfer, not a short one.
    pub(crate) fn fail(&self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}
