//! `docker import`: a root filesystem tar (plain, gzip or zstd; a file or a request body)
//! becomes a one-layer image, with `--change` instructions and a commit message.

use serde_json::{Map, Value};
use strata_core::layer::TarStream;
use strata_core::store::images::now_rfc3339;
use strata_core::store::{Digest, ImageStore, Reference, RegisterOpts};
use strata_core::Result;

use super::changes::{apply_changes, empty_container_config};
use super::manifest::to_json;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Tag for the new image (`repo:tag`), if any.
    pub reference: Option<Reference>,
    /// `--message`; the history comment is `Imported from <source>` without it.
    pub message: Option<String>,
    /// Where the tar came from (`-` for a request body), for the default comment.
    pub source: String,
    pub changes: Vec<String>,
}

/// The architecture name Docker and OCI use for the machine we run on.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
}

/// Imports `tar` as a new image; returns its id.
pub async fn import(images: &ImageStore, tar: TarStream, opts: ImportOptions) -> Result<Digest> {
    let mut config = empty_container_config();
    apply_changes(&mut config, &opts.changes)?;
    let layers = images.layers();
    let registered = layers.register(None, tar, RegisterOpts::default()).await?;
    let chain = registered.layer.chain_id.clone();
    let outcome = create_image(images, &opts, config, &registered.layer.diff_id).await;
    // The image holds the layer now (or, on failure, nothing does and it goes).
    layers.release(&chain).await?;
    outcome
}

async fn create_image(
    images: &ImageStore,
    opts: &ImportOptions,
    config: Map<String, Value>,
    diff_id: &Digest,
) -> Result<Digest> {
    let created = now_rfc3339();
    let comment = opts
        .message
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("Imported from {}", opts.source));
    let config = Value::Object(config);
    let image = serde_json::json!({
        "architecture": host_architecture(),
        "comment": comment,
        "config": config,
        "container_config": config,
        "created": created,
        "docker_version": env!("CARGO_PKG_VERSION"),
        "history": [{"created": created, "comment": comment}],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let (id, _) = images.create(to_json(&image)?).await?;
    if let Some(r) = &opts.reference {
        images.tag(r, &id).await?;
    }
    Ok(id)
}
