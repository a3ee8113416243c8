//! The classic builder behind `POST /build`: a Dockerfile run step by step, each filesystem
//! step (RUN, COPY, ADD) making a layer and each other step only a config, with Docker's
//! layer cache: a step is reused when its parent image, its text after ARG substitution and,
//! for COPY and ADD, the content and metadata of its sources are the same. So changing step N
//! rebuilds N and every step after it, never one before.

mod context;
mod copy;
mod dirfd;
mod dockerfile;
mod healthcheck;
mod owner;
mod scope;
pub(crate) mod words;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use strata_core::store::{Digest, Reference};
use strata_core::{CreateOpts, Error, LayerId, Result, TarStream};
use tokio::sync::mpsc;

use crate::api::stream::json_line;
use crate::daemon::containers::lifecycle;
use crate::daemon::Daemon;
use crate::image::{self, changes::apply_changes_with_args, changes::empty_container_config};
use context::Context;
use dockerfile::Instruction;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub dockerfile: String,
    pub tags: Vec<Reference>,
    pub no_cache: bool,
    pub build_args: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub quiet: bool,
    /// `none` (default) or `host` for RUN steps.
    pub network: String,
}

/// Where build progress goes: `{"stream": ...}` lines.
struct Output {
    tx: mpsc::Sender<Bytes>,
    quiet: bool,
}

impl Output {
    async fn say(&self, text: impl Into<String>) {
        if !self.quiet {
            let _ = self
                .tx
                .send(json_line(&json!({ "stream": text.into() })))
                .await;
        }
    }
}

/// State carried from step to step.
struct Stage {
    image: Option<Digest>,
    config: Map<String, Value>,
    /// ARG values in scope (name, value), for substitution and RUN's environment.
    args: Vec<(String, String)>,
}

impl Stage {
    fn env(&self) -> Vec<(String, String)> {
        let mut vars = self.args.clone();
        if let Some(env) = self.config.get("Env").and_then(Value::as_array) {
            for e in env.iter().filter_map(Value::as_str) {
                if let Some((k, v)) = e.split_once('=') {
                    vars.push((k.to_string(), v.to_string()));
                }
            }
        }
        vars
    }

    fn str_field(&self, key: &str) -> String {
        self.config
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }
}

/// Runs a build; returns the final image id. Progress goes to `tx`.
pub async fn build(
    d: &Arc<Daemon>,
    context_tar: TarStream,
    opts: BuildOptions,
    tx: mpsc::Sender<Bytes>,
) -> Result<Digest> {
    let out = Output {
        tx: tx.clone(),
        quiet: opts.quiet,
    };
    let tmp = d.data_root.join("tmp");
    let ctx =
        strata_core::stream::with_blocking_reader(context_tar, move |r| Context::unpack(r, &tmp))
            .await?;
    let ctx = Arc::new(ctx);
    let name = if opts.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        &opts.dockerfile
    };
    let text = ctx.dockerfile(name)?;
    let instructions = dockerfile::parse(&text)?;
    let total = instructions.len();
    let mut stage = Stage {
        image: None,
        config: empty_container_config(),
        args: Vec::new(),
    };
    let mut saw_from = false;
    for (i, ins) in instructions.iter().enumerate() {
        out.say(format!("Step {}/{} : {}\n", i + 1, total, ins.original))
            .await;
        if ins.keyword == "FROM" {
            from(d, &mut stage, ins, &opts, &out).await?;
            saw_from = true;
            continue;
        }
        if !saw_from && ins.keyword != "ARG" {
            return Err(Error::invalid(format!(
                "Dockerfile line {}: {} before FROM; the first instruction must be FROM",
                ins.line, ins.keyword
            )));
        }
        step(d, &mut stage, ins, &ctx, &opts, &out).await?;
    }
    let mut final_id = stage
        .image
        .clone()
        .ok_or_else(|| Error::invalid("No image was generated. Is your Dockerfile empty?"))?;
    if !opts.labels.is_empty() {
        let mut config = stage.config.clone();
        let labels = config.entry("Labels").or_insert_with(|| json!({}));
        if !labels.is_object() {
            *labels = json!({});
        }
        for (k, v) in &opts.labels {
            labels[k] = json!(v);
        }
        final_id = config_image(d, Some(&final_id), config, "LABEL (build option)").await?;
    }
    let _ = tx
        .send(json_line(&json!({ "aux": { "ID": final_id.to_string() } })))
        .await;
    out.say(format!("Successfully built {}\n", final_id.short()))
        .await;
    for t in &opts.tags {
        d.images.tag(t, &final_id).await?;
        out.say(format!("Successfully tagged {t}\n")).await;
    }
    Ok(final_id)
}

