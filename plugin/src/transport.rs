//! Talking to a plugin: HTTP/1.1 POSTs of JSON over a unix socket (or plain TCP on loopback),
//! connection retries with backoff for up to 30 s as Docker does, a timeout on every call, and
//! errors that say which plugin and endpoint failed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::io::{ReaderStream, StreamReader};

use super::errors;
use super::wire::MEDIA_TYPE;
use strata_core::error::{Error, Result};
use strata_core::layer::TarStream;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginAddr {
    Unix(PathBuf),
    Tcp(String),
    /// TCP with TLS, per a `.json` spec's `TLSConfig`.
    TcpTls(String, super::tls::PluginTls),
}

/// How long to keep trying, and how long one call may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connection errors are retried with exponential backoff (from 1 s) for this long.
    pub connect_retry: Duration,
    /// A call (reply headers and, for JSON replies, the whole body) must finish within this.
    pub call: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_retry: Duration::from_secs(30),
            call: Duration::from_secs(120),
        }
    }
}

type ReqBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, Clone)]
pub struct Transport {
    pub name: String,
    pub addr: PluginAddr,
    pub timeouts: Timeouts,
}

impl Transport {
    pub fn new(name: impl Into<String>, addr: PluginAddr) -> Self {
        Self {
            name: name.into(),
            addr,
            timeouts: Timeouts::default(),
        }
    }

    fn fail(&self, endpoint: &str, what: impl std::fmt::Display) -> Error {
        Error::Other(format!("plugin {:?}: {endpoint}: {what}", self.name))
    }

    async fn connect(&self) -> std::io::Result<hyper::client::conn::http1::SendRequest<ReqBody>> {
        macro_rules! handshake {
            ($stream:expr) => {{
                let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new($stream))
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }};
        }
        Ok(match &self.addr {
            PluginAddr::Unix(p) => handshake!(tokio::net::UnixStream::connect(p).await?),
            PluginAddr::Tcp(a) => handshake!(tokio::net::TcpStream::connect(a).await?),
            PluginAddr::TcpTls(a, tls) => {
                let config = tls.client_config().map_err(std::io::Error::other)?;
                let host = a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(std::io::Error::other)?;
                let tcp = tokio::net::TcpStream::connect(a).await?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await?;
                handshake!(stream)
            }
        })
    }

    /// Connects, retrying refused or missing sockets with backoff (1 s, 2 s, 4 s, ...).
    async fn connect_with_retry(
        &self,
        endpoint: &str,
    ) -> Result<hyper::client::conn::http1::SendRequest<ReqBody>> {
        let started = Instant::now();
        let mut delay = Duration::from_secs(1);
        loop {
            match self.connect().await {
                Ok(s) => return Ok(s),
                Err(e) => {
                    let left = self
                        .timeouts
                        .connect_retry
                        .saturating_sub(started.elapsed());
                    if left.is_zero() {
                        return Err(self.fail(endpoint, format!("cannot connect: {e}")));
                    }
                    tracing::debug!(plugin = %self.name, "connect failed ({e}); retrying");
                    tokio::time::sleep(delay.min(left)).await;
                    delay *= 2;
                }
            }
        }
    }

    async fn send(&self, endpoint: &str, query: &str, body: ReqBody) -> Result<Response<Incoming>> {
        let call = async {
            let mut sender = self.connect_with_retry(endpoint).await?;
            let req = Request::post(format!("/{endpoint}{query}"))
                .header("Host", "plugin")
                .header("Accept", MEDIA_TYPE)
                .header("Content-Type", MEDIA_TYPE)
                .body(body)
                .map_err(|e| self.fail(endpoint, e))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| self.fail(endpoint, format!("the plugin closed the connection: {e}")))
        };
        let resp = tokio::time::timeout(self.timeouts.call, call)
            .await
            .map_err(|_| {
                self.fail(
                    endpoint,
                    format!("no reply within {:?}", self.timeouts.call),
                )
            })??;
        match resp.status() {
            StatusCode::OK => Ok(resp),
            StatusCode::NOT_FOUND => Err(Error::unsupported(format!(
                "plugin {:?} does not implement /{endpoint}",
                self.name
            ))),
            status => {
                let body = self.read_body(endpoint, resp).await.unwrap_or_default();
                let msg = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v.get("Err").and_then(|e| e.as_str()).map(str::to_string))
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
                Err(errors::decode(
                    &self.name,
                    endpoint,
                    &format!("{status}: {msg}"),
                ))
            }
        }
    }

    async fn read_body(&self, endpoint: &str, resp: Response<Incoming>) -> Result<Bytes> {
        tokio::time::timeout(self.timeouts.call, resp.into_body().collect())
            .await
            .map_err(|_| self.fail(endpoint, "the reply did not finish in time"))?
            .map(|c| c.to_bytes())
            .map_err(|e| self.fail(endpoint, format!("the reply broke off: {e}")))
    }

    fn json_body<T: Serialize>(&self, endpoint: &str, req: &T) -> Result<ReqBody> {
        let bytes = serde_json::to_vec(req).map_err(|e| self.fail(endpoint, e))?;
        Ok(Full::new(Bytes::from(bytes))
            .map_err(|never| match never {})
            .boxed_unsync())
    }

    /// Decodes a JSON reply; malformed JSON is a clear error, not a panic.
    async fn decode<R: DeserializeOwned>(
        &self,
        endpoint: &str,
        resp: Response<Incoming>,
    ) -> Result<R> {
        let body = self.read_body(endpoint, resp).await?;
        serde_json::from_slice(&body).map_err(|e| {
            let shown: String = String::from_utf8_lossy(&body).chars().take(200).collect();
            self.fail(endpoint, format!("malformed reply ({e}): {shown:?}"))
        })
    }

    /// A JSON request and a JSON reply.
    pub async fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        endpoint: &str,
        req: &Q,
    ) -> Result<R> {
        let body = self.json_body(endpoint, req)?;
        let resp = self.send(endpoint, "", body).await?;
        self.decode(endpoint, resp).await
    }

    /// A JSON request whose reply is a raw stream (GraphDriver.Diff).
    pub async fn call_stream_reply<Q: Serialize>(
        &self,
        endpoint: &str,
        req: &Q,
    ) -> Result<TarStream> {
        let body = self.json_body(endpoint, req)?;
        let resp = self.send(endpoint, "", body).await?;
        let name = self.name.clone();
        let ep = endpoint.to_string();
        let stream = resp.into_body().into_data_stream().map(move |r| {
            r.map_err(|e| {
                std::io::Error::other(format!("plugin {name:?}: {ep}: the stream broke off: {e}"))
            })
        });
        Ok(Box::pin(StreamReader::new(stream)))
    }

    /// A raw stream request (GraphDriver.ApplyDiff) and a JSON reply.
    pub async fn call_stream_request<R: DeserializeOwned>(
        &self,
        endpoint: &str,
        query: &str,
        input: TarStream,
    ) -> Result<R> {
        let stream = ReaderStream::new(input).map(|r| r.map(Frame::data));
        let body = BodyExt::boxed_unsync(StreamBody::new(stream));
        let resp = self.send(endpoint, query, body).await?;
        self.decode(endpoint, resp).await
    }
}
