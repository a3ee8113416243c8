//! `strata-conformance`: runs the conformance suite on a built-in driver and prints a table of
//! cases with pass / FAIL / not applicable and the reasons. Exits non-zero on any failure.
//!
//! ```text
//! strata-conformance --driver vfs
//! strata-conformance --volume-driver local
//! strata-conformance --list
//! ```

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use strata_conformance::builtin::{builtin, builtin_volume, layer_factories, volume_factories};
use strata_conformance::report::{any_failed, run_layer_suite, run_volume_suite, table, Row};

/// What to run the suite against. Plugin sockets (`--graphdriver-plugin PATH`,
/// `--volume-plugin PATH`) will be two more variants here, each turned into a factory.
enum Target {
    LayerDriver(String),
    VolumeDriver(String),
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
        "usage: strata-conformance --driver NAME | --volume-driver NAME | --list\n\
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
        ["--list"] => Ok(None),
        ["--help"] | ["-h"] => {
            println!("{}", usage());
            std::process::exit(0)
        }
        _ => bail!("{}", usage()),
    }
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
    };
    print!("{}", table(&rows));
    if any_failed(&rows) {
        std::process::exit(1);
    }
    Ok(())
}
