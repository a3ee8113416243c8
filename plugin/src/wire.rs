//! The JSON shapes of Docker's plugin protocols, as Docker's own code encodes them (research
//! notes, section 3): the request and reply of every `/GraphDriver.*` and `/VolumeDriver.*`
//! endpoint. Two corrections to Docker's docs apply: IDMap keys are `container_id`, `host_id`,
//! `size`, and Capabilities is nested under `"Capabilities"`.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// Go encodes a nil slice or map as `null` (Docker sends `"Opts": null` to Init when the engine
/// has no storage options), and a plugin written in Go may answer `null` where we keep a value:
/// every field that is not an `Option` reads `null` as its empty default.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The media type Docker's plugin client sends.
pub const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActivateReply {
    #[serde(rename = "Implements", default, deserialize_with = "null_as_default")]
    pub implements: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    pub container_id: i64,
    pub host_id: i64,
    pub size: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InitRequest {
    pub home: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub opts: Vec<String>,
    #[serde(rename = "UIDMaps", default, deserialize_with = "null_as_default")]
    pub uid_maps: Vec<IdMap>,
    #[serde(rename = "GIDMaps", default, deserialize_with = "null_as_default")]
    pub gid_maps: Vec<IdMap>,
}

/// The request of every GraphDriver endpoint but Init and ApplyDiff.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphRequest {
    #[serde(
        rename = "ID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    #[serde(
        rename = "Parent",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub parent: String,
    #[serde(
        rename = "MountLabel",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mount_label: String,
    #[serde(
        rename = "StorageOpt",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub storage_opt: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireChange {
    /// Lossy for a name that is not UTF-8 (as Docker's Go encoder is), hence `path_bytes`.
    #[serde(rename = "Path")]
    pub path: String,
    #[serde(rename = "Kind")]
    pub kind: u64,
    /// The path's exact bytes when they are not UTF-8 (ignored by Docker, read by our client).
    #[serde(
        rename = "StrataPathBytes",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub path_bytes: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireUsage {
    #[serde(rename = "Bytes")]
    pub bytes: u64,
    #[serde(rename = "Inodes")]
    pub inodes: u64,
}

/// Docker's `ReproducesExactDiffs`, plus our capability fields under `Strata` (ignored by
/// Docker, read by our client).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireCapabilities {
    #[serde(
        rename = "ReproducesExactDiffs",
        default,
        deserialize_with = "null_as_default"
    )]
    pub reproduces_exact_diffs: bool,
    #[serde(rename = "Strata", default, skip_serializing_if = "Option::is_none")]
    pub strata: Option<strata_core::layer::Capabilities>,
}

/// The reply of every GraphDriver endpoint but Diff (whose body is the tar itself).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GraphReply {
    #[serde(
        rename = "Err",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub err: String,
    #[serde(
        rename = "Dir",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub dir: String,
    #[serde(
        rename = "Exists",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub exists: bool,
    #[serde(
        rename = "Status",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub status: Vec<[String; 2]>,
    #[serde(
        rename = "Changes",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub changes: Vec<WireChange>,
    #[serde(
        rename = "Size",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "is_zero"
    )]
    pub size: u64,
    #[serde(
        rename = "Metadata",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub metadata: BTreeMap<String, String>,
    #[serde(
        rename = "Capabilities",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capabilities: Option<WireCapabilities>,
    /// Our extension: `/GraphDriver.Usage`.
    #[serde(rename = "Usage", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeRequest {
    #[serde(
        rename = "Name",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub name: String,
    #[serde(rename = "Opts", default, skip_serializing_if = "Option::is_none")]
    pub opts: Option<BTreeMap<String, String>>,
    #[serde(
        rename = "ID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WireVolume {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(
        rename = "Mountpoint",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mountpoint: String,
    #[serde(
        rename = "CreatedAt",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub created_at: String,
    #[serde(
        rename = "Status",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub status: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireVolumeCapabilities {
    #[serde(rename = "Scope", default, deserialize_with = "null_as_default")]
    pub scope: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeReply {
    #[serde(
        rename = "Err",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub err: String,
    #[serde(
        rename = "Mountpoint",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub mountpoint: String,
    #[serde(rename = "Volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<WireVolume>,
    #[serde(rename = "Volumes", default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<Vec<WireVolume>>,
    #[serde(
        rename = "Capabilities",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub capabilities: Option<WireVolumeCapabilities>,
    /// Our extension: `/VolumeDriver.Usage`.
    #[serde(rename = "Usage", default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_dockers() {
        let init: InitRequest = serde_json::from_str(
            r#"{"Home":"/h","Opts":[],"UIDMaps":[{"container_id":0,"host_id":1000,"size":1}],"GIDMaps":[]}"#,
        )
        .unwrap();
        assert_eq!(init.uid_maps[0].host_id, 1000);
        let caps: GraphReply =
            serde_json::from_str(r#"{"Capabilities":{"ReproducesExactDiffs":true}}"#).unwrap();
        assert!(caps.capabilities.unwrap().reproduces_exact_diffs);
        let req = serde_json::to_string(&GraphRequest {
            id: "a".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(req, r#"{"ID":"a"}"#);
    }
}
