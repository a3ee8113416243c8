//! `docker build` (the legacy builder, `DOCKER_BUILDKIT=0`): a Dockerfile run step by step.
//! Metadata instructions make an image without a layer (`#(nop)` history entries); RUN runs
//! the command in a container on the current image and commits its layer; COPY/ADD build a
//! layer from the context without a container. Each step's image is a child of the previous
//! one, so a later build reuses it when the parent and the step's `created_by` match (the
//! layer cache; `no_cache` turns it off).
//!
//! Supported: FROM (one stage, local images or `scratch`), RUN, COPY, ADD (local sources),
//! CMD, ENTRYPOINT, ENV, ARG, WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, SHELL,
//! MAINTAINER. ARG values reach RUN's environment and expand in FROM and COPY; the other
//! instructions expand variables from ENV.

mod copy;
pub mod dockerfile;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};
use strata_core::ids::LayerId;
use strata_core::layer::{CreateOpts, TarStream};
use strata_core::store::images::now_rfc3339;
use strata_core::store::ingest::decompressed;
use strata_core::store::{Digest, ImageStore, Reference, RegisterOpts};
use strata_core::stream::with_blocking_reader;
use strata_core::{Error, IoContext, Result};

use super::changes::{apply_changes, empty_container_config, expand_words};
use super::commit::{commit, CommitOptions};
use super::import::host_architecture;
use super::manifest::to_json;
use crate::container::{self, ContainerSpec, StartError};
use dockerfile::Instruction;

/// What the builder reports: output lines (Docker's `{"stream": ...}`) and the final id
/// (`{"aux": {"ID": ...}}`).
#[derive(Debug, Clone, PartialEq)]
pub enum BuildEvent {
    Stream(String),
    Aux(Digest),
}

pub type BuildProgressFn = Arc<dyn Fn(BuildEvent) + Send + Sync>;

#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path inside the context (`Dockerfile` when empty).
    pub dockerfile: String,
    pub tags: Vec<Reference>,
    pub no_cache: bool,
    pub build_args: BTreeMap<String, String>,
    /// `--label`s, added to the final image.
    pub labels: BTreeMap<String, String>,
    /// Where the context is unpacked and containers keep their files (`<data-root>/tmp`).
    pub spool_dir: PathBuf,
}

/// Builds the image described by the context's Dockerfile; returns its id.
pub async fn build(
    images: &ImageStore,
    context: TarStream,
    opts: BuildOptions,
    progress: BuildProgressFn,
) -> Result<Digest> {
    std::fs::create_dir_all(&opts.spool_dir).ctx("create directory", &opts.spool_dir)?;
    let work = tempfile::Builder::new()
        .prefix("build-")
        .tempdir_in(&opts.spool_dir)
        .ctx("create directory", &opts.spool_dir)?;
    let context_dir = work.path().join("context");
    std::fs::create_dir(&context_dir).ctx("create directory", &context_dir)?;
    let dest = context_dir.clone();
    with_blocking_reader(context, move |r| unpack_context(r, &dest)).await?;
    let name = if opts.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        opts.dockerfile.as_str()
    };
    let path = context_dir.join(name.trim_start_matches('/'));
    if !path.starts_with(&context_dir) || name.split('/').any(|c| c == "..") {
        return Err(Error::invalid(
            "the Dockerfile must be inside the build context",
        ));
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|_| Error::invalid(format!("Cannot locate specified Dockerfile: {name}")))?;
    let mut steps = dockerfile::parse(&text)?;
    if !opts.labels.is_empty() {
        let pairs: Vec<String> = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
            .collect();
        let args = pairs.join(" ");
        steps.push(Instruction {
            keyword: "LABEL".into(),
            original: format!("LABEL {args}"),
            args,
        });
    }
    let mut b = Builder {
        images,
        opts: &opts,
        progress,
        work: work.path().to_path_buf(),
        context: context_dir,
        image: None,
        config: empty_container_config(),
        args: BTreeMap::new(),
        seen_from: false,
    };
    let total = steps.len();
    for (i, step) in steps.iter().enumerate() {
        b.emit(format!("Step {}/{total} : {}\n", i + 1, step.original));
        b.step(step).await?;
    }
    let id = b
        .image
        .clone()
        .ok_or_else(|| Error::invalid("the Dockerfile produced no image (FROM scratch alone)"))?;
    b.emit(format!("Successfully built {}\n", id.short()));
    (b.progress)(BuildEvent::Aux(id.clone()));
    for t in &opts.tags {
        images.tag(t, &id).await?;
        b.emit(format!("Successfully tagged {t}\n"));
    }
    Ok(id)
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn unpack_context(r: &mut dyn std::io::Read, dest: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(decompressed(r_owned(r)?)?);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    archive
        .unpack(dest)
        .map_err(|e| Error::invalid(format!("the build context is not a valid tar: {e}")))
}

