//! `docker history`: one line per history entry of the image config, newest first, as
//! Docker's `/images/{name}/history`.

use strata_core::store::images::parse_rfc3339;
use strata_core::store::{chain_id, Digest, ImageStore};
use strata_core::{Error, Result};

pub use strata_api_types::image::HistoryItem;

/// Docker's algorithm: walk the config history base first, pairing each non-empty entry with
/// the next layer; then give the newest entries the ids of the image and its parents.
pub fn history(images: &ImageStore, id: &Digest) -> Result<Vec<HistoryItem>> {
    let img = images.get(id)?;
    let layers = images.layers();
    let diffs = &img.config.rootfs.diff_ids;
    let mut items = Vec::new();
    let mut chain: Option<Digest> = None;
    let mut next_layer = 0;
    for h in &img.config.history {
        let mut size = 0;
        if !h.empty_layer {
            let diff = diffs.get(next_layer).ok_or_else(|| {
                Error::Other(format!(
                    "image {id}: its history has more non-empty entries than it has layers"
                ))
            })?;
            let c = chain_id(chain.as_ref(), diff);
            size = layers.get(&c).map(|l| l.size as i64).unwrap_or(0);
            chain = Some(c);
            next_layer += 1;
        }
        items.push(HistoryItem {
            id: "<missing>".into(),
            created: h.created.as_deref().and_then(parse_rfc3339).unwrap_or(0),
            created_by: h.created_by.clone().unwrap_or_default(),
            tags: Vec::new(),
            size,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    items.reverse();
    let mut current = Some(id.clone());
    for item in items.iter_mut() {
        let Some(cur) = current.take() else { break };
        item.id = cur.to_string();
        item.tags = images.tags_of(&cur);
        current = images.get(&cur).ok().and_then(|i| i.parent);
    }
    Ok(items)
}
