//! Bridges between blocking archive code and async tar streams.

use std::io::{Read, Write};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::error::{Error, Result};
use crate::layer::TarStream;

const CHUNK: usize = 256 * 1024;

/// Runs `produce` on a blocking thread, giving it a writer; returns what it writes as an async
/// stream. An error from `produce` reaches the reader as an I/O error, never as a clean EOF, so
/// a failed diff cannot be mistaken for a short layer.
pub fn blocking_writer_stream<F>(produce: F) -> TarStream
where
    F: FnOnce(&mut dyn Write) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let outcome = produce(&mut writer).and_then(|()| {
            writer
                .flush()
                .map_err(|e| Error::io("write", "tar stream", e))
        });
        if let Err(e) = outcome {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let stream = tokio_stream_from(rx);
    Box::pin(StreamReader::new(stream))
}

/// Like [`blocking_writer_stream`], for a producer that hands over whole owned chunks (such as
/// [`crate::archive::write_diff_chunks`]): each chunk reaches the reader as it is, with no copy
/// through a writer's buffer. An error from `produce` reaches the reader as an I/O error.
pub fn blocking_chunk_stream<F>(produce: F) -> TarStream
where
    F: FnOnce(&mut dyn FnMut(Vec<u8>) -> std::io::Result<()>) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut send = |chunk: Vec<u8>| {
            tx.blocking_send(Ok(Bytes::from(chunk))).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader went away")
            })
        };
        if let Err(e) = produce(&mut send) {
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    Box::pin(StreamReader::new(tokio_stream_from(rx)))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<std::io::Result<Bytes>>,
) -> futures::stream::BoxStream<'static, std::io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reader went away"))
    }
}

/// Runs `consume` on a blocking thread with a blocking reader over `input`.
pub async fn with_blocking_reader<T, F>(input: TarStream, consume: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let mut reader = SyncIoBridge::new(input);
        consume(&mut reader)
    })
    .await?
}

/// Reads a whole stream into memory (tests and small bodies only).
pub async fn read_all(mut input: TarStream) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    input
        .read_to_end(&mut out)
        .await
        .map_err(|e| Error::io("read", "tar stream", e))?;
    Ok(out)
}

/// Wraps in-memory bytes as a stream.
pub fn from_bytes(data: Vec<u8>) -> TarStream {
    Box::pin(std::io::Cursor::new(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_reach_the_reader() {
        let s = blocking_writer_stream(|w| {
            w.write_all(b"partial")
                .map_err(|e| Error::io("w", "x", e))?;
            Err(Error::Other("boom".into()))
        });
        let err = read_all(s).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn round_trips_bytes() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let expected = data.clone();
        let s =
            blocking_writer_stream(move |w| w.write_all(&data).map_err(|e| Error::io("w", "x", e)));
        let got = with_blocking_reader(s, |r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v).map_err(|e| Error::io("r", "x", e))?;
            Ok(v)
        })
        .await
        .unwrap();
        assert_eq!(got, expected);
    }

    #[tokio::test]
    async fn chunks_arrive_in_order_and_errors_are_not_a_clean_end() {
        use tokio::io::AsyncReadExt;
        let s = blocking_chunk_stream(|send| {
            for i in 0..20u8 {
                send(vec![i; 1000 + usize::from(i)]).map_err(|e| Error::io("send", "x", e))?;
            }
            Ok(())
        });
        let mut got = Vec::new();
        let mut s = s;
        s.read_to_end(&mut got).await.unwrap();
        let want: Vec<u8> = (0..20u8)
            .flat_map(|i| vec![i; 1000 + usize::from(i)])
            .collect();
        assert_eq!(got, want);

        let mut s = blocking_chunk_stream(|send| {
            send(b"partial".to_vec()).map_err(|e| Error::io("send", "x", e))?;
            Err(Error::Other("boom".into()))
        });
        let mut got = Vec::new();
        let err = s.read_to_end(&mut got).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
