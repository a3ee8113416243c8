//! `version`, `info`, `system df`.

use clap::{Args, Subcommand};
use strata_api_types::container::ContainerSummary;
use strata_api_types::system::{DiskUsage, Info, Version};

use super::volume::Volume;
use crate::client::Client;
use crate::table::{ago_rfc3339, ago_unix, human_size, short_id, Table};

#[derive(Debug, Args)]
pub struct FormatArgs {
    /// Output format: "json" for raw JSON.
    #[arg(short, long)]
    format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show disk usage.
    Df(DfArgs),
    /// Display system-wide information.
    Info(FormatArgs),
}

#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    verbose: bool,
    /// Output format: "json" for raw JSON.
    #[arg(long)]
    format: Option<String>,
}

pub async fn dispatch(client: &Client, c: SystemCommand) -> anyhow::Result<u8> {
    match c {
        SystemCommand::Df(a) => df(client, a).await,
        SystemCommand::Info(a) => info(client, a).await,
    }
}

fn json_format(f: &Option<String>) -> bool {
    f.as_deref() == Some("json") || f.as_deref() == Some("{{json .}}")
}

pub async fn version(client: &Client, a: FormatArgs) -> anyhow::Result<u8> {
    let server: Result<Version, _> = client.get_as("/version").await;
    if json_format(&a.format) {
        let v = serde_json::json!({
            "Client": { "Version": env!("CARGO_PKG_VERSION"), "ApiVersion": crate::client::API_VERSION },
            "Server": server.as_ref().ok(),
        });
        println!("{v}");
        return Ok(if server.is_ok() { 0 } else { 1 });
    }
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" API version: {}", crate::client::API_VERSION);
    let server = server?;
    println!("\nServer: {}", server.platform.name);
    println!(" Engine:");
    println!("  Version:          {}", server.version);
    println!(
        "  API version:      {} (minimum version {})",
        server.api_version, server.min_api_version
    );
    println!("  OS/Arch:          {}/{}", server.os, server.arch);
    println!("  Kernel Version:   {}", server.kernel_version);
    Ok(0)
}

pub async fn info(client: &Client, a: FormatArgs) -> anyhow::Result<u8> {
    let i: Info = client.get_as("/info").await?;
    if json_format(&a.format) {
        println!("{}", serde_json::to_string(&i)?);
        return Ok(0);
    }
    println!("Server:");
    println!(" Containers: {}", i.containers);
    println!("  Running: {}", i.containers_running);
    println!("  Paused: {}", i.containers_paused);
    println!("  Stopped: {}", i.containers_stopped);
    println!(" Images: {}", i.images);
    println!(" Server Version: {}", i.server_version);
    println!(" Storage Driver: {}", i.driver);
    for [k, v] in &i.driver_status {
        println!("  {k}: {v}");
    }
    println!(" Logging Driver: {}", i.logging_driver);
    println!(" Cgroup Driver: {}", i.cgroup_driver);
    println!(" Cgroup Version: {}", i.cgroup_version);
    println!(" Plugins:");
    let plugins = &i.plugins;
    println!("  Volume: {}", plugins.volume.join(" "));
    if !plugins.storage.is_empty() {
        println!("  Storage: {}", plugins.storage.join(" "));
    }
    println!("  Network: {}", plugins.network.join(" "));
    println!("  Log: {}", plugins.log.join(" "));
    println!(" Kernel Version: {}", i.kernel_version);
    println!(" Operating System: {}", i.operating_system);
    println!(" OSType: {}", i.os_type);
    println!(" Architecture: {}", i.architecture);
    println!(" CPUs: {}", i.ncpu);
    println!(" Total Memory: {}", human_binary(i.mem_total as f64));
    println!(" Name: {}", i.name);
    println!(" ID: {}", i.id);
    println!(" Strata Root Dir: {}", i.docker_root_dir);
    Ok(0)
}

fn human_binary(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2}{}", units[i])
}

type Usage = DiskUsage<Volume>;

pub async fn df(client: &Client, a: DfArgs) -> anyhow::Result<u8> {
    let path = if a.verbose {
        "/system/df?verbose=1"
    } else {
        "/system/df"
    };
    let d: Usage = client.get_as(path).await?;
    if json_format(&a.format) {
        println!("{}", serde_json::to_string(&d)?);
        return Ok(0);
    }
    if a.verbose {
        images_usage(&d);
        containers_usage(&d);
        volumes_usage(&d);
        cache_usage(&d);
    } else {
        usage_summary(&d);
    }
    Ok(0)
}

/// A volume's `(size, users)`; the size is -1 when the driver cannot tell.
fn volume_usage(v: &Volume) -> (i64, i64) {
    v.usage_data.map_or((-1, 0), |u| (u.size, u.ref_count))
}

