//! `run` and `create`: Docker's flags turned into a create request, then (for run) attach,
//! wait, start and the exit code, in the order the docker CLI uses.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use clap::Args;
use hyper::Method;
use strata_api_types::container::{CreateResponse, WaitResponse};
use strata_api_types::mount::{BindOptions, Driver, TmpfsOptions, VolumeOptions};
use strata_api_types::serde_util::Empty;
use strata_api_types::{Config, ContainerCreateRequest, HostConfig, Mount};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{q, Client, ClientError, ReqBody};

use super::volume::kv;

#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Automatically remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Run container in background and print container ID.
    #[arg(short, long)]
    detach: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// Set environment variables.
    #[arg(short, long = "env")]
    env: Vec<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]).
    #[arg(short, long)]
    user: Option<String>,
    /// Assign a name to the container.
    #[arg(long)]
    name: Option<String>,
    /// Container host name.
    #[arg(long)]
    hostname: Option<String>,
    /// Bind mount a volume (name:/path[:ro], /host:/path[:ro], /path).
    #[arg(short, long = "volume")]
    volume: Vec<String>,
    /// Attach a filesystem mount (type=bind|volume|tmpfs,source=,target=,readonly,...).
    #[arg(long)]
    mount: Vec<String>,
    /// Mount a tmpfs directory (/path[:options]).
    #[arg(long)]
    tmpfs: Vec<String>,
    /// Memory limit (e.g. 100m).
    #[arg(short, long)]
    memory: Option<String>,
    /// Swap limit equal to memory plus swap: -1 for unlimited.
    #[arg(long)]
    memory_swap: Option<String>,
    /// Number of CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long)]
    cpu_shares: Option<i64>,
    /// Tune container pids limit (-1 for unlimited).
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Mount the container's root filesystem as read only.
    #[arg(long)]
    read_only: bool,
    /// Connect a container to a network: none or host.
    #[arg(long, default_value = "none")]
    network: String,
    /// Run an init inside the container that forwards signals and reaps processes.
    #[arg(long)]
    init: bool,
    /// Overwrite the default ENTRYPOINT of the image.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Set metadata on a container.
    #[arg(short, long)]
    label: Vec<String>,
    /// Pull image before running: missing (default), always or never.
    #[arg(long, default_value = "missing")]
    pull: String,
    image: String,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn parse_size(s: &str) -> anyhow::Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let v: f64 = n
        .parse()
        .map_err(|_| anyhow::anyhow!("invalid size: {s:?}"))?;
    let m: f64 = match unit.trim_end_matches('b') {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        _ => anyhow::bail!("invalid size: {s:?}"),
    };
    Ok((v * m) as i64)
}

/// `--mount type=bind,source=/a,target=/b,readonly` → HostConfig.Mounts entry.
fn parse_mount(spec: &str) -> anyhow::Result<Mount> {
    let mut m = Mount {
        kind: "volume".into(),
        ..Default::default()
    };
    let mut volume = VolumeOptions::default();
    let mut driver_opts = BTreeMap::new();
    let mut tmpfs = TmpfsOptions::default();
    let mut bind = BindOptions::default();
    for field in spec.split(',') {
        let (k, v) = field.split_once('=').unwrap_or((field, ""));
        match k {
            "type" => m.kind = v.to_string(),
            "source" | "src" => m.source = v.to_string(),
            "target" | "destination" | "dst" => m.target = v.to_string(),
            "readonly" | "ro" => m.read_only = v.is_empty() || v == "true" || v == "1",
            "volume-nocopy" => volume.no_copy = v.is_empty() || v == "true",
            "volume-driver" => {
                volume
                    .driver_config
                    .get_or_insert_with(Driver::default)
                    .name = v.to_string()
            }
            "volume-opt" => {
                let (ok, ov) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("invalid volume-opt {v:?}"))?;
                driver_opts.insert(ok.to_string(), ov.to_string());
            }
            "tmpfs-size" => tmpfs.size_bytes = parse_size(v)?,
            "tmpfs-mode" => {
                tmpfs.mode = u32::from_str_radix(v, 8)
                    .map_err(|_| anyhow::anyhow!("invalid tmpfs-mode {v:?}"))?;
            }
            "bind-propagation" => bind.propagation = v.to_string(),
            other => anyhow::bail!("unexpected key {other:?} in {spec:?}"),
        }
    }
    if !driver_opts.is_empty() {
        volume
            .driver_config
            .get_or_insert_with(Driver::default)
            .options = Some(driver_opts);
    }
    m.volume_options = (volume != VolumeOptions::default()).then_some(volume);
    m.tmpfs_options = (tmpfs != TmpfsOptions::default()).then_some(tmpfs);
    m.bind_options = (bind != BindOptions::default()).then_some(bind);
    Ok(m)
}

