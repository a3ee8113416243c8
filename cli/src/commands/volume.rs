//! `volume create|ls|inspect|rm|prune`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::client::{q, Client};
use crate::table::{print_json_lines, str_of, Table};

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(CreateArgs),
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Display detailed information on one or more volumes.
    Inspect(NamesArgs),
    /// Remove one or more volumes.
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Remove unused local volumes.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    name: Option<String>,
    /// Volume driver name.
    #[arg(short, long, default_value = "local")]
    driver: String,
    /// Driver specific options (key=value).
    #[arg(short, long = "opt")]
    opt: Vec<String>,
    /// Metadata (key=value).
    #[arg(long)]
    label: Vec<String>,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only display volume names.
    #[arg(short, long)]
    quiet: bool,
    /// Output format: "json".
    #[arg(long)]
    format: Option<String>,
    /// Filter output (e.g. dangling=true, name=x, label=a=b).
    #[arg(short, long)]
    filter: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Do not fail on volumes that do not exist.
    #[arg(short, long)]
    force: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    all: bool,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    force: bool,
}

pub fn kv(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|i| {
            i.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("{i:?} is not key=value"))
        })
        .collect()
}

/// Docker's `filters` JSON from `key=value` flags.
pub fn filters_json(items: &[String]) -> anyhow::Result<String> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in items {
        let (k, v) = i
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("bad filter {i:?}: expected key=value"))?;
        map.entry(k.to_string()).or_default().push(v.to_string());
    }
    Ok(serde_json::to_string(&map)?)
}

pub async fn dispatch(client: &Client, c: VolumeCommand) -> anyhow::Result<u8> {
    match c {
        VolumeCommand::Create(a) => {
            let v = client
                .post(
                    "/volumes/create",
                    Some(json!({
                        "Name": a.name.unwrap_or_default(),
                        "Driver": a.driver,
                        "DriverOpts": kv(&a.opt)?,
                        "Labels": kv(&a.label)?,
                    })),
                )
                .await?;
            println!("{}", str_of(&v, "Name"));
        }
        VolumeCommand::Ls(a) => {
            let path = if a.filter.is_empty() {
                "/volumes".to_string()
            } else {
                format!("/volumes?filters={}", q(&filters_json(&a.filter)?))
            };
            let v = client.get(&path).await?;
            let vols = v
                .get("Volumes")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if a.format.as_deref() == Some("json") {
                print_json_lines(&vols);
            } else if a.quiet {
                for v in &vols {
                    println!("{}", str_of(v, "Name"));
                }
            } else {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in &vols {
                    t.row(vec![str_of(v, "Driver").into(), str_of(v, "Name").into()]);
                }
                t.print();
            }
        }
        VolumeCommand::Inspect(a) => {
            let mut out = Vec::new();
            let mut code = 0;
            for n in a.names {
                match client.get(&format!("/volumes/{}", q(&n))).await {
                    Ok(v) => out.push(v),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        code = 1;
                    }
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(code);
        }
        VolumeCommand::Rm(a) => {
            let mut code = 0;
            for n in a.names {
                let path = format!("/volumes/{}?force={}", q(&n), a.force);
                match client.delete(&path).await {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        code = 1;
                    }
                }
            }
            return Ok(code);
        }
        VolumeCommand::Prune(a) => {
            let _ = a.force;
            let path = if a.all {
                format!("/volumes/prune?filters={}", q(r#"{"all":["true"]}"#))
            } else {
                "/volumes/prune".to_string()
            };
            let r = client.post(&path, None).await?;
            let deleted = r
                .get("VolumesDeleted")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Volumes:");
                for d in deleted {
                    println!("{}", d.as_str().unwrap_or(""));
                }
                println!();
            }
            let space = r.get("SpaceReclaimed").and_then(Value::as_i64).unwrap_or(0);
            println!(
                "Total reclaimed space: {}",
                crate::table::human_size(space as f64)
            );
        }
    }
    Ok(0)
}
