//! `serve`: any `LayerDriver` or `VolumeDriver` as a plugin speaking Docker's protocols on a
//! unix socket. A driver author writes the trait implementation; this gives them the plugin.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixListener;
use tokio_util::io::{ReaderStream, StreamReader};

use super::errors;
use super::wire::{
    ActivateReply, GraphReply, GraphRequest, InitRequest, VolumeReply, VolumeRequest,
    WireCapabilities, WireChange, WireUsage, WireVolume, WireVolumeCapabilities, MEDIA_TYPE,
};
use strata_core::error::{Error, Result};
use strata_core::ids::{CallerId, LayerId, VolumeName};
use strata_core::layer::{CreateOpts, LayerDriver, LayerKind};
use strata_core::options::StorageOpts;
use strata_core::volume::{VolumeDriver, VolumeScope};

/// Builds the layer driver when the engine calls `GraphDriver.Init` with its home and options.
pub type GraphFactory = Arc<
    dyn Fn(PathBuf, Vec<String>) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> + Send + Sync,
>;

type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// What a plugin process serves.
#[derive(Default)]
pub struct PluginServer {
    graph: Option<GraphFactory>,
    graph_driver: Mutex<Option<(PathBuf, Arc<dyn LayerDriver>)>>,
    /// Held shared by every graph driver call until it finishes and exclusively by Init, so a
    /// new driver never opens on a home while calls of the old one still work there.
    graph_calls: tokio::sync::RwLock<()>,
    volume: Option<Arc<dyn VolumeDriver>>,
}

impl PluginServer {
    pub fn graph_driver(factory: GraphFactory) -> Self {
        Self {
            graph: Some(factory),
            ..Self::default()
        }
    }

    pub fn volume_driver(driver: Arc<dyn VolumeDriver>) -> Self {
        Self {
            volume: Some(driver),
            ..Self::default()
        }
    }

    fn implements(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.graph.is_some() {
            v.push("GraphDriver".into());
        }
        if self.volume.is_some() {
            v.push("VolumeDriver".into());
        }
        v
    }

    fn driver(&self) -> Result<Arc<dyn LayerDriver>> {
        self.graph_driver
            .lock()
            .map_err(|_| Error::Other("plugin state poisoned".into()))?
            .as_ref()
            .map(|(_, d)| d.clone())
            .ok_or_else(|| {
                Error::invalid("the graph driver is not initialised: call GraphDriver.Init first")
            })
    }
}

/// Serves until the listener fails; each connection on its own task.
pub async fn serve(server: Arc<PluginServer>, listener: UnixListener) -> Result<()> {
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| Error::io("accept", "plugin socket", e))?;
        tokio::spawn(serve_connection(server.clone(), stream));
    }
}

/// Serves on TCP with TLS (for plugins reached through a `.json` spec with `TLSConfig`).
/// With a client-certificate verifier in `tls`, clients without a valid certificate are
/// dropped at the handshake.
pub async fn serve_tls(
    server: Arc<PluginServer>,
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, _) = listener
            .accept()
            .await
            .map_err(|e| Error::io("accept", "plugin TCP socket", e))?;
        let (server, acceptor) = (server.clone(), acceptor.clone());
        tokio::spawn(async move {
            match acceptor.accept(tcp).await {
                Ok(stream) => serve_connection(server, stream).await,
                Err(e) => tracing::debug!("plugin TLS handshake refused: {e}"),
            }
        });
    }
}

async fn serve_connection<S>(server: Arc<PluginServer>, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req| {
        let server = server.clone();
        async move { Ok::<_, Infallible>(route(&server, req).await) }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!("plugin connection ended: {e}");
    }
}

/// Binds `socket` (replacing a stale one) and serves.
pub async fn serve_at(server: Arc<PluginServer>, socket: &std::path::Path) -> Result<()> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
    serve(server, listener).await
}

