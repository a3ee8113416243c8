//! `strata-snapshotter`: a Strata layer driver as a containerd proxy snapshotter.
//!
//! ```text
//! strata-snapshotter --driver overlay2 --root /var/lib/strata-snapshotter \
//!     --socket /run/strata-snapshotter/overlay2.sock
//! ```
//! The driver's data and the metadata live under `ROOT/DRIVER/` (`layers/`, `metadata.redb`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Parser;
use strata_snapshotter::drivers::DriverSource;
use strata_snapshotter::{server, StrataSnapshotter};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves a Strata layer driver as a containerd snapshotter"
)]
struct Args {
    /// A built-in driver: overlay2, btrfs, fuse-overlay or vfs.
    #[arg(long, conflicts_with = "graphdriver_plugin")]
    driver: Option<String>,
    /// The unix socket of a graphdriver plugin to use instead of a built-in driver.
    #[arg(long)]
    graphdriver_plugin: Option<PathBuf>,
    /// Where the driver's layers and the snapshot metadata are kept.
    #[arg(long)]
    root: PathBuf,
    /// The unix socket containerd's `[proxy_plugins]` entry names.
    #[arg(long)]
    socket: PathBuf,
    /// Driver options, as stratad's `--storage-opt` (e.g. `overlay2.mount_api=legacy`).
    #[arg(long = "storage-opt")]
    storage_opts: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let source = match (args.driver, args.graphdriver_plugin) {
        (Some(name), None) => DriverSource::Builtin(name),
        (None, Some(socket)) => DriverSource::Plugin(socket),
        _ => bail!("name a driver with --driver NAME or --graphdriver-plugin SOCKET"),
    };
    let home = args.root.join(source.name());
    let layers = home.join("layers");
    std::fs::create_dir_all(&layers).with_context(|| format!("creating {}", layers.display()))?;
    let driver = source
        .open(&layers, &args.storage_opts)
        .await
        .with_context(|| format!("opening driver {}", source.name()))?;
    let snapshotter = StrataSnapshotter::open(driver, &home.join("metadata.redb"))
        .await
        .context("opening the snapshot metadata")?;
    let listener =
        server::bind(&args.socket).with_context(|| format!("binding {}", args.socket.display()))?;
    tracing::info!(driver = %source.name(), socket = %args.socket.display(), "serving");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
    };
    server::serve(Arc::new(snapshotter), listener, shutdown).await?;
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