async fn from(
    d: &Daemon,
    stage: &mut Stage,
    ins: &Instruction,
    opts: &BuildOptions,
    out: &Output,
) -> Result<()> {
    let text = expand(ins, &stage.args)?;
    let name = text.split_whitespace().next().unwrap_or("");
    stage.args.retain(|_| false);
    if name == "scratch" {
        stage.image = None;
        stage.config = empty_container_config();
        out.say(" ---> \n").await;
        return Ok(());
    }
    let id = d.images.resolve(name).map_err(|_| {
        Error::not_found(format!(
            "pull access denied for {name}: the image is not present and Strata has no registry client; load it first"
        ))
    })?;
    let img = d.images.get(&id)?;
    stage.config = img
        .config
        .config
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(empty_container_config);
    stage.image = Some(id.clone());
    let _ = opts;
    out.say(format!(" ---> {}\n", id.short())).await;
    Ok(())
}

fn cache_dir(d: &Daemon) -> PathBuf {
    d.data_root
        .join("image")
        .join(d.driver.name())
        .join("buildcache")
}

fn cache_path(d: &Daemon, key: &str) -> PathBuf {
    cache_dir(d).join(key)
}

/// `docker builder prune`: forgets every cached step. The steps' images are ordinary images
/// (pruned as such), so only the index goes; returns the forgotten keys.
pub async fn prune_cache(d: &Daemon) -> Result<Vec<String>> {
    let dir = cache_dir(d);
    tokio::task::spawn_blocking(move || {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &dir, e)),
        };
        let mut forgotten = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &dir, e))?;
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            forgotten.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(forgotten)
    })
    .await?
}

fn cache_key(parent: &Option<Digest>, step: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_ref().map_or("scratch", |p| p.as_str()).as_bytes());
    h.update([0]);
    h.update(step.as_bytes());
    hex::encode(h.finalize())
}

/// The instruction's arguments with its variables expanded; a malformed substitution fails
/// the step with Docker's message.
fn expand(ins: &Instruction, vars: &[(String, String)]) -> Result<String> {
    words::expand(&ins.args, vars)
        .map_err(|e| Error::invalid(format!("{} (line {}): {e}", ins.original, ins.line)))
}

fn cache_lookup(d: &Daemon, key: &str) -> Option<Digest> {
    let text = std::fs::read_to_string(cache_path(d, key)).ok()?;
    let id = Digest::parse(text.trim()).ok()?;
    d.images.get(&id).ok().map(|_| id)
}

fn cache_store(d: &Daemon, key: &str, id: &Digest) -> Result<()> {
    let path = cache_path(d, key);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    }
    strata_core::fsutil::atomic_write(&path, id.as_str().as_bytes())
}

async fn step(
    d: &Arc<Daemon>,
    stage: &mut Stage,
    ins: &Instruction,
    ctx: &Arc<Context>,
    opts: &BuildOptions,
    out: &Output,
) -> Result<()> {
    let vars = stage.env();
    // What the cache keys on, besides the parent image.
    let (key_text, sources) = match ins.keyword.as_str() {
        "RUN" => {
            let args: Vec<String> = stage.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            (format!("RUN|{}|{}", args.join(" "), ins.args), None)
        }
        "COPY" | "ADD" => {
            if ins.flags.iter().any(|(k, _)| k == "from") {
                return Err(Error::unsupported(
                    "COPY --from (multi-stage builds) is not supported by the classic builder yet",
                ));
            }
            let words = copy_words(&expand(ins, &vars)?)?;
            let (srcs, _dest) = words.split_at(words.len() - 1);
            let mut paths = Vec::new();
            for s in srcs {
                if s.starts_with("http://") || s.starts_with("https://") {
                    return Err(Error::unsupported(
                        "ADD from a URL: Strata builds have no network access",
                    ));
                }
                paths.extend(ctx.sources(s)?);
            }
            let digest = {
                let ctx = ctx.clone();
                let p = paths.clone();
                tokio::task::spawn_blocking(move || ctx.digest(&p)).await??
            };
            (
                format!(
                    "{}|{:?}|{}|{}",
                    ins.keyword,
                    ins.flags,
                    words.join(" "),
                    digest
                ),
                Some((paths, words)),
            )
        }
        "ARG" => {
            let (name, default) = match ins.args.split_once('=') {
                Some((n, v)) => (
                    n.trim().to_string(),
                    Some(v.trim().trim_matches('"').to_string()),
                ),
                None => (ins.args.trim().to_string(), None),
            };
            let value = opts.build_args.get(&name).cloned().or(default);
            stage.args.retain(|(k, _)| k != &name);
            if let Some(v) = value {
                stage.args.push((name, v));
            }
            (format!("ARG|{}", ins.args), None)
        }
        _ => (format!("{}|{}", ins.keyword, expand(ins, &vars)?), None),
    };
    let key = cache_key(&stage.image, &key_text);
    if !opts.no_cache {
        if let Some(id) = cache_lookup(d, &key) {
            out.say(format!(" ---> Using cache\n ---> {}\n", id.short()))
                .await;
            adopt(d, stage, &id)?;
            return Ok(());
        }
    }
    let id = match ins.keyword.as_str() {
        "RUN" => run_step(d, stage, ins, opts, out).await?,
        "COPY" | "ADD" => {
            let (paths, words) = sources.unwrap_or_default();
            copy_step(d, stage, ins, ctx, &paths, &words).await?
        }
        _ => {
            let text = match ins.keyword.as_str() {
                "ARG" | "MAINTAINER" | "SHELL" | "ONBUILD" | "HEALTHCHECK" => None,
                // Expanded once, by the instruction's own rules (quotes kept where Docker
                // keeps them), with the build arguments beneath the image's environment.
                _ => Some(format!("{} {}", ins.keyword, ins.args)),
            };
            let mut config = stage.config.clone();
            if let Some(t) = &text {
                apply_changes_with_args(&mut config, std::slice::from_ref(t), &stage.args)?;
            }
            if ins.keyword == "HEALTHCHECK" {
                config.insert("Healthcheck".into(), healthcheck::healthcheck(ins)?);
            }
            config_image(
                d,
                stage.image.as_ref(),
                config,
                &format!("{} {}", ins.keyword, ins.args),
            )
            .await?
        }
    };
    cache_store(d, &key, &id)?;
    out.say(format!(" ---> {}\n", id.short())).await;
    adopt(d, stage, &id)
}

