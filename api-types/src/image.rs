//! Image replies: list (`ImageSummary`), remove and prune, commit. (Inspect's model is
//! `strata_core::store::ImageInspect`, next to the store it describes.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Strata's own size figures beside Docker's (`system df`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StrataImageSizes {
    pub on_disk: i64,
    pub content_bytes: i64,
}

/// One entry of `GET /images/json` (and of `system df`'s `Images`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    pub parent_id: String,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    #[serde(default)]
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: i64,
    pub shared_size: i64,
    pub virtual_size: i64,
    /// The image config's labels; `null` when it has none.
    pub labels: Option<BTreeMap<String, String>>,
    pub containers: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strata: Option<StrataImageSizes>,
}

/// One entry of `GET /images/{name}/history`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    /// The image this entry is the top of, or `<missing>` (as Docker).
    pub id: String,
    /// Unix seconds.
    pub created: i64,
    pub created_by: String,
    pub tags: Vec<String>,
    /// Bytes of the entry's layer (0 for entries without one).
    pub size: i64,
    pub comment: String,
}

/// One step of `DELETE /images/{name}` and of image prune: a tag removed or an image deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteResponseItem {
    Untagged(String),
    Deleted(String),
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImagePruneReport {
    #[serde(default)]
    pub images_deleted: Vec<DeleteResponseItem>,
    pub space_reclaimed: u64,
}

/// `{"Id": ...}`: commit, and build's final aux message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IdResponse {
    pub id: String,
}
