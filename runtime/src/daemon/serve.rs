//! Serves the API on every `-H` address until shutdown is signalled. One accept loop for
//! every kind of listener, so each has the same limits: a cap on connections served at once,
//! a deadline for TLS handshakes and request headers, a pause instead of a busy loop when the
//! process is out of descriptors, and a bounded wait for open connections at shutdown.

use std::convert::Infallible;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

use super::listen::ListenAddr;
use super::tls::ServerTls;
use crate::api::{self, AppState};

/// How long accept pauses when the process or system is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
/// How long a client may take to send a request's headers (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// Limits every listener applies.
#[derive(Debug, Clone)]
pub struct ServeLimits {
    /// Connections served at once on each address; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// How long a TLS client may take to finish its handshake.
    pub tls_handshake_timeout: Duration,
    /// How long connections still open at shutdown get to finish before they are cut.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 400,
            tls_handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

type App = BoxCloneService<Request, Response, Infallible>;

/// The client's socket, in every request's extensions: a handler that keeps the connection
/// after answering (attach) polls it to notice that the client has gone. Valid while the
/// connection (or what it was upgraded to) is held.
#[derive(Debug, Clone, Copy)]
pub struct ClientSocket(pub RawFd);

/// How often a held connection is checked for a client that has gone.
const HANGUP_POLL: Duration = Duration::from_secs(1);

impl ClientSocket {
    /// Whether the peer has closed the connection entirely or reset it. A half-close (the
    /// CLI's `CloseWrite` when it has no stdin to send) is not a hang-up. A unix socket
    /// reports a closed peer at once; TCP only once a write has drawn a reset.
    pub fn hung_up(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.0,
            events: 0,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        n > 0 && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }

    /// Resolves once the client has hung up (checked every second).
    pub async fn closed(self) {
        let mut tick = tokio::time::interval(HANGUP_POLL);
        while !self.hung_up() {
            tick.tick().await;
        }
    }
}

enum Bound {
    Unix(UnixListener),
    Tcp(TcpListener),
}

enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream, std::net::SocketAddr),
}

impl Bound {
    async fn accept(&self) -> std::io::Result<Conn> {
        match self {
            Bound::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
            Bound::Tcp(l) => l.accept().await.map(|(s, peer)| Conn::Tcp(s, peer)),
        }
    }
}

/// Binds every address first (so a bad one fails the start-up before anything is served),
/// then serves them all until `shutdown` turns true. Returns once every listener has stopped
/// and its connections have ended or been cut after `limits.shutdown_grace`. Unix sockets
/// are removed afterwards.
pub async fn serve_all(
    daemon: AppState,
    addrs: Vec<ListenAddr>,
    tls: Option<ServerTls>,
    limits: ServeLimits,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    let app: App = BoxCloneService::new(
        tower::util::MapRequestLayer::new(api::version::strip_version::<axum::body::Body>)
            .layer(api::router(daemon)),
    );
    let mut bound = Vec::new();
    let mut sockets: Vec<PathBuf> = Vec::new();
    for addr in addrs {
        let listener = bind(&addr, tls.is_some()).await?;
        if let ListenAddr::Unix(path) = addr {
            sockets.push(path);
        }
        bound.push(listener);
    }
    let mut loops = JoinSet::new();
    for listener in bound {
        let acceptor = match &listener {
            Bound::Tcp(_) => tls
                .as_ref()
                .map(|t| tokio_rustls::TlsAcceptor::from(t.config.clone())),
            Bound::Unix(_) => None,
        };
        loops.spawn(accept_loop(
            listener,
            acceptor,
            app.clone(),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    while loops.join_next().await.is_some() {}
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    Ok(())
}

async fn bind(addr: &ListenAddr, tls: bool) -> Result<Bound, ServeError> {
    match addr {
        ListenAddr::Unix(path) => {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            // A socket left by a crashed daemon would make bind fail.
            let _ = std::fs::remove_file(path);
            let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
                addr: path.display().to_string(),
                source,
            })?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
            tracing::info!("API listening on unix://{}", path.display());
            Ok(Bound::Unix(listener))
        }
        ListenAddr::Tcp(sock) => {
            let listener = TcpListener::bind(sock)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: sock.to_string(),
                    source,
                })?;
            let how = if tls { " (TLS)" } else { "" };
            tracing::info!("API listening on tcp://{sock}{how}");
            Ok(Bound::Tcp(listener))
        }
    }
}

/// Accepts while a connection slot is free, until shutdown; then waits (boundedly) for the
/// connections it started.
async fn accept_loop(
    listener: Bound,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: App,
    limits: ServeLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut conns = JoinSet::new();
    loop {
        // A full house stops accepting: further clients wait in the backlog, not in memory.
        let slot = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        while conns.try_join_next().is_some() {}
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) if out_of_resources(&e) => {
                tracing::warn!("accept: {e}; pausing {ACCEPT_BACKOFF:?}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
            Err(e) => {
                tracing::debug!("accept: {e}");
                continue;
            }
        };
        let (app, tls, stop, timeout) = (
            app.clone(),
            tls.clone(),
            stop.clone(),
            limits.tls_handshake_timeout,
        );
        conns.spawn(async move {
            serve_conn(conn, tls, timeout, app, stop).await;
            drop(slot);
        });
    }
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            "cutting {} connection(s) still open at shutdown",
            conns.len()
        );
        conns.shutdown().await;
    }
}

/// Errors that the next accept would repeat at once; pausing lets descriptors free up.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

async fn serve_conn(
    conn: Conn,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
    app: App,
    stop: watch::Receiver<bool>,
) {
    match (conn, tls) {
        (Conn::Unix(s), _) => serve_http(ClientSocket(s.as_raw_fd()), s, app, stop).await,
        (Conn::Tcp(s, _), None) => serve_http(ClientSocket(s.as_raw_fd()), s, app, stop).await,
        (Conn::Tcp(s, peer), Some(acceptor)) => {
            let socket = ClientSocket(s.as_raw_fd());
            // A client with no (valid) certificate is dropped here when --tlsverify is on;
            // one that says nothing is dropped when the deadline passes.
            match tokio::time::timeout(handshake_timeout, acceptor.accept(s)).await {
                Ok(Ok(tls)) => serve_http(socket, tls, app, stop).await,
                Ok(Err(e)) => tracing::info!(%peer, "TLS handshake refused: {e}"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

/// HTTP/1.1 with upgrades (attach). At shutdown the connection finishes the request in
/// progress and closes.
async fn serve_http<IO>(socket: ClientSocket, io: IO, app: App, mut stop: watch::Receiver<bool>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(socket);
        app.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!("connection ended: {e}");
    }
}