fn create_body(a: &RunArgs) -> anyhow::Result<ContainerCreateRequest> {
    let (binds, anonymous): (Vec<&String>, Vec<&String>) =
        a.volume.iter().partition(|v| v.contains(':'));
    let tmpfs: BTreeMap<String, String> = a
        .tmpfs
        .iter()
        .map(|t| t.split_once(':').unwrap_or((t.as_str(), "")))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mounts = a
        .mount
        .iter()
        .map(|m| parse_mount(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let memory = a.memory.as_deref().map(parse_size).transpose()?;
    let memory_swap = match a.memory_swap.as_deref() {
        Some("-1") => Some(-1),
        Some(s) => Some(parse_size(s)?),
        None => None,
    };
    let attach = !a.detach;
    let config = Config {
        hostname: a.hostname.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        attach_stdin: attach && a.interactive,
        attach_stdout: attach,
        attach_stderr: attach,
        tty: a.tty,
        open_stdin: a.interactive,
        stdin_once: attach && a.interactive,
        env: Some(a.env.clone()),
        cmd: (!a.command.is_empty()).then(|| a.command.clone()),
        image: a.image.clone(),
        volumes: Some(anonymous.iter().map(|v| (v.to_string(), Empty)).collect()),
        working_dir: a.workdir.clone().unwrap_or_default(),
        entrypoint: a.entrypoint.as_ref().map(|e| vec![e.clone()]),
        labels: Some(kv(&a.label)?),
        ..Default::default()
    };
    let host_config = HostConfig {
        binds: Some(binds.into_iter().cloned().collect()),
        mounts: Some(mounts),
        tmpfs: Some(tmpfs),
        network_mode: a.network.clone(),
        auto_remove: a.rm,
        readonly_rootfs: a.read_only,
        init: Some(a.init),
        memory: memory.unwrap_or(0),
        memory_swap: memory_swap.unwrap_or(0),
        nano_cpus: a.cpus.map_or(0, |c| (c * 1e9) as i64),
        cpu_shares: a.cpu_shares.unwrap_or(0),
        pids_limit: a.pids_limit,
        ..Default::default()
    };
    Ok(ContainerCreateRequest {
        config,
        host_config: Some(host_config),
        networking_config: None,
    })
}

/// Creates the container; a missing image is pulled first (`--pull missing`, the default) or
/// always (`--pull always`), as the docker CLI does.
async fn create(client: &Client, a: &RunArgs) -> anyhow::Result<String> {
    if a.pull == "always" {
        super::registry::pull_image(client, &a.image, false).await?;
    }
    match create_once(client, a).await {
        Err(e) if is_missing_image(&e) && a.pull == "missing" => {
            eprintln!("Unable to find image '{}' locally", a.image);
            super::registry::pull_image(client, &a.image, false).await?;
            create_once(client, a).await
        }
        other => other,
    }
}

fn is_missing_image(e: &anyhow::Error) -> bool {
    e.downcast_ref::<crate::client::ClientError>()
        .is_some_and(|c| c.status() == Some(hyper::StatusCode::NOT_FOUND))
}

async fn create_once(client: &Client, a: &RunArgs) -> anyhow::Result<String> {
    let mut path = "/containers/create".to_string();
    if let Some(n) = &a.name {
        path.push_str(&format!("?name={}", q(n)));
    }
    let body = ReqBody::Json(serde_json::to_value(create_body(a)?)?);
    let created: CreateResponse = client.typed(Method::POST, &path, body).await?;
    for w in &created.warnings {
        eprintln!("WARNING: {w}");
    }
    Ok(created.id)
}

pub async fn create_cmd(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    match create(client, &a).await {
        Ok(id) => {
            println!("{id}");
            Ok(0)
        }
        Err(e) => {
            eprintln!("strata: {e:#}");
            Ok(125)
        }
    }
}

pub async fn run(client: &Client, a: RunArgs) -> anyhow::Result<u8> {
    let id = match create(client, &a).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("strata: {e:#}");
            return Ok(125);
        }
    };
    if a.detach {
        if let Err(e) = client.post(&format!("/containers/{id}/start"), None).await {
            eprintln!("strata: {e}");
            return Ok(125);
        }
        println!("{id}");
        return Ok(0);
    }
    attach_start_wait(client, &id, a.tty, a.interactive, a.rm).await
}

