//! `/volumes` replies. A volume's `Status` is whatever its driver reports (any JSON), so the
//! volume is generic over the status value: `serde_json::Value` for its users, which keeps
//! this crate to serde alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Docker's `Volume` (create, inspect, list, `system df`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume<S> {
    pub name: String,
    pub driver: String,
    pub mountpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub scope: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, S>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_data: Option<UsageData>,
}

/// `Volume.UsageData` (`system df`): -1 when the driver cannot tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UsageData {
    pub size: i64,
    pub ref_count: i64,
}

/// `POST /volumes/create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VolumeCreateRequest {
    pub name: Option<String>,
    pub driver: Option<String>,
    pub driver_opts: Option<BTreeMap<String, String>>,
    pub labels: Option<BTreeMap<String, String>>,
}

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
