//! Container commands other than run/create.

use clap::{Args, Subcommand};
use strata_api_types::container::{ContainerInspect, ContainerSummary, PruneReport, WaitResponse};
use tokio::io::AsyncWriteExt;

use crate::client::{next_chunk, q, Client, ReqBody};
use crate::table::{ago_unix, human_size, print_json_lines, short_id, Table};

use super::run::{self, RunArgs};
use super::system::truncate;

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    Run(RunArgs),
    Create(RunArgs),
    Start(StartArgs),
    Stop(StopArgs),
    Restart(StopArgs),
    Kill(KillArgs),
    #[command(alias = "remove")]
    Rm(RmArgs),
    #[command(alias = "list", alias = "ps")]
    Ls(PsArgs),
    Logs(LogsArgs),
    Wait(NamesArgs),
    Inspect(InspectArgs),
    /// Remove all stopped containers.
    Prune,
}

pub async fn dispatch(client: &Client, c: ContainerCommand) -> anyhow::Result<u8> {
    match c {
        ContainerCommand::Run(a) => run::run(client, a).await,
        ContainerCommand::Create(a) => run::create_cmd(client, a).await,
        ContainerCommand::Start(a) => start(client, a).await,
        ContainerCommand::Stop(a) => stop(client, a, "stop").await,
        ContainerCommand::Restart(a) => stop(client, a, "restart").await,
        ContainerCommand::Kill(a) => kill(client, a).await,
        ContainerCommand::Rm(a) => rm(client, a).await,
        ContainerCommand::Ls(a) => ps(client, a).await,
        ContainerCommand::Logs(a) => logs(client, a).await,
        ContainerCommand::Wait(a) => wait(client, a).await,
        ContainerCommand::Inspect(a) => inspect(client, a).await,
        ContainerCommand::Prune => {
            let r: PruneReport = client.post_as("/containers/prune").await?;
            for id in &r.containers_deleted {
                println!("{id}");
            }
            println!(
                "Total reclaimed space: {}",
                human_size(r.space_reclaimed as f64)
            );
            Ok(0)
        }
    }
}

#[derive(Debug, Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    interactive: bool,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Seconds to wait before killing the container.
    #[arg(short = 't', long = "time")]
    time: Option<i64>,
    /// Signal to send to the container.
    #[arg(short, long)]
    signal: Option<String>,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[arg(required = true)]
    names: Vec<String>,
    #[arg(short, long, default_value = "KILL")]
    signal: String,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    volumes: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    all: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    quiet: bool,
    /// Display total file sizes.
    #[arg(short, long)]
    size: bool,
    /// Output format: "json".
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate output.
    #[arg(long)]
    no_trunc: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    name: String,
    /// Follow log output.
    #[arg(short, long)]
    follow: bool,
    /// Number of lines to show from the end of the logs.
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    timestamps: bool,
    /// Show logs since timestamp or relative (e.g. 42m).
    #[arg(long)]
    since: Option<String>,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    #[arg(required = true)]
    names: Vec<String>,
    /// Display total file sizes.
    #[arg(short, long)]
    size: bool,
}

