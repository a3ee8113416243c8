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
use crate::daemon::{accounting, Daemon};

fn wants(types: &[String], t: &str) -> bool {
    types.is_empty() || types.iter().any(|x| x == t)
}

pub async fn df(
    State(d): State<AppState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult<Json<DiskUsage<VolumeView>>> {
    let types: Vec<String> = raw
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.strip_prefix("type="))
        .map(str::to_string)
        .collect();
    let mut out = DiskUsage::default();
    if wants(&types, "image") {
        let (layers_size, images) = images(&d)?;
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
            let record = accounting::allocated(
                &d.data_root.join("volume-meta").join(format!("{name}.json")),
            );
            let size = if v.driver == "local" {
                // The local driver's whole directory (data and options) is the volume's.
                (accounting::allocated(&d.data_root.join("volumes").join(name.as_str())) + record)
                    as i64
            } else {
                match d.volumes.usage(&name).await {
                    Ok(u) => (u.bytes + record) as i64,
                    Err(_) => -1,
                }
            };
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

/// Image summaries with shared sizes, and the total of all image layers.
fn images(d: &Daemon) -> ApiResult<(u64, Vec<ImageSummary>)> {
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
    let image_root = accounting::image_root(&d.data_root, d.driver.name());
    let configs: u64 = chains_of
        .keys()
        .map(|id| accounting::image_config_bytes(&image_root, id))
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