/// Makes `id` the stage's current image.
fn adopt(d: &Daemon, stage: &mut Stage, id: &Digest) -> Result<()> {
    let img = d.images.get(id)?;
    stage.config = img
        .config
        .config
        .as_ref()
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(empty_container_config);
    stage.image = Some(id.clone());
    Ok(())
}

/// `COPY a b /dest/` or `COPY ["a", "/dest"]` → words, at least two.
fn copy_words(args: &str) -> Result<Vec<String>> {
    let words = dockerfile::exec_form(args)
        .unwrap_or_else(|| args.split_whitespace().map(str::to_string).collect());
    if words.len() < 2 {
        return Err(Error::invalid(format!(
            "COPY requires at least two arguments, but only one was provided: {args}"
        )));
    }
    Ok(words)
}

/// A config-only step: a new image with the same layers, the new config and a history entry.
async fn config_image(
    d: &Daemon,
    base: Option<&Digest>,
    config: Map<String, Value>,
    text: &str,
) -> Result<Digest> {
    let mut image: Map<String, Value> = match base {
        Some(b) => serde_json::from_slice(&d.images.raw_config(b).await?)
            .map_err(|e| Error::Other(format!("image {b}: {e}")))?,
        None => {
            let mut m = Map::new();
            m.insert(
                "architecture".into(),
                json!(image::import::host_architecture()),
            );
            m.insert("os".into(), json!("linux"));
            m.insert("rootfs".into(), json!({ "type": "layers", "diff_ids": [] }));
            m
        }
    };
    let created = strata_core::store::images::now_rfc3339();
    let created_by = format!("/bin/sh -c #(nop)  {text}");
    image.insert("created".into(), json!(created));
    image.insert("config".into(), Value::Object(config));
    image.insert(
        "container_config".into(),
        json!({ "Cmd": ["/bin/sh", "-c", format!("#(nop)  {text}")] }),
    );
    let history = image.entry("history").or_insert_with(|| json!([]));
    if let Some(h) = history.as_array_mut() {
        h.push(json!({ "created": created, "created_by": created_by, "empty_layer": true }));
    }
    let raw = serde_json::to_vec(&Value::Object(image)).map_err(|e| Error::Other(e.to_string()))?;
    let (id, _) = d.images.create(raw).await?;
    if let Some(b) = base {
        d.images.set_parent(&id, b).await?;
    }
    Ok(id)
}

