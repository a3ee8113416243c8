//! `docker commit`: a container's read-write layer becomes a new image layer (the driver's
//! diff against the image's top layer), on top of the container's image, with a history entry
//! and `--change` instructions.

use serde_json::{Map, Value};
use strata_core::ids::LayerId;
use strata_core::store::images::now_rfc3339;
use strata_core::store::{Digest, ImageStore, Reference, RegisterOpts};
use strata_core::{Error, Result};

use super::changes::{apply_changes, empty_container_config};
use super::import::host_architecture;
use super::manifest::to_json;

#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    pub reference: Option<Reference>,
    pub comment: String,
    pub author: String,
    pub changes: Vec<String>,
    /// The container's id (the config's `container` field).
    pub container_id: String,
    /// The container's config (`container_config`); its Cmd also becomes `created_by`.
    pub container_config: Option<Value>,
}

/// Commits `rw_layer` (a driver layer whose parent is `base_image`'s top layer, or none).
pub async fn commit(
    images: &ImageStore,
    rw_layer: &LayerId,
    base_image: Option<&Digest>,
    opts: CommitOptions,
) -> Result<Digest> {
    let layers = images.layers();
    let base = base_image.map(|b| images.get(b)).transpose()?;
    let base_raw: Option<Value> = match base_image {
        Some(b) => Some(
            serde_json::from_slice(&images.raw_config(b).await?)
                .map_err(|e| Error::Other(format!("image {b} config: {e}")))?,
        ),
        None => None,
    };
    let parent_chain = base.as_ref().and_then(|b| b.top_layer());
    let parent_cache = parent_chain
        .as_ref()
        .map(|c| {
            layers
                .get(c)
                .map(|l| l.cache_id)
                .ok_or_else(|| Error::not_found(format!("layer {c}")))
        })
        .transpose()?;

    let mut config = base_raw
        .as_ref()
        .and_then(|b| b.get("config"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_else(empty_container_config);
    apply_changes(&mut config, &opts.changes)?;

    let diff = layers
        .driver()
        .diff(rw_layer, parent_cache.as_ref())
        .await?;
    let registered = layers
        .register(parent_chain.as_ref(), diff, RegisterOpts::default())
        .await?;
    let chain = registered.layer.chain_id.clone();
    let made = make_image(
        images,
        base_raw.as_ref(),
        base_image,
        config,
        &registered.layer.diff_id,
        &opts,
    )
    .await;
    layers.release(&chain).await?;
    made
}

async fn make_image(
    images: &ImageStore,
    base: Option<&Value>,
    base_id: Option<&Digest>,
    config: Map<String, Value>,
    diff_id: &Digest,
    opts: &CommitOptions,
) -> Result<Digest> {
    let created = now_rfc3339();
    let from_base = |k: &str| base.and_then(|b| b.get(k)).cloned();
    let mut history: Vec<Value> = from_base("history")
        .and_then(|h| h.as_array().cloned())
        .unwrap_or_default();
    let created_by = opts
        .container_config
        .as_ref()
        .and_then(|c| c.get("Cmd"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let mut entry = Map::new();
    entry.insert("created".into(), Value::from(created.clone()));
    if !opts.author.is_empty() {
        entry.insert("author".into(), Value::from(opts.author.clone()));
    }
    if !created_by.is_empty() {
        entry.insert("created_by".into(), Value::from(created_by));
    }
    if !opts.comment.is_empty() {
        entry.insert("comment".into(), Value::from(opts.comment.clone()));
    }
    history.push(Value::Object(entry));
    let mut diff_ids: Vec<Value> = from_base("rootfs")
        .and_then(|r| r.get("diff_ids").cloned())
        .and_then(|d| d.as_array().cloned())
        .unwrap_or_default();
    diff_ids.push(Value::from(diff_id.to_string()));

    let mut image = Map::new();
    image.insert(
        "architecture".into(),
        from_base("architecture").unwrap_or_else(|| Value::from(host_architecture())),
    );
    if !opts.author.is_empty() {
        image.insert("author".into(), Value::from(opts.author.clone()));
    }
    if !opts.comment.is_empty() {
        image.insert("comment".into(), Value::from(opts.comment.clone()));
    }
    image.insert("config".into(), Value::Object(config));
    if !opts.container_id.is_empty() {
        image.insert("container".into(), Value::from(opts.container_id.clone()));
    }
    if let Some(cc) = &opts.container_config {
        image.insert("container_config".into(), cc.clone());
    }
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
    let (id, _) = images.create(to_json(&Value::Object(image))?).await?;
    if let Some(b) = base_id {
        images.set_parent(&id, b).await?;
    }
    if let Some(r) = &opts.reference {
        images.tag(r, &id).await?;
    }
    Ok(id)
}
