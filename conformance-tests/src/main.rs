//! `strata-conformance`: runs the conformance suite on a built-in driver and prints a table of
//! cases with pass / FAIL / not applicable and the reasons. Exits non-zero on any failure.
//!
//! ```text
//! strata-conformance --driver vfs
//! strata-conformance --volume-driver local
//! strata-conformance --graphdriver-plugin /run/strata/plugins/myvfs.sock
//! strata-conformance --snapshotter /run/strata-snapshotter/overlay2.sock
//! strata-conformance --volume-plugin /run/strata/plugins/loopvol.sock
//! strata-conformance --list
//! ```
//!
//! A layer-driver plugin gets a fresh temporary home per case through `GraphDriver.Init`. A
//! volume plugin keeps its own root: start it with no volumes; each case's volumes are removed
//! after it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use strata_conformance::builtin::{builtin, builtin_volume, layer_factories, volume_factories};
use strata_conformance::plugin::{GraphPluginFactory, VolumePluginFactory};
use strata_conformance::report::{any_failed, run_layer_suite, run_volume_suite, table, Row};
use strata_conformance::snapshots::SnapshotterFactory;
use strata_conformance::{probe_capabilities, DriverFactory, VolumeFactory};

/// What to run the suite against.
enum Target {
    LayerDriver(String),
    VolumeDriver(String),
    GraphPlugin(PathBuf),
    VolumePlugin(PathBuf),
    /// A containerd snapshotter (strata-snapshotter on any driver): the layer cases through
    /// the Snapshots API.
    Snapshotter(PathBuf),
}

fn usage() -> String {
    let layers: Vec<String> = layer_factories()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let volumes: Vec<String> = volume_factories()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    format!(
        "usage: strata-conformance --driver NAME | --volume-driver NAME\n\
         \x20      | --graphdriver-plugin SOCKET | --volume-plugin SOCKET\n\
         \x20      | --snapshotter SOCKET | --list\n\
         built-in layer drivers: {}\nbuilt-in volume drivers: {}\n(run as root)",
        layers.join(", "),
        if volumes.is_empty() {
            "none".to_string()
        } else {
            volumes.join(", ")
        }
    )
}

fn parse_args() -> Result<Option<Target>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["--driver", name] => Ok(Some(Target::LayerDriver(name.to_string()))),
        ["--volume-driver", name] => Ok(Some(Target::VolumeDriver(name.to_string()))),
        ["--graphdriver-plugin", socket] => Ok(Some(Target::GraphPlugin(socket.into()))),
        ["--volume-plugin", socket] => Ok(Some(Target::VolumePlugin(socket.into()))),
        ["--snapshotter", socket] => Ok(Some(Target::Snapshotter(socket.into()))),
        ["--list"] => Ok(None),
        ["--help"] | ["-h"] => {
            println!("{}", usage());
            std::process::exit(0)
        }
        _ => bail!("{}", usage()),
    }
}

/// A plugin socket must exist before the suite starts: otherwise every case would wait out the
/// client's connection retries and fail the same way.
fn check_socket(socket: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(socket)
        .with_context(|| format!("no plugin socket at {}", socket.display()))?;
    if !meta.file_type().is_socket() {
        bail!("{} is not a unix socket", socket.display());
    }
    Ok(())
}

/// Opens the plugin once before the suite, so a plugin that does not answer is one clear error.
async fn check_graph_plugin(factory: &Arc<dyn DriverFactory>) -> Result<()> {
    probe_capabilities(factory)
        .await
        .map(|_| ())
        .map_err(|why| anyhow::anyhow!("the plugin does not work: {why}"))
}

/// Connects once and lists volumes: the suite needs a plugin that holds none yet.
async fn check_volume_plugin(factory: &Arc<dyn VolumeFactory>) -> Result<()> {
    let env = factory.prepare().await?;
    let driver = factory
        .open(env.root())
        .await
        .context("the plugin does not work")?;
    let held = driver
        .list()
        .await
        .context("listing the plugin's volumes")?;
    if !held.is_empty() {
        let names: Vec<String> = held.iter().map(|v| v.name.to_string()).collect();
        bail!(
            "the plugin already holds volumes ({}); run the suite on a plugin with none",
            names.join(", ")
        );
    }
    Ok(())
}

fn print_progress(row: &Row) {
    eprintln!("{:60} {}", row.test, row.outcome.label());
}

fn main() -> Result<()> {
    let target = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let rows = match target {
        None => {
            for f in layer_factories() {
                for c in strata_conformance::layer_cases() {
                    println!("{}::{}", f.name(), c.name);
                }
            }
            for f in volume_factories() {
                for c in strata_conformance::volume_cases() {
                    println!("{}::{}", f.name(), c.name);
                }
            }
            return Ok(());
        }
        Some(Target::LayerDriver(name)) => {
            let factory = builtin(&name)
                .with_context(|| format!("no built-in layer driver {name:?}\n{}", usage()))?;
            runtime.block_on(run_layer_suite(Arc::clone(&factory), print_progress))
        }
        Some(Target::VolumeDriver(name)) => {
            let factory = builtin_volume(&name)
                .with_context(|| format!("no built-in volume driver {name:?}\n{}", usage()))?;
            runtime.block_on(run_volume_suite(factory, print_progress))
        }
        Some(Target::GraphPlugin(socket)) => {
            check_socket(&socket)?;
            let factory = GraphPluginFactory::external(&socket).into_arc();
            runtime.block_on(async {
                check_graph_plugin(&factory).await?;
                Ok::<_, anyhow::Error>(run_layer_suite(factory, print_progress).await)
            })?
        }
        Some(Target::Snapshotter(socket)) => {
            check_socket(&socket)?;
            let factory = SnapshotterFactory::external(&socket).into_arc();
            runtime.block_on(async {
                check_graph_plugin(&factory).await?;
                Ok::<_, anyhow::Error>(run_layer_suite(factory, print_progress).await)
            })?
        }
        Some(Target::VolumePlugin(socket)) => {
            check_socket(&socket)?;
            let factory = VolumePluginFactory::external(&socket).into_arc();
            runtime.block_on(async {
                check_volume_plugin(&factory).await?;
                Ok::<_, anyhow::Error>(run_volume_suite(factory, print_progress).await)
            })?
        }
    };
    print!("{}", table(&rows));
    if any_failed(&rows) {
        std::process::exit(1);
    }
    Ok(())
}
