//! Serves the API on every `-H` address until shutdown is signalled.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use axum::extract::Request;
use axum::ServiceExt;
use tokio::sync::watch;
use tower::Layer;

use super::listen::ListenAddr;
use crate::api::{self, AppState};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Binds every address first (so a bad one fails the start-up before anything is served),
/// then serves them all until `shutdown` turns true. Unix sockets are removed afterwards.
pub async fn serve_all(
    daemon: AppState,
    addrs: Vec<ListenAddr>,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let app = tower::util::MapRequestLayer::new(api::version::strip_version::<axum::body::Body>)
        .layer(api::router(daemon));
    let mut tasks = Vec::new();
    let mut sockets: Vec<PathBuf> = Vec::new();
    for addr in addrs {
        let mut stop = shutdown.clone();
        let until_stop = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        let service = ServiceExt::<Request>::into_make_service(app.clone());
        match addr {
            ListenAddr::Unix(path) => {
                if let Some(parent) = path.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                // A socket left by a crashed daemon would make bind fail.
                let _ = std::fs::remove_file(&path);
                let listener =
                    tokio::net::UnixListener::bind(&path).map_err(|source| ServeError::Bind {
                        addr: path.display().to_string(),
                        source,
                    })?;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660));
                tracing::info!("API listening on unix://{}", path.display());
                sockets.push(path);
                tasks.push(tokio::spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(until_stop)
                        .await
                }));
            }
            ListenAddr::Tcp(sock) => {
                let listener = tokio::net::TcpListener::bind(sock)
                    .await
                    .map_err(|source| ServeError::Bind {
                        addr: sock.to_string(),
                        source,
                    })?;
                if let Some(config) = &tls {
                    tracing::info!("API listening on tcp://{sock} (TLS)");
                    let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                    let app = app.clone();
                    let mut stop = shutdown.clone();
                    tasks.push(tokio::spawn(async move {
                        loop {
                            tokio::select! {
                                _ = stop.wait_for(|s| *s) => return Ok(()),
                                accepted = listener.accept() => {
                                    let Ok((tcp, peer)) = accepted else { continue };
                                    tokio::spawn(serve_tls(acceptor.clone(), app.clone(), tcp, peer));
                                }
                            }
                        }
                    }));
                    continue;
                }
                tracing::info!("API listening on tcp://{sock}");
                tasks.push(tokio::spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(until_stop)
                        .await
                }));
            }
        }
    }
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("listener failed: {e}"),
            Err(e) => tracing::error!("listener task failed: {e}"),
        }
    }
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    Ok(())
}

/// One TLS connection: the handshake (a client without a valid certificate is dropped here
/// when --tlsverify is on), then HTTP/1.1 with upgrades for attach.
async fn serve_tls<S>(
    acceptor: tokio_rustls::TlsAcceptor,
    app: S,
    tcp: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) where
    S: tower::Service<
            Request,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(%peer, "TLS handshake refused: {e}");
            return;
        }
    };
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            app.oneshot(req.map(axum::body::Body::new)).await
        }
    });
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .with_upgrades()
        .await
    {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
