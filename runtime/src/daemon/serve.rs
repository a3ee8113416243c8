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
