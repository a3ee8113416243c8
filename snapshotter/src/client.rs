//! A Snapshots client on a unix socket: what containerd's proxy does, for our tests and the
//! conformance suite's `--snapshotter` target.

use std::path::{Path, PathBuf};

use containerd_snapshots::api::snapshots::v1::snapshots_client::SnapshotsClient;
use containerd_snapshots::tonic::transport::{Channel, Endpoint, Error, Uri};

pub type Client = SnapshotsClient<Channel>;

/// Connects to the Snapshots service on `socket` (the URI is a placeholder: the connector
/// dials the socket).
pub async fn connect(socket: &Path) -> Result<Client, Error> {
    let socket: PathBuf = socket.to_path_buf();
    let channel = Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            tokio::net::UnixStream::connect(socket.clone())
        }))
        .await?;
    Ok(SnapshotsClient::new(channel))
}
