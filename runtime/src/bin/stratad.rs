//! `stratad`: the Strata daemon. Serves the Docker Engine API on a unix socket.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use strata_runtime::daemon::{builtins, listen, serve, tls, Daemon, DaemonConfig};
use tokio::signal::unix::{signal, SignalKind};

fn main() -> ExitCode {
    let config = DaemonConfig::parse();
    init_logging(&config.log_level);
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
    match runtime.block_on(run(config)) {
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

async fn run(config: DaemonConfig) -> anyhow::Result<()> {
    let tls_config = tls::server_config(
        config.tlsverify,
        config.tlscacert.as_deref(),
        config.tlscert.as_deref(),
        config.tlskey.as_deref(),
    )?;
    let addrs = config
        .listen_addresses()
        .iter()
        .map(|a| listen::parse_listen(a, tls_config.is_some()))
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

    let served = serve::serve_all(daemon.clone(), addrs, tls_config, stop_rx).await;
    daemon.shutdown().await;
    let _ = std::fs::remove_file(&pidfile);
    served?;
    Ok(())
}