async fn run_step(
    d: &Arc<Daemon>,
    stage: &Stage,
    ins: &Instruction,
    opts: &BuildOptions,
    out: &Output,
) -> Result<Digest> {
    let base = stage.image.clone().ok_or_else(|| {
        Error::invalid("RUN on an empty image (FROM scratch) has no shell to run")
    })?;
    let cmd = dockerfile::exec_form(&ins.args)
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into(), ins.args.clone()]);
    let mut env: Vec<String> = stage
        .config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for (k, v) in &stage.args {
        if !env.iter().any(|e| e.split('=').next() == Some(k.as_str())) {
            env.push(format!("{k}={v}"));
        }
    }
    let body = json!({
        "Image": base.to_string(),
        "Cmd": cmd,
        "Entrypoint": [""],
        "Env": env,
        "WorkingDir": stage.str_field("WorkingDir"),
        "User": stage.str_field("User"),
        "HostConfig": { "NetworkMode": if opts.network == "host" { "host" } else { "none" } },
    });
    let req = crate::daemon::containers::create::parse_request(&body)?;
    let (cid, _) = d.containers.create(None, &req, &d.volumes).await?;
    out.say(format!(" ---> Running in {}\n", &cid[..12])).await;
    let result = run_and_commit(d, &cid, &base, &cmd, out).await;
    if let Err(e) = d.containers.remove(&cid, true, false, &d.volumes).await {
        tracing::warn!(container = %cid, "removing the build container failed: {e}");
    }
    out.say(format!("Removing intermediate container {}\n", &cid[..12]))
        .await;
    result
}

async fn run_and_commit(
    d: &Arc<Daemon>,
    cid: &str,
    base: &Digest,
    cmd: &[String],
    out: &Output,
) -> Result<Digest> {
    let c = d.containers.get(cid)?;
    let mut output = c.output.subscribe();
    let mut exits = c.exits.subscribe();
    let start = *exits.borrow();
    lifecycle::start(d, cid).await?;
    loop {
        tokio::select! {
            chunk = output.recv() => match chunk {
                Ok(chunk) => out.say(String::from_utf8_lossy(&chunk.data).into_owned()).await,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
            changed = exits.changed() => {
                if changed.is_err() || exits.borrow().count != start.count {
                    while let Ok(chunk) = output.try_recv() {
                        out.say(String::from_utf8_lossy(&chunk.data).into_owned()).await;
                    }
                    break;
                }
            }
        }
    }
    let rec = c.snapshot();
    if rec.state.exit_code != 0 {
        return Err(Error::invalid(format!(
            "The command '{}' returned a non-zero code: {}",
            cmd.join(" "),
            rec.state.exit_code
        )));
    }
    let layer = LayerId::new(rec.rw_layer.clone())?;
    let opts = image::CommitOptions {
        container_id: cid.to_string(),
        container_config: Some(json!({ "Cmd": cmd })),
        ..Default::default()
    };
    let id = image::commit(&d.images, &layer, Some(base), opts).await?;
    d.images.set_parent(&id, base).await?;
    Ok(id)
}

async fn copy_step(
    d: &Daemon,
    stage: &Stage,
    ins: &Instruction,
    ctx: &Arc<Context>,
    sources: &[String],
    words: &[String],
) -> Result<Digest> {
    let dest = words.last().cloned().unwrap_or_default();
    let owner = match ins.flags.iter().find(|(k, _)| k == "chown") {
        Some((_, v)) => Some(owner::resolve(d, stage.image.as_ref(), v).await?),
        None => None,
    };
    let scratch_id = LayerId::random()?.to_string();
    let parent_chain = match &stage.image {
        Some(id) => d.images.get(id)?.top_layer(),
        None => None,
    };
    let rw = d
        .layers
        .create_rw(
            &scratch_id,
            parent_chain.as_ref(),
            &CreateOpts::read_write(),
        )
        .await?;
    let result = async {
        let mounted = d.layers.mount_rw(&scratch_id).await?;
        let copied = {
            let root = mounted.path().to_path_buf();
            let ctx = ctx.clone();
            let sources = sources.to_vec();
            let workdir = stage.str_field("WorkingDir");
            let workdir = if workdir.is_empty() {
                "/".to_string()
            } else {
                workdir
            };
            let extract = ins.keyword == "ADD";
            tokio::task::spawn_blocking(move || {
                copy::copy_into(&copy::CopyRequest {
                    root: &root,
                    context: &ctx,
                    sources: &sources,
                    dest: &dest,
                    workdir: &workdir,
                    owner,
                    extract_archives: extract,
                })
            })
            .await
        };
        mounted.release().await?;
        copied??;
        let shown = format!("#(nop) {} {}", ins.keyword, words.join(" "));
        let opts = image::CommitOptions {
            container_config: Some(json!({ "Cmd": ["/bin/sh", "-c", shown] })),
            ..Default::default()
        };
        let id = image::commit(&d.images, &rw.mount_id, stage.image.as_ref(), opts).await?;
        if let Some(base) = &stage.image {
            d.images.set_parent(&id, base).await?;
        }
        Ok::<Digest, Error>(id)
    }
    .await;
    if let Err(e) = d.layers.remove_rw(&scratch_id).await {
        tracing::warn!("removing the COPY scratch layer failed: {e}");
    }
    result
}
