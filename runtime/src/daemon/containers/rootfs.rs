//! A container's root filesystem held mounted for a file operation (cp, export), whether the
//! container runs or not: the layer store's mount is reference counted, so a running
//! container's mount is shared and a stopped one's is made for us and released when we are
//! done.
//!
//! What is seen is the layer's merged tree only: volumes, bind mounts and tmpfs mounts live in
//! the container's own mount namespace and are not part of it (see docs/api-coverage.md).

use std::io::{self, Write};

use bytes::Bytes;
use strata_core::store::MountGuard;
use strata_core::Result;
use tokio::sync::mpsc;

use super::Container;
use crate::container::scoped_path::ScopedRoot;
use crate::daemon::Daemon;

/// A mount of a container's read-write layer with its root open for scoped lookups; the
/// mount is the layer store's guard, released on drop.
pub struct MountedRoot {
    /// The root's open fd; closed before the unmount (an open fd keeps the mount busy).
    scoped: Option<ScopedRoot>,
    mount: Option<MountGuard>,
}

impl MountedRoot {
    pub async fn mount(d: &Daemon, c: &Container) -> Result<MountedRoot> {
        let id = c.record().id.clone();
        let mount = d.layers.mount_rw(&id).await?;
        let scoped = match ScopedRoot::open(mount.path()) {
            Ok(s) => s,
            Err(e) => {
                let _ = mount.release().await;
                return Err(e);
            }
        };
        Ok(MountedRoot {
            scoped: Some(scoped),
            mount: Some(mount),
        })
    }

    /// The root, for resolving container paths inside it.
    pub(crate) fn scoped(&self) -> &ScopedRoot {
        self.scoped
            .as_ref()
            .expect("the root is open until released")
    }

    /// Releases the mount and waits for it, so a `docker rm` right after the copy finds the
    /// layer free.
    pub async fn release(mut self) {
        self.scoped = None;
        if let Some(m) = self.mount.take() {
            // The guard logs a failed unmount.
            let _ = m.release().await;
        }
    }

    /// [`Self::release`] from a blocking thread (never from async code).
    pub fn release_blocking(mut self) {
        self.scoped = None;
        if let Some(m) = self.mount.take() {
            let _ = m.release_blocking();
        }
    }
}

impl Drop for MountedRoot {
    fn drop(&mut self) {
        // The fd first: the guard's unmount (in the background) needs the mount unused.
        self.scoped = None;
        self.mount = None;
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
