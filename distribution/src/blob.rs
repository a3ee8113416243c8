//! Blob bodies checked while they stream: the sha256 of every byte must be the descriptor's
//! digest and the length its size; the stream ends in an error otherwise, so a consumer that
//! applies as it reads fails before it can keep anything.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};
use strata_core::store::Digest;

use crate::error::DistError;

pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// Wraps `inner` so it yields an error instead of its end when the content is not
/// `expected` (`size` bytes).
pub fn verified(inner: ByteStream, expected: Digest, size: u64) -> ByteStream {
    verified_after(inner, expected, size, Sha256::new(), 0)
}

/// As [`verified`] for the rest of a blob whose first `prefix_len` bytes were fetched before
/// (a resumed download) and hashed into `prefix`: the digest and size checked at the end are
/// the whole blob's.
pub fn verified_after(
    inner: ByteStream,
    expected: Digest,
    size: u64,
    prefix: Sha256,
    prefix_len: u64,
) -> ByteStream {
    Box::pin(Verified {
        inner,
        expected,
        size,
        seen: prefix_len,
        hasher: Some(prefix),
    })
}

/// A response body as a byte stream.
pub fn body_stream(resp: reqwest::Response) -> ByteStream {
    Box::pin(
        resp.bytes_stream()
            .map(|r| r.map_err(std::io::Error::other)),
    )
}

struct Verified {
    inner: ByteStream,
    expected: Digest,
    size: u64,
    seen: u64,
    hasher: Option<Sha256>,
}

impl Stream for Verified {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.hasher.is_none() {
            return Poll::Ready(None); // ended, or failed once already
        }
        match self.inner.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.seen += chunk.len() as u64;
                if self.seen > self.size {
                    self.hasher = None;
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "blob {} is larger than its descriptor's {} bytes",
                        self.expected, self.size
                    )))));
                }
                if let Some(h) = self.hasher.as_mut() {
                    h.update(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.hasher = None;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                let h = self.hasher.take().unwrap_or_default();
                let got = Digest::from_hasher(h);
                if got != self.expected || self.seen != self.size {
                    let err = DistError::DigestMismatch {
                        what: "blob",
                        expected: self.expected.clone(),
                        got,
                    };
                    return Poll::Ready(Some(Err(std::io::Error::other(err))));
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static [u8]]) -> ByteStream {
        let items: Vec<std::io::Result<Bytes>> =
            parts.iter().map(|p| Ok(Bytes::from_static(p))).collect();
        Box::pin(futures::stream::iter(items))
    }

    async fn drain(mut s: ByteStream) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(c) = s.next().await {
            out.extend_from_slice(&c?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn a_resumed_blob_is_checked_whole() {
        let d = Digest::of_bytes(b"hello world");
        let prefix = |p: &[u8]| {
            let mut h = Sha256::new();
            h.update(p);
            h
        };
        let rest = drain(verified_after(
            chunks(&[b"world"]),
            d.clone(),
            11,
            prefix(b"hello "),
            6,
        ))
        .await
        .unwrap();
        assert_eq!(rest, b"world");
        let bad = drain(verified_after(
            chunks(&[b"world"]),
            d,
            11,
            prefix(b"HELLO "),
            6,
        ))
        .await;
        assert!(bad.is_err(), "a wrong prefix must fail the digest");
    }

    #[tokio::test]
    async fn passes_matching_content() {
        let d = Digest::of_bytes(b"hello world");
        let out = drain(verified(chunks(&[b"hello ", b"world"]), d, 11))
            .await
            .unwrap();
        assert_eq!(out, b"hello world");
    }

    #[tokio::test]
    async fn refuses_changed_short_or_long_content() {
        let d = Digest::of_bytes(b"hello world");
        let e = drain(verified(chunks(&[b"hello", b" w0rld"]), d.clone(), 11)).await;
        assert!(e.unwrap_err().to_string().contains("failed verification"));
        assert!(drain(verified(chunks(&[b"hello"]), d.clone(), 11))
            .await
            .is_err());
        assert!(drain(verified(chunks(&[b"hello world!"]), d, 11))
            .await
            .is_err());
    }
}
