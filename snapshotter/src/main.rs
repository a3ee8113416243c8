//! `strata-snapshotter`: Strata layer drivers as containerd proxy snapshotters.
//!
//! ```text
//! strata-snapshotter --driver overlay2 --root /var/lib/strata-snapshotter \
//!     --socket /run/strata-snapshotter/overlay2.sock
//! strata-snapshotter --driver overlay2 --driver btrfs --root /var/lib/strata-snapshotter \
//!     --socket-dir /run/strata-snapshotter          # strata-overlay2.sock, strata-btrfs.sock
//! strata-snapshotter df --socket-dir /run/strata-snapshotter
//! ```
//! Each driver's data and snapshot metadata live under `ROOT/DRIVER/` (`layers/`,
//! `metadata.redb`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use strata_snapshotter::drivers::DriverSource;
use strata_snapshotter::{df, server, StrataSnapshotter};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Serves Strata layer drivers as containerd snapshotters"
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// A built-in driver: overlay2, btrfs, fuse-overlay or vfs (repeat with --socket-dir).
    #[arg(long = "driver")]
    drivers: Vec<String>,
    /// The unix socket of a graphdriver plugin to serve instead of a built-in driver.
    #[arg(long)]
    graphdriver_plugin: Option<PathBuf>,
    /// Where the drivers' layers and the snapshot metadata are kept.
    #[arg(long)]
    root: Option<PathBuf>,
    /// The unix socket containerd's `[proxy_plugins]` entry names (one driver).
    #[arg(long, conflicts_with = "socket_dir")]
    socket: Option<PathBuf>,
    /// Serve each driver on `DIR/strata-DRIVER.sock`.
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    /// Driver options, as stratad's `--storage-opt` (e.g. `overlay2.mount_api=legacy`).
    #[arg(long = "storage-opt")]
    storage_opts: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Per driver, the bytes of each committed image chain and each active snapshot.
    Df {
        /// The directory of the running snapshotters' `strata-DRIVER.sock` sockets.
        #[arg(long)]
        socket_dir: PathBuf,
    },
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
    if let Some(Command::Df { socket_dir }) = &args.command {
        return print_df(socket_dir).await;
    }
    let root = args.root.clone().context("--root DIR is required")?;
    let served = sources_and_sockets(&args)?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (source, socket) in served {
        let snapshotter = open(&source, &root, &args.storage_opts).await?;
        let listener =
            server::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
        tracing::info!(driver = %source.name(), socket = %socket.display(), "serving");
        let mut stopped = stopped.clone();
        tasks.push(tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let served = server::serve(snapshotter, listener, shutdown).await;
            let _ = std::fs::remove_file(&socket);
            served
        }));
    }
    wait_for_signal().await?;
    let _ = stop.send(true);
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// What to serve where: one driver on `--socket`, or each on `--socket-dir`.
fn sources_and_sockets(args: &Args) -> anyhow::Result<Vec<(DriverSource, PathBuf)>> {
    let mut sources: Vec<DriverSource> = args
        .drivers
        .iter()
        .cloned()
        .map(DriverSource::Builtin)
        .collect();
    sources.extend(args.graphdriver_plugin.clone().map(DriverSource::Plugin));
    match (&args.socket, &args.socket_dir, sources.len()) {
        (_, _, 0) => bail!("name a driver with --driver NAME or --graphdriver-plugin SOCKET"),
        (Some(socket), None, 1) => Ok(vec![(sources.remove(0), socket.clone())]),
        (Some(_), None, _) => bail!("several drivers need --socket-dir DIR instead of --socket"),
        (None, Some(dir), _) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            Ok(sources
                .into_iter()
                .map(|s| {
                    let socket = dir.join(format!("strata-{}.sock", s.name()));
                    (s, socket)
                })
                .collect())
        }
        _ => bail!("give --socket PATH or --socket-dir DIR"),
    }
}

async fn open(
    source: &DriverSource,
    root: &Path,
    options: &[String],
) -> anyhow::Result<Arc<StrataSnapshotter>> {
    let home = root.join(source.name());
    let layers = home.join("layers");
    std::fs::create_dir_all(&layers).with_context(|| format!("creating {}", layers.display()))?;
    let driver = source
        .open(&layers, options)
        .await
        .with_context(|| format!("opening driver {}", source.name()))?;
    let snapshotter = StrataSnapshotter::open(driver, &home.join("metadata.redb"))
        .await
        .with_context(|| format!("opening the snapshot metadata of {}", source.name()))?;
    Ok(Arc::new(snapshotter))
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

async fn print_df(socket_dir: &Path) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (driver, socket) in df::sockets_in(socket_dir)? {
        rows.extend(df::rows(&driver, &socket).await?);
    }
    print!("{}", df::table(&rows));
    Ok(())
}
