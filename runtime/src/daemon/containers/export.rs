//! Tars of a container's files streamed to a client (`docker export`, `docker cp` out): written
//! on a blocking thread while the mount is held, handed over in chunks, never buffered whole.

use std::io::{self, Write};

use bytes::Bytes;
use strata_core::Result;

use super::rootfs::{ChunkSender, MountedRoot};
use super::tar_tree::{write_tree, Top};
use super::Container;
use crate::daemon::Daemon;

/// Streams `top` (inside `root`) as a tar; the mount is released when the stream ends.
pub(crate) fn stream_tree(
    root: MountedRoot,
    top: Top,
) -> impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (mut tx, stream) = ChunkSender::new();
    tokio::task::spawn_blocking(move || {
        let result = write_tree(&mut tx, top).and_then(|()| tx.flush());
        if let Err(e) = result {
            if e.kind() != io::ErrorKind::BrokenPipe {
                tracing::warn!("writing a container tar: {e}");
                tx.fail(e);
            }
        }
        // Released before the stream ends, so the client's next request finds it free.
        root.release_blocking();
        drop(tx);
    });
    stream
}

/// `docker export`: the container's whole root filesystem.
pub async fn export(
    d: &Daemon,
    c: &Container,
) -> Result<impl futures::Stream<Item = io::Result<Bytes>> + Send + 'static> {
    let root = MountedRoot::mount(d, c).await?;
    let dir = root
        .scoped()
        .open_file("/", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let top = Top::Dir {
        dir: dir.into(),
        tar_name: String::new(),
    };
    Ok(stream_tree(root, top))
}
