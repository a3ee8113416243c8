//! The reader between an incoming layer tar and the driver's `apply_diff`: it decompresses
//! (gzip or zstd, by magic bytes), hashes and counts the uncompressed bytes and records the
//! tar-split, all in the one pass the driver makes over the stream. The driver gets the plain
//! tar. When the driver stops reading at the tar's end blocks, the rest of the stream (Docker's
//! trailing zero padding) is still hashed, because the diffID covers every byte.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::{StreamReader, SyncIoBridge};

use super::digest::Digest;
use super::tarsplit::Recorder;
use crate::error::{Error, Result};
use crate::layer::TarStream;

const CHUNK: usize = 256 * 1024;

/// Called with the count of uncompressed bytes read so far.
pub type ProgressFn = Arc<dyn Fn(u64) + Send + Sync>;

/// What the pass over a layer tar found.
#[derive(Debug)]
pub struct IngestOutcome {
    pub diff_id: Digest,
    /// Bytes of the uncompressed tar.
    pub tar_size: u64,
    /// The encoded tar-split (see [`super::tarsplit`]).
    pub tar_split: Vec<u8>,
}

/// A running ingest: give `stream` to the driver, then call [`Ingest::finish`].
pub struct Ingest {
    pub stream: TarStream,
    outcome: oneshot::Receiver<Result<IngestOutcome>>,
    drain: std::sync::mpsc::Sender<bool>,
}

impl Ingest {
    pub fn start(input: TarStream, progress: Option<ProgressFn>) -> Self {
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        let (out_tx, out_rx) = oneshot::channel();
        let (drain_tx, drain_rx) = std::sync::mpsc::channel::<bool>();
        tokio::task::spawn_blocking(move || {
            let result = pump(input, &tx, &drain_rx, progress.as_deref());
            if let Err(e) = &result {
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
            let _ = out_tx.send(result);
        });
        let mut rx = rx;
        let chunks = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Self {
            stream: Box::pin(StreamReader::new(chunks)),
            outcome: out_rx,
            drain: drain_tx,
        }
    }

    /// After the driver returned: `applied_ok` lets the pump hash what the driver left unread;
    /// otherwise the pump stops. Returns the digest and the tar-split.
    pub async fn finish(self, applied_ok: bool) -> Result<IngestOutcome> {
        let _ = self.drain.send(applied_ok);
        drop(self.stream);
        self.outcome
            .await
            .map_err(|_| Error::Other("layer ingest stopped unexpectedly".into()))?
    }
}

/// Wraps `input` in the decompressor its first bytes call for.
pub fn decompressed(input: impl Read + Send + 'static) -> Result<Box<dyn Read + Send>> {
    let mut buffered = BufReader::with_capacity(CHUNK, input);
    let magic = buffered
        .fill_buf()
        .map_err(|e| Error::io("read", "layer tar", e))?;
    Ok(if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .map_err(|e| Error::io("decompress", "layer tar (zstd)", e))?,
        )
    } else {
        Box::new(buffered)
    })
}

fn pump(
    input: TarStream,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
    drain: &std::sync::mpsc::Receiver<bool>,
    progress: Option<&(dyn Fn(u64) + Send + Sync)>,
) -> Result<IngestOutcome> {
    let mut reader = decompressed(SyncIoBridge::new(input))?;
    let mut hasher = Sha256::new();
    let mut recorder = Recorder::new();
    let mut total: u64 = 0;
    let mut driver_reading = true;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", "layer tar", e)),
        };
        let chunk = &buf[..n];
        hasher.update(chunk);
        recorder.feed(chunk);
        total += n as u64;
        if let Some(p) = progress {
            p(total);
        }
        if driver_reading && tx.blocking_send(Ok(Bytes::copy_from_slice(chunk))).is_err() {
            // The driver is done with the stream: keep hashing only if it succeeded.
            driver_reading = false;
            if !drain.recv().unwrap_or(false) {
                return Err(Error::Other("layer apply stopped".into()));
            }
        }
    }
    Ok(IngestOutcome {
        diff_id: Digest::from_hasher(hasher),
        tar_size: total,
        tar_split: recorder.finish()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn tar_with_trailer() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "x", &b"hello"[..]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.extend_from_slice(&[0u8; 8192]); // Docker pads layer tars to 10 KiB records
        data
    }

    #[tokio::test]
    async fn hashes_every_byte_even_when_the_reader_stops_early() {
        let data = tar_with_trailer();
        let expected = Digest::of_bytes(&data);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let zst = zstd::encode_all(&data[..], 3).unwrap();
        for input in [data.clone(), gz.finish().unwrap(), zst] {
            let mut ingest = Ingest::start(crate::stream::from_bytes(input), None);
            // A reader that stops after the first entry, as a tar extractor does.
            let mut first = vec![0u8; 1024];
            ingest.stream.read_exact(&mut first).await.unwrap();
            assert_eq!(&first[512..517], b"hello");
            let out = ingest.finish(true).await.unwrap();
            assert_eq!(out.diff_id, expected);
            assert_eq!(out.tar_size, data.len() as u64);
        }
    }

    #[tokio::test]
    async fn a_failed_apply_stops_the_pump() {
        let data = vec![0u8; 10 * CHUNK];
        let mut ingest = Ingest::start(crate::stream::from_bytes(data), None);
        let mut first = vec![0u8; 10];
        ingest.stream.read_exact(&mut first).await.unwrap();
        assert!(ingest.finish(false).await.is_err());
    }
}
