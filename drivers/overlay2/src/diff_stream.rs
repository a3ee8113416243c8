//! The diff's tar as an async stream, fed with whole chunks by core's `write_diff_chunks` on a
//! blocking thread: nothing is copied between the file reads and the reader's own buffer
//! (a `Write` bridge would copy every byte once more).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use strata_core::{Result, TarStream};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// Chunks in flight between the producer and the reader (about 1 MB each).
const QUEUE: usize = 8;

/// Runs `produce` on a blocking thread with a chunk sender; an error from `produce` reaches
/// the reader as an I/O error, never as a clean end, so a failed diff cannot pass for a short
/// layer.
pub fn chunked_stream<F>(produce: F) -> TarStream
where
    F: FnOnce(&mut dyn FnMut(Vec<u8>) -> io::Result<()>) -> Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(QUEUE);
    tokio::task::spawn_blocking(move || {
        let mut send = |chunk: Vec<u8>| {
            tx.blocking_send(Ok(chunk))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "reader went away"))
        };
        if let Err(e) = produce(&mut send) {
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    Box::pin(ChunkReader {
        rx,
        chunk: Vec::new(),
        pos: 0,
    })
}

struct ChunkReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl AsyncRead for ChunkReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pos == this.chunk.len() {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                Poll::Ready(Some(Ok(chunk))) => {
                    this.chunk = chunk;
                    this.pos = 0;
                }
            }
        }
        let n = buf.remaining().min(this.chunk.len() - this.pos);
        buf.put_slice(&this.chunk[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn chunks_arrive_in_order_and_errors_are_not_a_clean_end() {
        let s = chunked_stream(|send| {
            for i in 0..20u8 {
                send(vec![i; 1000 + usize::from(i)])
                    .map_err(|e| strata_core::Error::io("send", "x", e))?;
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

        let mut s = chunked_stream(|send| {
            send(b"partial".to_vec()).map_err(|e| strata_core::Error::io("send", "x", e))?;
            Err(strata_core::Error::Other("boom".into()))
        });
        let mut got = Vec::new();
        let err = s.read_to_end(&mut got).await.unwrap_err();
        assert!(err.to_string().contains("boom"), "{err}");
    }
}
