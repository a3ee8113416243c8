//! Reads an image archive (plain or gzip) sequentially on a blocking thread and hands its
//! entries to the async loader one at a time: small metadata files whole, layers as streams
//! that flow straight from the archive into the layer store. Nothing is copied to disk here.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use strata_core::layer::TarStream;
use strata_core::store::ingest::decompressed;
use strata_core::{Error, Result};
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::manifest::normalize;

/// Entries at most this big that look like JSON (or are named like metadata) are read whole.
const SMALL_LIMIT: u64 = 16 << 20;
/// Layer bytes travel to the layer store in chunks of this size, at most `QUEUE` in flight:
/// big chunks mean few thread wake-ups on the way (a 300 MB layer is ~300 hand-offs).
const CHUNK: usize = 1024 * 1024;
const QUEUE: usize = 8;

/// Reports `(archive path, bytes read, entry size)` while a layer entry streams.
pub type LayerBytesFn = Arc<LayerBytesCallback>;
pub type LayerBytesCallback = dyn Fn(&str, u64, u64) + Send + Sync;

pub enum Event {
    /// A metadata file (manifest, config, index, `json`, `repositories`), whole.
    Small { path: String, data: Vec<u8> },
    /// A symlink or hard link inside the archive; `target` is normalized to an archive path.
    Link { path: String, target: String },
    /// A layer (or other large blob), streamed. Dropping `body` skips the rest of the entry.
    Layer {
        path: String,
        size: u64,
        body: TarStream,
    },
}

/// Starts reading `input`; events arrive on the receiver, then the join handle tells how the
/// read ended (a truncated or corrupt archive is an error there, and inside the layer stream
/// being read at the time).
pub fn read_archive(
    input: TarStream,
    progress: Option<LayerBytesFn>,
) -> (mpsc::Receiver<Event>, tokio::task::JoinHandle<Result<()>>) {
    let (tx, rx) = mpsc::channel(4);
    let handle = tokio::task::spawn_blocking(move || {
        let reader = decompressed(SyncIoBridge::new(input))?;
        pump(reader, &tx, progress.as_deref())
    });
    (rx, handle)
}

fn archive_error(e: std::io::Error) -> Error {
    Error::invalid(format!("the image archive is not a valid tar: {e}"))
}

fn pump(
    reader: Box<dyn Read + Send>,
    tx: &mpsc::Sender<Event>,
    progress: Option<&LayerBytesCallback>,
) -> Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut saw_entry = false;
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        saw_entry = true;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let Some(path) = normalize("", &raw_path) else {
            return Err(Error::invalid(format!(
                "image archive entry {raw_path:?} points outside the archive"
            )));
        };
        let kind = entry.header().entry_type();
        let size = entry.header().size().map_err(archive_error)?;
        if kind.is_dir() || path.is_empty() {
            continue;
        }
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .map(|t| String::from_utf8_lossy(&t).into_owned())
                .unwrap_or_default();
            let base = if kind.is_symlink() {
                path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
            } else {
                ""
            };
            let Some(target) = normalize(base, &target) else {
                return Err(Error::invalid(format!(
                    "image archive link {path:?} points outside the archive"
                )));
            };
            if tx.blocking_send(Event::Link { path, target }).is_err() {
                return Ok(()); // the loader stopped; its error is the one to report
            }
            continue;
        }
        if !kind.is_file() && kind != tar::EntryType::Continuous {
            continue;
        }
        // Peek: a layer tar never starts with `{`; metadata always does (or is tiny).
        let mut head = vec![0u8; 512.min(size as usize)];
        read_full(&mut entry, &mut head, &path)?;
        let looks_small = size <= SMALL_LIMIT
            && !path.ends_with("/layer.tar")
            && (head.first() == Some(&b'{')
                || head.first() == Some(&b'[')
                || path == "repositories"
                || path.ends_with("/VERSION")
                || path == "oci-layout"
                || size == 0);
        if looks_small {
            let mut data = head;
            data.resize(size as usize, 0);
            let start = 512.min(size as usize);
            read_full(&mut entry, &mut data[start..], &path)?;
            if tx.blocking_send(Event::Small { path, data }).is_err() {
                return Ok(());
            }
            continue;
        }
        let (btx, brx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUE);
        let mut brx = brx;
        let body: TarStream = Box::pin(StreamReader::new(futures::stream::poll_fn(move |cx| {
            brx.poll_recv(cx)
        })));
        if tx
            .blocking_send(Event::Layer {
                path: path.clone(),
                size,
                body,
            })
            .is_err()
        {
            return Ok(());
        }
        let mut sent = head.len() as u64;
        let mut consumer_gone = btx.blocking_send(Ok(Bytes::from(head))).is_err();
        while sent < size && !consumer_gone {
            // Read straight into the chunk that is sent (no copy into a second buffer).
            let want = CHUNK.min((size - sent).try_into().unwrap_or(CHUNK));
            let mut chunk = Vec::with_capacity(want);
            let n = match (&mut entry).take(want as u64).read_to_end(&mut chunk) {
                Ok(0) => {
                    let e = truncated(&path);
                    let _ = btx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return Err(e);
                }
                Ok(n) => n,
                Err(e) => {
                    let _ = btx.blocking_send(Err(std::io::Error::other(e.to_string())));
                    return Err(archive_error(e));
                }
            };
            sent += n as u64;
            if let Some(p) = progress {
                p(&path, sent, size);
            }
            consumer_gone = btx.blocking_send(Ok(Bytes::from(chunk))).is_err();
        }
        if consumer_gone {
            // Skipped (the layer exists): read past the rest, checking the archive is whole.
            let skipped = std::io::copy(&mut entry, &mut std::io::sink()).map_err(archive_error)?;
            if sent + skipped < size {
                return Err(truncated(&path));
            }
        }
    }
    if !saw_entry {
        return Err(Error::invalid("the image archive is empty"));
    }
    Ok(())
}

fn truncated(path: &str) -> Error {
    Error::invalid(format!(
        "the image archive is truncated (entry {path:?} ends early)"
    ))
}

fn read_full(r: &mut dyn Read, buf: &mut [u8], path: &str) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Err(truncated(path)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(archive_error(e)),
        }
    }
    Ok(())
}
