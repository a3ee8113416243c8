//! Uploads (`load`, `import`): the request body as a reader that is read to its end even when
//! the consumer stops early. A handler that fails mid-upload (a full disk, a bad archive)
//! then still gets its answer to the client; if the server stopped reading, the client would
//! only see a broken pipe while it was still sending.

use std::io;

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use strata_core::TarStream;
use tokio::sync::mpsc;
use tokio_util::io::StreamReader;

/// Chunks in flight between the body and its consumer.
const DEPTH: usize = 8;

pub fn drained_reader(body: Body) -> TarStream {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    tokio::spawn(async move {
        let mut chunks = body.into_data_stream();
        let mut consumer_gone = false;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(io::Error::other);
            let failed = chunk.is_err();
            if !consumer_gone && tx.send(chunk).await.is_err() {
                // The consumer gave up: keep reading, discarding, so the client can finish
                // sending and read the error.
                consumer_gone = true;
            }
            if failed {
                break;
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Box::pin(StreamReader::new(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// The body is read to its end after the reader is dropped half way.
    #[tokio::test]
    async fn the_body_is_read_to_its_end_when_the_consumer_stops() {
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<usize>();
        let chunks = futures::stream::iter(0..100usize).map(move |i| {
            let _ = sent_tx.send(i);
            Ok::<_, io::Error>(Bytes::from(vec![0u8; 1024]))
        });
        let mut reader = drained_reader(Body::from_stream(chunks));
        let mut first = [0u8; 10];
        reader.read_exact(&mut first).await.unwrap();
        drop(reader);
        let mut last = 0;
        while let Some(i) = sent_rx.recv().await {
            last = i;
        }
        assert_eq!(last, 99, "the body was not read to its end");
    }
}
