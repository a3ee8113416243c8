//! `GET /system/df`: disk usage in the shape of API < 1.52 (full arrays, from which the CLI
//! derives its totals even without `-v`).
//!
//! Every figure follows the engine's accounting model (`daemon::accounting`): bytes allocated
//! on this driver, hard links once, every byte of the data root attributed to one object, so
//! the same images on two drivers can be compared side by side (a vfs layer is a full copy,
//! an overlay2 layer only its own files) and the totals match `du`. Docker's content-byte
//! figures stay available under `Strata.ContentBytes` / `Strata.ChangedContentBytes`.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::Json;
use strata_api_types::image::{ImageSummary, StrataImageSizes};
use strata_api_types::system::DiskUsage;
use strata_core::store::{chain_ids, Digest};

use super::error::ApiResult;
use super::AppState;
use crate::daemon::volumes::VolumeView;
use crate::daemon::Daemon;

fn wants(types: &[String], t: &str) -> bool {
    types.is_empty() || types.iter().any(|x| x == t)
}

pub async fn df(
    State(d): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult<Json<DiskUsage<VolumeView>>> {
    let types = super::query::all_values(raw.as_deref(), "type");
    let mut out = DiskUsage::default();
    if wants(&types, "image") {
        let (layers_size, images) = images(&d).await?;
        out.layers_size = Some(layers_size);
        out.images = Some(images);
    }
    if wants(&types, "container") {
        let mut list = Vec::new();
        let mut image_sizes = super::containers::ImageSizes::new();
        for c in d.containers.all() {
            let rec = c.snapshot();
            list.push(super::containers::summary(&d, &rec, true, &mut image_sizes).await);
        }
        out.containers = Some(list);
    }
    if wants(&types, "volume") {
        let mut list = Vec::new();
        for mut v in d.volumes.list().await? {
            let name = strata_core::VolumeName::new(v.name.clone())?;
            let size = d.volumes.on_disk(&name).await.map_or(-1, |b| b as i64);
            v.usage_data = Some(crate::daemon::volumes::UsageData {
                size,
                ref_count: d.volumes.users(&name) as i64,
            });
            list.push(v);
        }
        out.volumes = Some(list);
    }
    if wants(&types, "build-cache") {
        out.build_cache = Some(Vec::new());
        out.builder_size = Some(0);
    }
    Ok(Json(out))
}

/// Image summaries with shared sizes, and the total of all image layers. Layer figures are the
/// layer store's (kept since registration); image configs are measured off the executor.
async fn images(d: &Daemon) -> ApiResult<(u64, Vec<ImageSummary>)> {
    let records = d.images.list();
    let mut chains_of: BTreeMap<Digest, Vec<Digest>> = BTreeMap::new();
    let mut users: HashMap<Digest, usize> = HashMap::new();
    for img in &records {
        let chains = chain_ids(&img.config.rootfs.diff_ids);
        for c in &chains {
            *users.entry(c.clone()).or_default() += 1;
        }
        chains_of.insert(img.id.clone(), chains);
    }
    let layer_size = |c: &Digest| super::images::layer_on_disk(d, c);
    let configs: u64 = d
        .images
        .config_bytes(chains_of.keys().cloned().collect())
        .await?
        .iter()
        .map(|(_, b)| b)
        .sum();
    let layers_size: u64 = users.keys().map(layer_size).sum::<u64>() + configs;
    let mut list = Vec::new();
    for (id, chains) in &chains_of {
        let shared: u64 = chains
            .iter()
            .filter(|c| users.get(*c).copied().unwrap_or(0) > 1)
            .map(layer_size)
            .sum();
        let content: u64 = chains
            .iter()
            .map(|c| d.layers.get(c).map_or(0, |l| l.size))
            .sum();
        let mut v = super::images::summary(d, id, Some(shared as i64))?;
        v.strata = Some(StrataImageSizes {
            on_disk: v.size,
            content_bytes: content as i64,
        });
        list.push(v);
    }
    Ok((layers_size, list))
}