async fn each(names: &[String], mut f: impl AsyncFnMut(&str) -> anyhow::Result<()>) -> u8 {
    let mut code = 0;
    for n in names {
        match f(n).await {
            Ok(()) => println!("{n}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    code
}

pub async fn start(client: &Client, a: StartArgs) -> anyhow::Result<u8> {
    if a.attach {
        let name = a.names.first().cloned().unwrap_or_default();
        let info: ContainerInspect = client
            .get_as(&format!("/containers/{}/json", q(&name)))
            .await?;
        let tty = info.config.tty;
        return run::attach_start_wait(client, &info.id, tty, a.interactive, false).await;
    }
    Ok(each(&a.names, async |n| {
        client
            .post(&format!("/containers/{}/start", q(n)), None)
            .await?;
        Ok(())
    })
    .await)
}

pub async fn stop(client: &Client, a: StopArgs, verb: &str) -> anyhow::Result<u8> {
    let mut query = Vec::new();
    if let Some(t) = a.time {
        query.push(format!("t={t}"));
    }
    if let Some(s) = &a.signal {
        query.push(format!("signal={}", q(s)));
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    Ok(each(&a.names, async |n| {
        client
            .post(&format!("/containers/{}/{verb}{query}", q(n)), None)
            .await?;
        Ok(())
    })
    .await)
}

pub async fn kill(client: &Client, a: KillArgs) -> anyhow::Result<u8> {
    Ok(each(&a.names, async |n| {
        client
            .post(
                &format!("/containers/{}/kill?signal={}", q(n), q(&a.signal)),
                None,
            )
            .await?;
        Ok(())
    })
    .await)
}

pub async fn rm(client: &Client, a: RmArgs) -> anyhow::Result<u8> {
    Ok(each(&a.names, async |n| {
        client
            .delete(&format!(
                "/containers/{}?force={}&v={}",
                q(n),
                a.force,
                a.volumes
            ))
            .await?;
        Ok(())
    })
    .await)
}

pub async fn ps(client: &Client, a: PsArgs) -> anyhow::Result<u8> {
    let items: Vec<ContainerSummary> = client
        .get_as(&format!("/containers/json?all={}&size={}", a.all, a.size))
        .await?;
    if a.format.as_deref() == Some("json") {
        print_json_lines(&items);
        return Ok(0);
    }
    if a.quiet {
        for c in &items {
            println!("{}", short_id(&c.id));
        }
        return Ok(0);
    }
    let mut header = vec![
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ];
    if a.size {
        header.push("SIZE");
    }
    let mut t = Table::new(&header);
    for c in &items {
        let names: Vec<&str> = c.names.iter().map(|n| n.trim_start_matches('/')).collect();
        let command = if a.no_trunc {
            c.command.clone()
        } else {
            truncate(&c.command, 20)
        };
        let mut row = vec![
            if a.no_trunc {
                c.id.clone()
            } else {
                short_id(&c.id)
            },
            c.image.clone(),
            format!("\"{command}\""),
            ago_unix(c.created),
            c.status.clone(),
            String::new(),
            names.join(","),
        ];
        if a.size {
            row.push(format!(
                "{} (virtual {})",
                human_size(c.size_rw.unwrap_or(0) as f64),
                human_size(c.size_root_fs.unwrap_or(0) as f64)
            ));
        }
        t.row(row);
    }
    t.print();
    Ok(0)
}

pub async fn logs(client: &Client, a: LogsArgs) -> anyhow::Result<u8> {
    let info: ContainerInspect = client
        .get_as(&format!("/containers/{}/json", q(&a.name)))
        .await?;
    let tty = info.config.tty;
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
        q(&a.name),
        a.follow,
        a.timestamps,
        q(&a.tail)
    );
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", q(s)));
    }
    let resp = client
        .request(hyper::Method::GET, &path, ReqBody::Empty)
        .await?;
    let mut body = resp.into_body();
    let mut demux = run::Demux::new(tty);
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    while let Some(chunk) = next_chunk(&mut body).await? {
        for (stream, data) in demux.feed(&chunk) {
            if stream == 2 {
                err.write_all(&data).await?;
            } else {
                out.write_all(&data).await?;
            }
        }
        out.flush().await?;
    }
    Ok(0)
}

pub async fn wait(client: &Client, a: NamesArgs) -> anyhow::Result<u8> {
    let mut code = 0;
    for n in &a.names {
        match client
            .post_as::<WaitResponse>(&format!("/containers/{}/wait", q(n)))
            .await
        {
            Ok(v) => println!("{}", v.status_code),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// Inspects containers, falling back to images and volumes, as docker's `inspect` does.
pub async fn inspect(client: &Client, a: InspectArgs) -> anyhow::Result<u8> {
    let mut out = Vec::new();
    let mut code = 0;
    for n in &a.names {
        let candidates = [
            format!("/containers/{}/json?size={}", q(n), a.size),
            format!("/images/{}/json", q(n)),
            format!("/volumes/{}", q(n)),
        ];
        let mut found = None;
        for path in &candidates {
            match client.get(path).await {
                Ok(v) => {
                    found = Some(v);
                    break;
                }
                Err(e) if e.status() == Some(hyper::StatusCode::NOT_FOUND) => continue,
                Err(e) => {
                    eprintln!("Error: {e}");
                    break;
                }
            }
        }
        match found {
            Some(v) => out.push(v),
            None => {
                eprintln!("Error: No such object: {n}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}
