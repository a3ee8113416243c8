//! `strata-loopvol-plugin --socket PATH --root DIR`: size-limited ext4 volumes as a volume
//! plugin.

use std::sync::Arc;

use strata_plugin::{serve_at, PluginServer};
use strata_plugin_examples::loopvol::LoopVolumes;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let socket = strata_plugin_examples::flag(&args, "--socket")
        .unwrap_or_else(|| "/run/strata/plugins/loopvol.sock".into());
    let root = strata_plugin_examples::flag(&args, "--root")
        .unwrap_or_else(|| "/var/lib/strata-loopvol".into());
    let driver = Arc::new(LoopVolumes::new(root.into())?);
    serve_at(
        Arc::new(PluginServer::volume_driver(driver)),
        socket.as_ref(),
    )
    .await?;
    Ok(())
}
