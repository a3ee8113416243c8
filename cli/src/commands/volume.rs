//! `volume create|ls|inspect|rm|prune`.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use hyper::Method;
use strata_api_types::volume::{VolumeCreateRequest, VolumeListResponse, VolumePruneReport};

use crate::client::{q, Client, ReqBody};
use crate::table::{print_json_lines, Table};

/// A volume as the daemon shows it; its driver's `Status` is any JSON.
pub type Volume = strata_api_types::volume::Volume<serde_json::Value>;

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
            let body = VolumeCreateRequest {
                name: Some(a.name.unwrap_or_default()),
                driver: Some(a.driver),
                driver_opts: Some(kv(&a.opt)?),
                labels: Some(kv(&a.label)?),
            };
            let body = ReqBody::Json(serde_json::to_value(body)?);
            let v: Volume = client.typed(Method::POST, "/volumes/create", body).await?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls(a) => {
            let path = if a.filter.is_empty() {
                "/volumes".to_string()
            } else {
                format!("/volumes?filters={}", q(&filters_json(&a.filter)?))
            };
            let list: VolumeListResponse<Volume> = client.get_as(&path).await?;
            let vols = list.volumes;
            if a.format.as_deref() == Some("json") {
                print_json_lines(&vols);
            } else if a.quiet {
                for v in &vols {
                    println!("{}", v.name);
                }
            } else {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in &vols {
                    t.row(vec![v.driver.clone(), v.name.clone()]);
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
            let r: VolumePruneReport = client.post_as(&path).await?;
            if !r.volumes_deleted.is_empty() {
                println!("Deleted Volumes:");
                for d in &r.volumes_deleted {
                    println!("{d}");
                }
                println!();
            }
            println!(
                "Total reclaimed space: {}",
                crate::table::human_size(r.space_reclaimed as f64)
            );
        }
    }
    Ok(0)
}
