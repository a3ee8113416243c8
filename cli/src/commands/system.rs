//! `version`, `info`, `system df`.

use clap::{Args, Subcommand};
use serde_json::Value;
use strata_api_types::system::{Info, Version};

use crate::client::Client;
use crate::table::{ago, human_size, i64_of, short_id, str_of, Table};

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

fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

pub async fn df(client: &Client, a: DfArgs) -> anyhow::Result<u8> {
    let path = if a.verbose {
        "/system/df?verbose=1"
    } else {
        "/system/df"
    };
    let d = client.get(path).await?;
    if json_format(&a.format) {
        println!("{d}");
        return Ok(0);
    }
    let images = arr(&d, "Images");
    let containers = arr(&d, "Containers");
    let volumes = arr(&d, "Volumes");
    let cache = arr(&d, "BuildCache");
    if !a.verbose {
        let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
        let img_active = images
            .iter()
            .filter(|i| i64_of(i, "Containers") > 0)
            .count();
        let img_size = i64_of(&d, "LayersSize");
        let img_reclaim: i64 = images
            .iter()
            .filter(|i| i64_of(i, "Containers") == 0)
            .map(|i| i64_of(i, "Size") - i64_of(i, "SharedSize").max(0))
            .sum();
        t.row(row(
            "Images",
            images.len(),
            img_active,
            img_size,
            img_reclaim,
        ));
        let c_active = containers
            .iter()
            .filter(|c| str_of(c, "State") == "running")
            .count();
        let c_size: i64 = containers.iter().map(|c| i64_of(c, "SizeRw")).sum();
        let c_reclaim: i64 = containers
            .iter()
            .filter(|c| str_of(c, "State") != "running")
            .map(|c| i64_of(c, "SizeRw"))
            .sum();
        t.row(row(
            "Containers",
            containers.len(),
            c_active,
            c_size,
            c_reclaim,
        ));
        let v_active = volumes
            .iter()
            .filter(|v| {
                v.pointer("/UsageData/RefCount")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    > 0
            })
            .count();
        let v_size: i64 = volumes
            .iter()
            .map(|v| {
                v.pointer("/UsageData/Size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .max(0)
            })
            .sum();
        let v_reclaim: i64 = volumes
            .iter()
            .filter(|v| {
                v.pointer("/UsageData/RefCount")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    == 0
            })
            .map(|v| {
                v.pointer("/UsageData/Size")
                    .and_then(Value::as_i64)
                    .unwrap_or(0)
                    .max(0)
            })
            .sum();
        t.row(row(
            "Local Volumes",
            volumes.len(),
            v_active,
            v_size,
            v_reclaim,
        ));
        let b_size: i64 = cache.iter().map(|b| i64_of(b, "Size")).sum();
        t.row(row("Build Cache", cache.len(), 0, b_size, b_size));
        t.print();
        return Ok(0);
    }
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
    for i in images {
        let tags: Vec<&str> = arr(i, "RepoTags")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let (repo, tag) = tags
            .first()
            .and_then(|t| t.rsplit_once(':'))
            .unwrap_or(("<none>", "<none>"));
        let size = i64_of(i, "Size");
        let shared = i64_of(i, "SharedSize").max(0);
        t.row(vec![
            repo.into(),
            tag.into(),
            short_id(str_of(i, "Id")),
            ago(i.get("Created").unwrap_or(&Value::Null)),
            human_size(size as f64),
            human_size(shared as f64),
            human_size((size - shared) as f64),
            i64_of(i, "Containers").to_string(),
            on_disk(i),
        ]);
    }
    t.print();
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
    for c in containers {
        let local_volumes = arr(c, "Mounts")
            .iter()
            .filter(|m| str_of(m, "Driver") == "local")
            .count();
        let names: Vec<&str> = arr(c, "Names")
            .iter()
            .filter_map(Value::as_str)
            .map(|n| n.trim_start_matches('/'))
            .collect();
        t.row(vec![
            short_id(str_of(c, "Id")),
            str_of(c, "Image").into(),
            format!("\"{}\"", truncate(str_of(c, "Command"), 20)),
            local_volumes.to_string(),
            human_size(i64_of(c, "SizeRw") as f64),
            ago(c.get("Created").unwrap_or(&Value::Null)),
            str_of(c, "Status").into(),
            names.join(","),
            on_disk(c),
        ]);
    }
    t.print();
    println!("\nLocal Volumes space usage:\n");
    let mut t = Table::new(&["VOLUME NAME", "LINKS", "SIZE"]);
    for v in volumes {
        let size = v
            .pointer("/UsageData/Size")
            .and_then(Value::as_i64)
            .unwrap_or(-1);
        t.row(vec![
            str_of(v, "Name").into(),
            v.pointer("/UsageData/RefCount")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
            if size < 0 {
                "N/A".into()
            } else {
                human_size(size as f64)
            },
        ]);
    }
    t.print();
    println!(
        "\nBuild cache usage: {}\n",
        human_size(cache.iter().map(|b| i64_of(b, "Size")).sum::<i64>() as f64)
    );
    if !cache.is_empty() {
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
                short_id(str_of(b, "ID")),
                str_of(b, "Type").into(),
                human_size(i64_of(b, "Size") as f64),
                ago(b.get("CreatedAt").unwrap_or(&Value::Null)),
                ago(b.get("LastUsedAt").unwrap_or(&Value::Null)),
                i64_of(b, "UsageCount").to_string(),
                b.get("Shared")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
                    .to_string(),
            ]);
        }
        t.print();
    }
    Ok(0)
}

/// Our extension: the bytes this object really occupies on this driver.
fn on_disk(v: &Value) -> String {
    match v.pointer("/Strata/OnDisk").and_then(Value::as_i64) {
        Some(b) => human_size(b as f64),
        None => "N/A".into(),
    }
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