fn usage_summary(d: &Usage) {
    let images = d.images.as_deref().unwrap_or_default();
    let containers = d.containers.as_deref().unwrap_or_default();
    let volumes = d.volumes.as_deref().unwrap_or_default();
    let cache = d.build_cache.as_deref().unwrap_or_default();
    let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    let img_active = images.iter().filter(|i| i.containers > 0).count();
    let img_reclaim: i64 = images
        .iter()
        .filter(|i| i.containers == 0)
        .map(|i| i.size - i.shared_size.max(0))
        .sum();
    let img_size = d.layers_size.unwrap_or(0) as i64;
    t.row(row(
        "Images",
        images.len(),
        img_active,
        img_size,
        img_reclaim,
    ));
    let running = |c: &&ContainerSummary| c.state == "running";
    let size_rw = |c: &ContainerSummary| c.size_rw.unwrap_or(0);
    let c_active = containers.iter().filter(running).count();
    let c_size: i64 = containers.iter().map(size_rw).sum();
    let c_reclaim: i64 = containers.iter().filter(|c| !running(c)).map(size_rw).sum();
    t.row(row(
        "Containers",
        containers.len(),
        c_active,
        c_size,
        c_reclaim,
    ));
    let usage: Vec<(i64, i64)> = volumes.iter().map(volume_usage).collect();
    let v_active = usage.iter().filter(|(_, users)| *users > 0).count();
    let v_size: i64 = usage.iter().map(|(size, _)| size.max(&0)).sum();
    let v_reclaim: i64 = usage
        .iter()
        .filter(|(_, users)| *users == 0)
        .map(|(size, _)| size.max(&0))
        .sum();
    t.row(row(
        "Local Volumes",
        volumes.len(),
        v_active,
        v_size,
        v_reclaim,
    ));
    let b_size: i64 = cache.iter().map(|b| b.size).sum();
    t.row(row("Build Cache", cache.len(), 0, b_size, b_size));
    t.print();
}

fn images_usage(d: &Usage) {
    println!("Images space usage:\n");
    let mut t = Table::new(&[
        "REPOSITORY",
        "TAG",
        "IMAGE ID",
        "CREATED",
        "SIZE",
        "SHARED SIZE",
        "UNIQUE SIZE",
        "CONTAINERS",
        "ON DISK",
    ]);
    for i in d.images.iter().flatten() {
        let (repo, tag) = i
            .repo_tags
            .first()
            .and_then(|t| t.rsplit_once(':'))
            .unwrap_or(("<none>", "<none>"));
        let shared = i.shared_size.max(0);
        t.row(vec![
            repo.into(),
            tag.into(),
            short_id(&i.id),
            ago_unix(i.created),
            human_size(i.size as f64),
            human_size(shared as f64),
            human_size((i.size - shared) as f64),
            i.containers.to_string(),
            on_disk(i.strata.map(|s| s.on_disk)),
        ]);
    }
    t.print();
}

fn containers_usage(d: &Usage) {
    println!("\nContainers space usage:\n");
    let mut t = Table::new(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "LOCAL VOLUMES",
        "SIZE",
        "CREATED",
        "STATUS",
        "NAMES",
        "ON DISK",
    ]);
    for c in d.containers.iter().flatten() {
        let local_volumes = c
            .mounts
            .iter()
            .filter(|m| m.driver.as_deref() == Some("local"))
            .count();
        let names: Vec<&str> = c.names.iter().map(|n| n.trim_start_matches('/')).collect();
        t.row(vec![
            short_id(&c.id),
            c.image.clone(),
            format!("\"{}\"", truncate(&c.command, 20)),
            local_volumes.to_string(),
            human_size(c.size_rw.unwrap_or(0) as f64),
            ago_unix(c.created),
            c.status.clone(),
            names.join(","),
            on_disk(c.strata.map(|s| s.on_disk)),
        ]);
    }
    t.print();
}

fn volumes_usage(d: &Usage) {
    println!("\nLocal Volumes space usage:\n");
    let mut t = Table::new(&["VOLUME NAME", "LINKS", "SIZE"]);
    for v in d.volumes.iter().flatten() {
        let (size, users) = volume_usage(v);
        t.row(vec![
            v.name.clone(),
            users.to_string(),
            if size < 0 {
                "N/A".into()
            } else {
                human_size(size as f64)
            },
        ]);
    }
    t.print();
}

fn cache_usage(d: &Usage) {
    let cache = d.build_cache.as_deref().unwrap_or_default();
    println!(
        "\nBuild cache usage: {}\n",
        human_size(cache.iter().map(|b| b.size).sum::<i64>() as f64)
    );
    if cache.is_empty() {
        return;
    }
    let mut t = Table::new(&[
        "CACHE ID",
        "CACHE TYPE",
        "SIZE",
        "CREATED",
        "LAST USED",
        "USAGE",
        "SHARED",
    ]);
    for b in cache {
        t.row(vec![
            short_id(&b.id),
            b.kind.clone(),
            human_size(b.size as f64),
            ago_rfc3339(b.created_at.as_deref()),
            ago_rfc3339(b.last_used_at.as_deref()),
            b.usage_count.to_string(),
            b.shared.to_string(),
        ]);
    }
    t.print();
}

/// Our extension: the bytes this object really occupies on this driver.
fn on_disk(bytes: Option<i64>) -> String {
    bytes.map_or_else(|| "N/A".into(), |b| human_size(b as f64))
}

fn row(kind: &str, total: usize, active: usize, size: i64, reclaim: i64) -> Vec<String> {
    let pct = if size > 0 { reclaim * 100 / size } else { 0 };
    vec![
        kind.into(),
        total.to_string(),
        active.to_string(),
        human_size(size as f64),
        format!("{} ({pct}%)", human_size(reclaim as f64)),
    ]
}

pub fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}
