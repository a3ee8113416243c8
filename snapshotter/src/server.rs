//! Serving the Snapshots service on a unix socket until a shutdown signal.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use containerd_snapshots::tonic::transport::Server;
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::service::StrataSnapshotter;

/// Binds `socket` (replacing a stale one) with mode 0660.
pub fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves until `shutdown` completes, then releases the snapshotter's mounts.
pub async fn serve(
    snapshotter: Arc<StrataSnapshotter>,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), containerd_snapshots::tonic::transport::Error> {
    let served = Server::builder()
        .add_service(containerd_snapshots::server(Arc::clone(&snapshotter)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await;
    snapshotter.shutdown().await;
    served
}