/// Splits Docker's multiplexed stream into (stream, payload) pieces; raw for TTYs.
pub struct Demux {
    tty: bool,
    buf: Vec<u8>,
}

impl Demux {
    pub fn new(tty: bool) -> Self {
        Self {
            tty,
            buf: Vec::new(),
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        if self.tty {
            return vec![(1, data.to_vec())];
        }
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while self.buf.len() >= 8 {
            let len =
                u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
            if self.buf.len() < 8 + len {
                break;
            }
            let stream = self.buf[0];
            let payload = self.buf[8..8 + len].to_vec();
            self.buf.drain(..8 + len);
            out.push((stream, payload));
        }
        out
    }
}

/// Restores the terminal's mode when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter(enable: bool) -> Self {
        if !enable || !std::io::stdin().is_terminal() {
            return Self(None);
        }
        let stdin = std::io::stdin();
        let Ok(orig) = nix::sys::termios::tcgetattr(&stdin) else {
            return Self(None);
        };
        let mut raw = orig.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw);
        Self(Some(orig))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                orig,
            );
        }
    }
}

/// Attaches, arms wait, starts, streams the output and returns the container's exit code.
pub async fn attach_start_wait(
    client: &Client,
    id: &str,
    tty: bool,
    stdin: bool,
    auto_remove: bool,
) -> anyhow::Result<u8> {
    let conn = client
        .hijack(&format!(
            "/containers/{id}/attach?stream=1&stdout=1&stderr=1&stdin={}",
            u8::from(stdin)
        ))
        .await?;
    let condition = if auto_remove { "removed" } else { "next-exit" };
    let wait = {
        let client = client.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            client
                .post_as::<WaitResponse>(&format!("/containers/{id}/wait?condition={condition}"))
                .await
        })
    };
    if let Err(e) = client.post(&format!("/containers/{id}/start"), None).await {
        eprintln!("strata: {e}");
        return Ok(125);
    }
    let _raw = RawMode::enter(tty && stdin);
    let (mut reader, mut writer) = tokio::io::split(conn);
    if stdin {
        tokio::spawn(async move {
            let mut input = tokio::io::stdin();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match input.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = writer.shutdown().await;
        });
    }
    let mut demux = Demux::new(tty);
    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for (stream, data) in demux.feed(&buf[..n]) {
            if stream == 2 {
                err.write_all(&data).await?;
                err.flush().await?;
            } else {
                out.write_all(&data).await?;
            }
        }
        out.flush().await?;
    }
    let status = match wait.await {
        Ok(Ok(v)) => v,
        Ok(Err(ClientError::Status { message, .. })) => {
            eprintln!("strata: {message}");
            return Ok(125);
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(e) => anyhow::bail!("wait failed: {e}"),
    };
    if let Some(error) = status.error.filter(|e| !e.message.is_empty()) {
        eprintln!("strata: {}", error.message);
    }
    Ok(status.status_code.clamp(0, 255) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_flag_parses() {
        let m = parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1777").unwrap();
        assert_eq!(m.kind, "tmpfs");
        let tmpfs = m.tmpfs_options.unwrap();
        assert_eq!((tmpfs.size_bytes, tmpfs.mode), (1048576, 0o1777));
        let m = parse_mount("type=volume,source=v,target=/d,volume-opt=type=tmpfs").unwrap();
        let driver = m.volume_options.unwrap().driver_config.unwrap();
        assert_eq!(driver.options.unwrap()["type"], "tmpfs");
        assert!(parse_mount("type=bind,bogus=1").is_err());
    }

    #[test]
    fn demux_splits_frames() {
        let mut d = Demux::new(false);
        let mut data = vec![1, 0, 0, 0, 0, 0, 0, 2, b'h', b'i', 2, 0, 0, 0, 0, 0, 0, 1];
        let first = d.feed(&data[..12]);
        assert_eq!(first, vec![(1, b"hi".to_vec())]);
        data.push(b'!');
        let second = d.feed(&data[12..]);
        assert_eq!(second, vec![(2, b"!".to_vec())]);
    }
}
