//! A small Engine API client over a unix socket or loopback TCP: one HTTP/1.1 connection per
//! request, JSON helpers, streamed bodies and the 101 hijack used by attach.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde_json::Value;
use strata_api_types::system::ErrorResponse;

/// The API version we speak; paths are prefixed with it.
pub const API_VERSION: &str = "1.47";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the Strata daemon at {addr}: {source}. Is stratad running? It \
         listens on {addr} (set -H or STRATA_HOST to use another address)"
    )]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Api(String),
    #[error("{status}: {message}")]
    Status { status: StatusCode, message: String },
    #[error("protocol error talking to the daemon: {0}")]
    Protocol(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

#[derive(Debug, Clone)]
enum Addr {
    Unix(PathBuf),
    Tcp(String),
}

/// Where the daemon is, and how to reach it.
#[derive(Debug, Clone)]
pub struct Client {
    addr: Addr,
    display: String,
}

/// A request body: nothing, JSON, or a stream of bytes (a tar to load).
pub enum ReqBody {
    Empty,
    Json(Value),
    Stream(
        std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<Bytes>> + Send>>,
        &'static str,
    ),
}

impl Client {
    pub fn new(host: &str) -> anyhow::Result<Self> {
        let addr = if let Some(p) = host.strip_prefix("unix://") {
            Addr::Unix(PathBuf::from(p))
        } else if let Some(t) = host.strip_prefix("tcp://") {
            Addr::Tcp(t.to_string())
        } else {
            anyhow::bail!("-H {host:?}: expected unix:///path or tcp://host:port");
        };
        Ok(Self {
            addr,
            display: host.to_string(),
        })
    }

    async fn connect(
        &self,
    ) -> Result<
        hyper::client::conn::http1::SendRequest<
            http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>,
        >,
    > {
        let map = |source| ClientError::Connect {
            addr: self.display.clone(),
            source,
        };
        macro_rules! handshake {
            ($stream:expr) => {{
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                    .await
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = conn.with_upgrades().await;
                });
                sender
            }};
        }
        Ok(match &self.addr {
            Addr::Unix(p) => handshake!(tokio::net::UnixStream::connect(p).await.map_err(map)?),
            Addr::Tcp(t) => handshake!(tokio::net::TcpStream::connect(t).await.map_err(map)?),
        })
    }

    /// Sends a request; a non-2xx answer becomes an error carrying Docker's `message`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
    ) -> Result<Response<Incoming>> {
        self.request_with_auth(method, path, body, None).await
    }

    /// [`Client::request`] with an `X-Registry-Auth` header (pull and push).
    pub async fn request_with_auth(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
        registry_auth: Option<String>,
    ) -> Result<Response<Incoming>> {
        let mut sender = self.connect().await?;
        let uri = format!("/v{API_VERSION}{path}");
        let mut builder = Request::builder()
            .method(method)
            .uri(uri)
            .header("Host", "strata");
        if let Some(auth) = registry_auth {
            builder = builder.header("X-Registry-Auth", auth);
        }
        let body = match body {
            ReqBody::Empty => Full::new(Bytes::new())
                .map_err(|never| match never {})
                .boxed_unsync(),
            ReqBody::Json(v) => {
                builder = builder.header("Content-Type", "application/json");
                Full::new(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
                    .map_err(|never| match never {})
                    .boxed_unsync()
            }
            ReqBody::Stream(s, content_type) => {
                builder = builder.header("Content-Type", content_type);
                use futures::StreamExt;
                BodyExt::boxed_unsync(StreamBody::new(s.map(|r| r.map(Frame::data))))
            }
        };
        let req = builder
            .body(body)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.status().is_success() || resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let message = serde_json::from_slice::<ErrorResponse>(&bytes)
            .map(|e| e.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ClientError::Status { status, message })
    }

    pub async fn json(&self, method: Method, path: &str, body: ReqBody) -> Result<Value> {
        let resp = self.request(method, path, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?
            .to_bytes();
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    pub async fn get(&self, path: &str) -> Result<Value> {
        self.json(Method::GET, path, ReqBody::Empty).await
    }

    /// A reply read into its `strata-api-types` model.
    pub async fn typed<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: ReqBody,
    ) -> Result<T> {
        let v = self.json(method, path, body).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{path}: {e}")))
    }

    pub async fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed(Method::GET, path, ReqBody::Empty).await
    }

    pub async fn post_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed(Method::POST, path, ReqBody::Empty).await
    }

    pub async fn delete_as<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.typed(Method::DELETE, path, ReqBody::Empty).await
    }

    pub async fn post(&self, path: &str, body: Option<Value>) -> Result<Value> {
        let body = body.map_or(ReqBody::Empty, ReqBody::Json);
        self.json(Method::POST, path, body).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value> {
        self.json(Method::DELETE, path, ReqBody::Empty).await
    }

    /// Sends a request asking for a protocol upgrade and returns the raw connection.
    pub async fn hijack(&self, path: &str) -> Result<TokioIo<hyper::upgrade::Upgraded>> {
        let mut sender = self.connect().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/v{API_VERSION}{path}"))
            .header("Host", "strata")
            .header("Connection", "Upgrade")
            .header("Upgrade", "tcp")
            .body(
                Full::new(Bytes::new())
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err(ClientError::Status {
                status,
                message: String::from_utf8_lossy(&bytes).trim().to_string(),
            });
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        Ok(TokioIo::new(upgraded))
    }
}

/// Reads a body chunk by chunk.
pub async fn next_chunk(body: &mut Incoming) -> Result<Option<Bytes>> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(ClientError::Protocol(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    urlencoding::encode(v).into_owned()
}