/// The context is small enough to read whole before unpacking (decompression needs an
/// owned reader).
fn r_owned(r: &mut dyn std::io::Read) -> Result<std::io::Cursor<Vec<u8>>> {
    let mut data = Vec::new();
    r.read_to_end(&mut data).ctx("read", "build context")?;
    Ok(std::io::Cursor::new(data))
}

struct Builder<'a> {
    images: &'a ImageStore,
    opts: &'a BuildOptions,
    progress: BuildProgressFn,
    work: PathBuf,
    context: PathBuf,
    image: Option<Digest>,
    /// The container config of the image being built.
    config: Map<String, Value>,
    /// ARGs declared so far, with their values.
    args: BTreeMap<String, String>,
    seen_from: bool,
}

impl Builder<'_> {
    fn emit(&self, s: String) {
        (self.progress)(BuildEvent::Stream(s));
    }

    fn arg_env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .args
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend(env_pairs(&self.config));
        env
    }

    async fn step(&mut self, step: &Instruction) -> Result<()> {
        if !self.seen_from && !matches!(step.keyword.as_str(), "FROM" | "ARG") {
            return Err(Error::invalid(format!(
                "{} before FROM: a Dockerfile starts with FROM",
                step.keyword
            )));
        }
        match step.keyword.as_str() {
            "FROM" => self.from(&step.args),
            "ARG" => {
                let (name, default) = match step.args.split_once('=') {
                    Some((n, d)) => (n.trim(), Some(d.trim().trim_matches('"').to_string())),
                    None => (step.args.trim(), None),
                };
                let value = self
                    .opts
                    .build_args
                    .get(name)
                    .cloned()
                    .or(default)
                    .unwrap_or_default();
                self.args.insert(name.to_string(), value);
                Ok(())
            }
            "RUN" => self.run(step).await,
            "COPY" | "ADD" => self.copy(step).await,
            "CMD" | "ENTRYPOINT" | "ENV" | "WORKDIR" | "USER" | "LABEL" | "EXPOSE" | "VOLUME"
            | "STOPSIGNAL" | "SHELL" | "MAINTAINER" => self.metadata(step).await,
            other => Err(Error::unsupported(format!(
                "the Dockerfile instruction {other} is not supported by this builder"
            ))),
        }
    }

    fn from(&mut self, args: &str) -> Result<()> {
        if self.seen_from {
            return Err(Error::unsupported(
                "multi-stage builds (a second FROM) are not supported by this builder",
            ));
        }
        self.seen_from = true;
        let words = expand_words(args, &self.arg_env()).map_err(Error::invalid)?;
        if words.len() != 1 {
            return Err(Error::unsupported(format!(
                "FROM {args}: only `FROM image` is supported (no AS, no --platform)"
            )));
        }
        if words[0] == "scratch" {
            self.emit(" ---> \n".into());
            return Ok(());
        }
        let id = self.images.resolve(&words[0]).map_err(|_| {
            Error::not_found(format!(
                "pull access denied for {}: the image is not present locally and this daemon \
                 has no registry access (load it first)",
                words[0]
            ))
        })?;
        let img = self.images.get(&id)?;
        self.config = img
            .config
            .config
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(empty_container_config);
        self.emit(format!(" ---> {}\n", id.short()));
        self.image = Some(id);
        Ok(())
    }

    /// An image among the current one's children made by the same step, if the cache is on.
    fn cached(&self, created_by: &str) -> Option<Digest> {
        if self.opts.no_cache {
            return None;
        }
        let parent = self.image.as_ref()?;
        self.images.children(parent).into_iter().find(|c| {
            self.images.get(c).is_ok_and(|img| {
                img.config
                    .history
                    .last()
                    .and_then(|h| h.created_by.as_deref())
                    == Some(created_by)
            })
        })
    }

    fn use_image(&mut self, id: Digest, from_cache: bool) -> Result<()> {
        if from_cache {
            self.emit(" ---> Using cache\n".into());
        }
        let img = self.images.get(&id)?;
        self.config = img
            .config
            .config
            .as_ref()
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_else(empty_container_config);
        self.emit(format!(" ---> {}\n", id.short()));
        self.image = Some(id);
        Ok(())
    }

    async fn metadata(&mut self, step: &Instruction) -> Result<()> {
        let created_by = format!("/bin/sh -c #(nop)  {}", step.original);
        if let Some(id) = self.cached(&created_by) {
            return self.use_image(id, true);
        }
        let mut config = self.config.clone();
        match step.keyword.as_str() {
            "SHELL" => {
                let shell: Vec<String> = serde_json::from_str(&step.args).map_err(|_| {
                    Error::invalid("SHELL requires the arguments to be in JSON form")
                })?;
                config.insert("Shell".into(), Value::from(shell));
            }
            "MAINTAINER" => {}
            _ => apply_changes(&mut config, std::slice::from_ref(&step.original))?,
        }
        let author = (step.keyword == "MAINTAINER").then(|| step.args.clone());
        let id = self.new_image(config, &created_by, None, author).await?;
        self.use_image(id, false)
    }

    async fn new_image(
        &self,
        config: Map<String, Value>,
        created_by: &str,
        diff: Option<&Digest>,
        author: Option<String>,
    ) -> Result<Digest> {
        let base: Option<Value> = match &self.image {
            Some(id) => Some(
                serde_json::from_slice(&self.images.raw_config(id).await?)
                    .map_err(|e| Error::Other(format!("image {id} config: {e}")))?,
            ),
            None => None,
        };
        let from_base = |k: &str| base.as_ref().and_then(|b| b.get(k)).cloned();
        let created = now_rfc3339();
        let mut history = from_base("history")
            .and_then(|h| h.as_array().cloned())
            .unwrap_or_default();
        let mut entry = serde_json::json!({"created": created, "created_by": created_by});
        if diff.is_none() {
            entry["empty_layer"] = Value::Bool(true);
        }
        history.push(entry);
        let mut diff_ids = from_base("rootfs")
            .and_then(|r| r.get("diff_ids").cloned())
            .and_then(|d| d.as_array().cloned())
            .unwrap_or_default();
        if let Some(d) = diff {
            diff_ids.push(Value::from(d.to_string()));
        }
        let mut container_config = config.clone();
        container_config.insert(
            "Cmd".into(),
            serde_json::json!([
                "/bin/sh",
                "-c",
                created_by.trim_start_matches("/bin/sh -c ")
            ]),
        );
        let mut image = Map::new();
        image.insert(
            "architecture".into(),
            from_base("architecture").unwrap_or_else(|| Value::from(host_architecture())),
        );
        if let Some(a) =
            author.or_else(|| from_base("author").and_then(|a| a.as_str().map(String::from)))
        {
            image.insert("author".into(), Value::from(a));
        }
        image.insert("config".into(), Value::Object(config));
        image.insert("container_config".into(), Value::Object(container_config));
        image.insert("created".into(), Value::from(created));
        image.insert(
            "docker_version".into(),
            Value::from(env!("CARGO_PKG_VERSION")),
        );
        image.insert("history".into(), Value::Array(history));
        image.insert(
            "os".into(),
            from_base("os").unwrap_or_else(|| Value::from("linux")),
        );
        image.insert(
            "rootfs".into(),
            serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
        );
        let (id, _) = self.images.create(to_json(&Value::Object(image))?).await?;
        if let Some(parent) = &self.image {
            self.images.set_parent(&id, parent).await?;
        }
        Ok(id)
    }

    fn top_layer(&self) -> Result<Option<Digest>> {
        match &self.image {
            Some(id) => Ok(self.images.get(id)?.top_layer()),
            None => Ok(None),
        }
    }

    async fn copy(&mut self, step: &Instruction) -> Result<()> {
        if step.args.starts_with("--") {
            return Err(Error::unsupported(format!(
                "{}: flags (--chown, --from, ...) are not supported by this builder",
                step.keyword
            )));
        }
        let words: Vec<String> = match serde_json::from_str::<Vec<String>>(&step.args) {
            Ok(v) => v,
            Err(_) => expand_words(&step.args, &self.arg_env()).map_err(Error::invalid)?,
        };
        if words.len() < 2 {
            return Err(Error::invalid(format!(
                "{} requires at least two arguments: source(s) and destination",
                step.keyword
            )));
        }
        if words.iter().any(|w| w.contains("://")) {
            return Err(Error::unsupported(
                "ADD from a URL (this daemon has no network access for builds)",
            ));
        }
        let (srcs, dest) = words.split_at(words.len() - 1);
        let dest = dest[0].clone();
        let workdir = self
            .config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let layers = self.images.layers().clone();
        let top = self.top_layer()?;
        // The current image's tree, for the metadata of existing parent directories.
        let mounted = match &top {
            Some(t) => {
                let cache = layers
                    .get(t)
                    .ok_or_else(|| Error::not_found(format!("layer {t}")))?
                    .cache_id;
                let path = layers.driver().mount(&cache, "").await?;
                Some((cache, path))
            }
            None => None,
        };
        let (context, work, srcs_owned, dest_c) = (
            self.context.clone(),
            self.work.clone(),
            srcs.to_vec(),
            dest.clone(),
        );
        let tree = mounted.as_ref().map(|(_, p)| p.clone());
        let made = tokio::task::spawn_blocking(move || {
            copy::copy_layer(
                &context,
                &srcs_owned,
                &dest_c,
                &workdir,
                tree.as_deref(),
                &work,
            )
        })
        .await;
        if let Some((cache, _)) = &mounted {
            layers.driver().unmount(cache).await?;
        }
        let made = made??;
        let created_by = format!(
            "/bin/sh -c #(nop) {} {} in {dest} ",
            step.keyword, made.source_digest
        );
        if let Some(id) = self.cached(&created_by) {
            return self.use_image(id, true);
        }
        let file = tokio::fs::File::open(&made.tar)
            .await
            .ctx("open", &made.tar)?;
        let registered = layers
            .register(top.as_ref(), Box::pin(file), RegisterOpts::default())
            .await?;
        let chain = registered.layer.chain_id.clone();
        let created = self
            .new_image(
                self.config.clone(),
                &created_by,
                Some(&registered.layer.diff_id),
                None,
            )
            .await;
        layers.release(&chain).await?;
        let _ = tokio::fs::remove_file(&made.tar).await;
        self.use_image(created?, false)
    }

    async fn run(&mut self, step: &Instruction) -> Result<()> {
        let command: Vec<String> = match serde_json::from_str::<Vec<String>>(&step.args) {
            Ok(v) if step.args.trim_start().starts_with('[') => v,
            _ => {
                let mut shell: Vec<String> = self
                    .config
                    .get("Shell")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str().map(String::from))
                            .collect()
                    })
                    .filter(|v: &Vec<String>| !v.is_empty())
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.push(step.args.clone());
                shell
            }
        };
        // Build args in effect become part of the cache key, as Docker's `|N k=v` prefix.
        let used_args: Vec<String> = self
            .args
            .iter()
            .filter(|(k, _)| !env_pairs(&self.config).iter().any(|(e, _)| e == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut recorded = Vec::new();
        if !used_args.is_empty() {
            recorded.push(format!("|{}", used_args.len()));
            recorded.extend(used_args.iter().cloned());
        }
        recorded.extend(command.iter().cloned());
        let created_by = recorded.join(" ");
        if let Some(id) = self.cached(&created_by) {
            return self.use_image(id, true);
        }
        let mut env: Vec<String> = self
            .config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        env.extend(used_args);
        let id = self.run_container(command, env, recorded).await?;
        self.use_image(id, false)
    }

    async fn run_container(
        &mut self,
        command: Vec<String>,
        env: Vec<String>,
        recorded: Vec<String>,
    ) -> Result<Digest> {
        let layers = self.images.layers().clone();
        let cid = LayerId::random().to_string();
        let top = self.top_layer()?;
        let rw = layers
            .create_rw(&cid, top.as_ref(), &CreateOpts::read_write())
            .await?;
        self.emit(format!(" ---> Running in {}\n", &cid[..12]));
        let ran = self.run_in(&cid, &rw.mount_id, command.clone(), env).await;
        let committed = match ran {
            Ok(()) => {
                let mut container_config = self.config.clone();
                container_config.insert("Cmd".into(), Value::from(recorded));
                commit(
                    self.images,
                    &rw.mount_id,
                    self.image.as_ref(),
                    CommitOptions {
                        container_id: cid.clone(),
                        container_config: Some(Value::Object(container_config)),
                        ..CommitOptions::default()
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = layers.remove_rw(&cid).await {
            tracing::warn!(container = %cid, error = %e, "removing a build container's layer failed");
        }
        self.emit(format!("Removing intermediate container {}\n", &cid[..12]));
        committed
    }

    async fn run_in(
        &self,
        cid: &str,
        mount_id: &LayerId,
        command: Vec<String>,
        env: Vec<String>,
    ) -> Result<()> {
        let driver = self.images.layers().driver().clone();
        let rootfs = driver.mount(mount_id, "").await?;
        let dir = self.work.join(format!("container-{}", &cid[..12]));
        std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        let text = |k: &str| {
            self.config
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut spec = ContainerSpec::new(cid.to_string(), rootfs, dir, command.clone());
        spec.env = env;
        spec.cwd = text("WorkingDir");
        spec.user = text("User");
        let (tx, mut rx) = container::output_channel();
        let outcome = match container::spawn(spec, tx).await {
            Ok(running) => {
                let wait = running.wait();
                tokio::pin!(wait);
                let mut open = true;
                let status = loop {
                    tokio::select! {
                        chunk = rx.recv(), if open => match chunk {
                            Ok(c) => self.emit(String::from_utf8_lossy(&c.data).into_owned()),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => open = false,
                        },
                        status = &mut wait => break status,
                    }
                };
                while let Ok(c) = rx.try_recv() {
                    self.emit(String::from_utf8_lossy(&c.data).into_owned());
                }
                if status.code == 0 {
                    Ok(())
                } else {
                    Err(Error::invalid(format!(
                        "The command '{}' returned a non-zero code: {}",
                        command.join(" "),
                        status.code
                    )))
                }
            }
            Err(StartError::Exec { exit_code, message }) => Err(Error::invalid(format!(
                "The command '{}' returned a non-zero code: {exit_code} ({message})",
                command.join(" ")
            ))),
            Err(StartError::Setup(e)) => Err(e),
        };
        let unmounted = driver.unmount(mount_id).await;
        outcome?;
        unmounted
    }
}

fn env_pairs(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default()
}