fn json<T: Serialize>(value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", MEDIA_TYPE)
        .body(
            Full::new(Bytes::from(bytes))
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .unwrap_or_else(|_| Response::new(empty()))
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn not_found(path: &str) -> Response<Body> {
    let mut r = json(&serde_json::json!({ "Err": format!("{path} is not implemented") }));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r
}

async fn body<T: DeserializeOwned + Default>(req: Request<Incoming>) -> Result<T> {
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::invalid(format!("request body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    // A Go client encodes a nil request as `null`.
    serde_json::from_slice::<Option<T>>(&bytes)
        .map(Option::unwrap_or_default)
        .map_err(|e| Error::invalid(format!("malformed request: {e}")))
}

fn graph_err(e: Error) -> Response<Body> {
    json(&GraphReply {
        err: errors::encode(&e),
        ..Default::default()
    })
}

fn volume_err(e: Error) -> Response<Body> {
    json(&VolumeReply {
        err: errors::encode(&e),
        ..Default::default()
    })
}

async fn route(server: &Arc<PluginServer>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_start_matches('/').to_string();
    if path == "Plugin.Activate" {
        return json(&ActivateReply {
            implements: server.implements(),
        });
    }
    if let Some(endpoint) = path.strip_prefix("GraphDriver.") {
        if server.graph.is_none() {
            return not_found(&path);
        }
        if endpoint == "Init" {
            let _alone = server.graph_calls.write().await;
            return graph(server, endpoint, req).await.unwrap_or_else(graph_err);
        }
        // A call runs to its end on its own task even if the engine hangs up (as Go's handlers
        // do): a dropped future would leave the driver's blocking work running unseen.
        let (server, endpoint) = (server.clone(), endpoint.to_string());
        let call = tokio::spawn(async move {
            let _call = server.graph_calls.read().await;
            graph(&server, &endpoint, req).await
        });
        return match call.await {
            Ok(reply) => reply.unwrap_or_else(graph_err),
            Err(e) => graph_err(Error::Other(format!("/{path} failed: {e}"))),
        };
    }
    if let Some(endpoint) = path.strip_prefix("VolumeDriver.") {
        let Some(driver) = server.volume.clone() else {
            return not_found(&path);
        };
        return match volume(driver.as_ref(), endpoint, req).await {
            Ok(r) => r,
            Err(e) => volume_err(e),
        };
    }
    not_found(&path)
}

/// `POST /GraphDriver.ApplyDiff?id=ID&parent=PARENT`: the body is the tar itself.
#[derive(Debug, Default, serde::Deserialize)]
struct ApplyDiffQuery {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parent: String,
}

fn ids(r: &GraphRequest) -> Result<(LayerId, Option<LayerId>)> {
    let id = LayerId::new(r.id.clone())?;
    let parent = (!r.parent.is_empty())
        .then(|| LayerId::new(r.parent.clone()))
        .transpose()?;
    Ok((id, parent))
}

async fn graph(
    server: &PluginServer,
    endpoint: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    if endpoint == "Init" {
        let init: InitRequest = body(req).await?;
        let home = PathBuf::from(&init.home);
        if !home.is_absolute() {
            return Err(Error::invalid(format!(
                "Init: home {:?} is not absolute",
                init.home
            )));
        }
        // Every Init opens the driver afresh, as Docker's plugin helpers do, even on the same
        // home: a second Init comes from a restarted engine, whose mount references died with
        // it, and the new driver's start-up recovers what the old engine left.
        let factory = server
            .graph
            .clone()
            .ok_or_else(|| Error::unsupported("no graph driver"))?;
        let driver = factory(home.clone(), init.opts).await?;
        *server
            .graph_driver
            .lock()
            .map_err(|_| Error::Other("plugin state poisoned".into()))? = Some((home, driver));
        return Ok(json(&GraphReply::default()));
    }
    if endpoint == "ApplyDiff" {
        let query: ApplyDiffQuery = serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
            .map_err(|e| Error::invalid(format!("ApplyDiff: malformed query: {e}")))?;
        let id = LayerId::new(query.id)?;
        let parent = (!query.parent.is_empty())
            .then(|| LayerId::new(query.parent))
            .transpose()?;
        let stream = req
            .into_body()
            .into_data_stream()
            .map(|r| r.map_err(std::io::Error::other));
        let size = server
            .driver()?
            .apply_diff(&id, parent.as_ref(), Box::pin(StreamReader::new(stream)))
            .await?;
        return Ok(json(&GraphReply {
            size,
            ..Default::default()
        }));
    }
    let driver = server.driver()?;
    let r: GraphRequest = body(req).await?;
    let mut reply = GraphReply::default();
    match endpoint {
        "Create" | "CreateReadWrite" => {
            let (id, parent) = ids(&r)?;
            let opts = CreateOpts {
                kind: if endpoint == "Create" {
                    LayerKind::ReadOnly
                } else {
                    LayerKind::ReadWrite
                },
                mount_label: r.mount_label.clone(),
                storage_opts: StorageOpts::from_map(r.storage_opt.clone()),
            };
            driver.create(&id, parent.as_ref(), &opts).await?;
        }
        "Remove" => driver.remove(&ids(&r)?.0).await?,
        "Get" => {
            reply.dir = driver
                .mount(&ids(&r)?.0, &r.mount_label)
                .await?
                .display()
                .to_string()
        }
        "Put" => driver.unmount(&ids(&r)?.0).await?,
        "Exists" => reply.exists = driver.exists(&ids(&r)?.0).await?,
        "Status" => {
            reply.status = driver
                .status()
                .await?
                .into_iter()
                .map(|(k, v)| [k, v])
                .collect()
        }
        "GetMetadata" => reply.metadata = driver.metadata(&ids(&r)?.0).await?,
        "Cleanup" => driver.cleanup().await?,
        "Capabilities" => {
            let caps = driver.capabilities();
            // Docker reads ReproducesExactDiffs as "Diff of an applied layer gives back the
            // very bytes that were applied" and then keeps no tar-split record, so `docker
            // save` fails its digest check. No Strata driver keeps the applied tar's headers,
            // so the answer is no; our own "two diffs agree" travels under `Strata`.
            reply.capabilities = Some(WireCapabilities {
                reproduces_exact_diffs: false,
                strata: Some(caps),
            });
        }
        "Changes" => {
            let (id, parent) = ids(&r)?;
            reply.changes = driver
                .changes(&id, parent.as_ref())
                .await?
                .into_iter()
                .map(|c| {
                    let bytes = c.path.as_os_str().as_encoded_bytes();
                    WireChange {
                        path: c.path.to_string_lossy().into_owned(),
                        kind: c.kind.wire() as u64,
                        path_bytes: std::str::from_utf8(bytes).is_err().then(|| bytes.to_vec()),
                    }
                })
                .collect();
        }
        "DiffSize" => {
            let (id, parent) = ids(&r)?;
            reply.size = driver.diff_size(&id, parent.as_ref()).await?;
        }
        "Usage" => {
            let u = driver.usage(&ids(&r)?.0).await?;
            reply.usage = Some(WireUsage {
                bytes: u.bytes,
                inodes: u.inodes,
            });
        }
        "Diff" => {
            let (id, parent) = ids(&r)?;
            let tar = driver.diff(&id, parent.as_ref()).await?;
            let stream = ReaderStream::new(tar).map(|r| r.map(Frame::data));
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header("Content-Type", "application/x-tar")
                .body(BodyExt::boxed_unsync(StreamBody::new(stream)))
                .unwrap_or_else(|_| Response::new(empty())));
        }
        other => return Ok(not_found(&format!("GraphDriver.{other}"))),
    }
    Ok(json(&reply))
}

async fn volume(
    driver: &dyn VolumeDriver,
    endpoint: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>> {
    let r: VolumeRequest = body(req).await?;
    let name = || VolumeName::new(r.name.clone());
    let mut reply = VolumeReply::default();
    let wire = |v: strata_core::volume::VolumeInfo| WireVolume {
        name: v.name.to_string(),
        mountpoint: v
            .mountpoint
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        created_at: v.created_at.unwrap_or_default(),
        status: v.status,
    };
    match endpoint {
        "Create" => {
            driver
                .create(&name()?, &r.opts.clone().unwrap_or_default())
                .await?
        }
        "Remove" => driver.remove(&name()?).await?,
        "Mount" => {
            reply.mountpoint = driver
                .mount(&name()?, &CallerId::new(r.id.clone())?)
                .await?
                .display()
                .to_string()
        }
        "Unmount" => {
            driver
                .unmount(&name()?, &CallerId::new(r.id.clone())?)
                .await?
        }
        "Path" => reply.mountpoint = driver.path(&name()?).await?.display().to_string(),
        "Get" => reply.volume = Some(wire(driver.get(&name()?).await?)),
        "List" => reply.volumes = Some(driver.list().await?.into_iter().map(wire).collect()),
        "Capabilities" => {
            reply.capabilities = Some(WireVolumeCapabilities {
                scope: match driver.capabilities().scope {
                    VolumeScope::Local => "local".into(),
                    VolumeScope::Global => "global".into(),
                },
            })
        }
        "Usage" => {
            let u = driver.usage(&name()?).await?;
            reply.usage = Some(WireUsage {
                bytes: u.bytes,
                inodes: u.inodes,
            });
        }
        other => return Ok(not_found(&format!("VolumeDriver.{other}"))),
    }
    Ok(json(&reply))
}
