//! `/volumes` replies. The volume itself (`VolumeView` in the runtime) carries a driver's
//! free-form `Status`, so these are generic over it.

use serde::{Deserialize, Serialize};

/// `GET /volumes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeListResponse<V> {
    pub volumes: Vec<V>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// `POST /volumes/prune`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumePruneReport {
    #[serde(default)]
    pub volumes_deleted: Vec<String>,
    pub space_reclaimed: u64,
}
