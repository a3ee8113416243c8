//! `strata-vfs-plugin --socket PATH`: the built-in vfs driver served as a graphdriver plugin.
//! The engine gives it its home with GraphDriver.Init.

use std::path::PathBuf;
use std::sync::Arc;

use strata_core::registry::DriverConfig;
use strata_core::StorageOpts;
use strata_plugin::{serve_at, GraphFactory, PluginServer};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let socket = strata_plugin_examples::flag(&args, "--socket")
        .unwrap_or_else(|| "/run/strata/plugins/vfs-plugin.sock".into());
    let factory: GraphFactory = Arc::new(|home: PathBuf, opts: Vec<String>| {
        Box::pin(async move {
            let options = StorageOpts::parse(&opts)?;
            strata_vfs::init(DriverConfig {
                root: home,
                options,
            })
            .await
        })
    });
    serve_at(
        Arc::new(PluginServer::graph_driver(factory)),
        socket.as_ref(),
    )
    .await?;
    Ok(())
}
