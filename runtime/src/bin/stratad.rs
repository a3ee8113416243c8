//! `stratad`: the Strata daemon. Serves the Docker Engine API on a unix socket.
//!
//! SIGTERM or SIGINT stops it within about ten seconds whatever is in flight: listeners stop
//! at once, open connections get `--shutdown-grace` to finish, running containers are
//! stopped (their stop signal, SIGKILL after a few seconds; we do not live-restore), and
//! the process exits without waiting for blocking work that is still stuck.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use strata_runtime::daemon::serve::ServeLimits;
use strata_runtime::daemon::{builtins, listen, serve, tls, Daemon, DaemonConfig};
use tokio::signal::unix::{signal, SignalKind};

/// The daemon's flags and those of its API listeners.
#[derive(Debug, Parser)]
#[command(
    name = "stratad",
    version,
    about = "The Strata container engine daemon"
)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonConfig,
    #[command(flatten)]
    listeners: ListenerFlags,
}

#[derive(Debug, clap::Args)]
struct ListenerFlags {
    /// Connections served at once on each -H address; more wait until one ends.
    #[arg(long, default_value_t = 400)]
    max_connections: usize,
    /// Seconds a TLS client may take to finish its handshake.
    #[arg(long, default_value_t = 10.0)]
    tls_handshake_timeout: f64,
    /// Seconds open API connections get to finish at shutdown.
    #[arg(long, default_value_t = 2.0)]
    shutdown_grace: f64,
}

impl ListenerFlags {
    fn limits(&self) -> anyhow::Result<ServeLimits> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v}: not a duration"))
        };
        anyhow::ensure!(
            self.max_connections > 0,
            "--max-connections must be at least 1"
        );
        Ok(ServeLimits {
            max_connections: self.max_connections,
            tls_handshake_timeout: secs("tls-handshake-timeout", self.tls_handshake_timeout)?,
            shutdown_grace: secs("shutdown-grace", self.shutdown_grace)?,
        })
    }
}

/// How long the blocking pool gets once everything else has stopped.
const BLOCKING_GRACE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.daemon.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stratad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // A blocking task stuck on something outside our control must not keep the process.
    runtime.shutdown_timeout(BLOCKING_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratad: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli {
        daemon: config,
        listeners,
    } = cli;
    let limits = listeners.limits()?;
    let tls_config = tls::server_config(
        config.tlsverify,
        config.tlscacert.as_deref(),
        config.tlscert.as_deref(),
        config.tlskey.as_deref(),
    )?;
    let addrs = config
        .listen_addresses()
        .iter()
        .map(|a| listen::parse_listen(a, tls::mode(tls_config.as_ref())))
        .collect::<Result<Vec<_>, _>>()?;

    let registry = builtins::layer_drivers();
    let volume_drivers = builtins::volume_drivers(&config.data_root).await?;
    let pidfile = config.pidfile.clone();
    let daemon = Daemon::start(config, &registry, volume_drivers)
        .await
        .context("start-up failed")?;
    if let Some(parent) = pidfile.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&pidfile, format!("{}\n", std::process::id()))
        .with_context(|| format!("write pid file {}", pidfile.display()))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
        let _ = stop_tx.send(true);
    });
    daemon.after_start();

    let served = serve::serve_all(daemon.clone(), addrs, tls_config, limits, stop_rx).await;
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&pidfile);
    served?;
    Ok(())
}
