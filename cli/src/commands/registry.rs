//! `strata pull`, `push`, `login`, `logout`. Credentials are kept as the docker CLI keeps
//! them: `{"auths":{"HOST":{"auth":"base64(user:password)"}}}` in `$STRATA_CONFIG/config.json`
//! (default `~/.strata/config.json`, mode 0600), and sent with each pull and push in
//! `X-Registry-Auth`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use hyper::Method;
use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_api_types::system::AuthResponse;
use strata_distribution::reference::{ImageRef, DOCKER_HUB};

use crate::client::{q, Client, ReqBody};
use crate::progress;

#[derive(Default, Serialize, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, StoredAuth>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct StoredAuth {
    auth: String,
}

fn config_path() -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("STRATA_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".strata"),
    };
    Ok(dir.join("config.json"))
}

fn read_config() -> anyhow::Result<ConfigFile> {
    let path = config_path()?;
    match std::fs::read(&path) {
        Ok(raw) => serde_json::from_slice(&raw).with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigFile::default()),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

fn write_config(cfg: &ConfigFile) -> anyhow::Result<()> {
    let path = config_path()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    serde_json::to_writer_pretty(&mut f, cfg)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// The key credentials are stored under: the registry host (Docker Hub's usual address).
fn server_key(registry: &str) -> String {
    if registry == DOCKER_HUB {
        "https://index.docker.io/v1/".into()
    } else {
        registry.to_string()
    }
}

/// The `X-Registry-Auth` value for `registry` (`{}` when not logged in).
fn registry_auth(registry: &str) -> anyhow::Result<String> {
    let key = server_key(registry);
    let cfg = read_config()?;
    let header = match cfg.auths.get(&key) {
        Some(a) => {
            let pair = base64::engine::general_purpose::STANDARD.decode(&a.auth)?;
            let pair = String::from_utf8_lossy(&pair).into_owned();
            let (user, password) = pair.split_once(':').unwrap_or((&pair, ""));
            json!({ "username": user, "password": password, "serveraddress": key })
        }
        None => json!({}),
    };
    Ok(base64::engine::general_purpose::URL_SAFE.encode(header.to_string()))
}

#[derive(Debug, Args)]
pub struct PullArgs {
    name: String,
    /// Set platform if server is multi-platform capable (os/arch[/variant]).
    #[arg(long)]
    platform: Option<String>,
    /// Suppress verbose output.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn pull(client: &Client, a: PullArgs) -> anyhow::Result<u8> {
    pull_platform(client, &a.name, a.platform.as_deref(), a.quiet).await?;
    Ok(0)
}

/// Pulls `name` for the daemon's platform (what `run` does for a missing image).
pub async fn pull_image(client: &Client, name: &str, quiet: bool) -> anyhow::Result<()> {
    pull_platform(client, name, None, quiet).await
}

async fn pull_platform(
    client: &Client,
    name: &str,
    platform: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = ImageRef::parse(name)?;
    if r.tag.is_none() && r.digest.is_none() {
        println!("Using default tag: latest");
    }
    let mut path = format!("/images/create?fromImage={}", q(&r.familiar_name()));
    match (&r.digest, &r.tag) {
        (Some(d), _) => path.push_str(&format!("&tag={}", q(d.as_str()))),
        (None, Some(t)) => path.push_str(&format!("&tag={}", q(t))),
        (None, None) => {}
    }
    if let Some(p) = platform {
        path.push_str(&format!("&platform={}", q(p)));
    }
    let auth = registry_auth(&r.registry)?;
    let resp = client
        .request_with_auth(Method::POST, &path, ReqBody::Empty, Some(auth))
        .await?;
    progress::render(resp.into_body(), quiet).await?;
    if !quiet {
        println!("{r}");
    }
    Ok(())
}

#[derive(Debug, Args)]
pub struct PushArgs {
    name: String,
    /// Suppress verbose output.
    #[arg(short, long)]
    quiet: bool,
}

pub async fn push(client: &Client, a: PushArgs) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.name)?;
    let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
    let path = format!("/images/{}/push?tag={}", q(&r.familiar_name()), q(&tag));
    let auth = registry_auth(&r.registry)?;
    let resp = client
        .request_with_auth(Method::POST, &path, ReqBody::Empty, Some(auth))
        .await?;
    progress::render(resp.into_body(), a.quiet).await?;
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LoginArgs {
    /// Registry host (default: Docker Hub).
    server: Option<String>,
    #[arg(short, long)]
    username: String,
    #[arg(short, long)]
    password: Option<String>,
    /// Take the password from STDIN.
    #[arg(long)]
    password_stdin: bool,
}

pub async fn login(client: &Client, a: LoginArgs) -> anyhow::Result<u8> {
    let password = match (a.password, a.password_stdin) {
        (Some(p), false) => p,
        (None, true) => {
            let mut p = String::new();
            std::io::stdin().read_to_string(&mut p)?;
            p.trim_end_matches(['\n', '\r']).to_string()
        }
        _ => anyhow::bail!("give the password with exactly one of --password and --password-stdin"),
    };
    let key = server_key(a.server.as_deref().unwrap_or(DOCKER_HUB));
    let body = json!({ "username": a.username, "password": password, "serveraddress": key });
    let answer: AuthResponse = client
        .typed(Method::POST, "/auth", ReqBody::Json(body))
        .await?;
    let mut cfg = read_config()?;
    let pair = format!("{}:{password}", a.username);
    let auth = base64::engine::general_purpose::STANDARD.encode(pair);
    cfg.auths.insert(key, StoredAuth { auth });
    write_config(&cfg)?;
    let status = Some(answer.status).filter(|s| !s.is_empty());
    println!("{}", status.as_deref().unwrap_or("Login Succeeded"));
    Ok(0)
}

#[derive(Debug, Args)]
pub struct LogoutArgs {
    server: Option<String>,
}

pub async fn logout(a: LogoutArgs) -> anyhow::Result<u8> {
    let key = server_key(a.server.as_deref().unwrap_or(DOCKER_HUB));
    let mut cfg = read_config()?;
    if cfg.auths.remove(&key).is_none() {
        println!("Not logged in to {key}");
        return Ok(0);
    }
    write_config(&cfg)?;
    println!("Removing login credentials for {key}");
    Ok(0)
}
