//! Docker's stream conventions: the 8-byte multiplexed frame header for non-TTY output, JSON
//! message streams for progress, and the 101 hijack that `attach` needs.

use axum::body::Body;
use axum::http::{header, HeaderValue, Response, StatusCode};
use bytes::{BufMut, Bytes, BytesMut};

/// Which stream a chunk of container I/O belongs to (the frame's first byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

/// Frames one chunk: `[kind, 0, 0, 0, len (u32 big-endian)]` then the payload.
pub fn frame(kind: StreamKind, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + payload.len());
    b.put_u8(kind as u8);
    b.put_bytes(0, 3);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// Raw (TTY) or multiplexed (non-TTY) content type.
pub fn stream_content_type(tty: bool) -> &'static str {
    if tty {
        "application/vnd.docker.raw-stream"
    } else {
        "application/vnd.docker.multiplexed-stream"
    }
}

/// The 101 answer that hands the connection over to a raw bidirectional stream.
pub fn upgrade_response(tty: bool) -> Response<Body> {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(stream_content_type(tty)),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    r
}

/// One line of a JSON message stream (`{"stream": ...}`, `{"status": ...}`, errors).
pub fn json_line<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// An in-stream error, as Docker reports failures after the 200 was sent.
pub fn json_error(message: &str) -> Bytes {
    json_line(&strata_api_types::progress::JsonMessage::error(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_docker_header() {
        let f = frame(StreamKind::Stderr, b"hi");
        assert_eq!(&f[..], &[2, 0, 0, 0, 0, 0, 0, 2, b'h', b'i']);
    }
}
