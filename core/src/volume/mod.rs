//! The volume driver contract, shaped as Docker's VolumeDriver plugin protocol, plus `usage`.

pub mod local;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{CallerId, VolumeName};
use crate::layer::Usage;

/// Where a volume can be seen: this host only, or the whole cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    #[default]
    Local,
    Global,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeCapabilities {
    pub scope: VolumeScope,
}

/// What `get` and `list` tell about a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: VolumeName,
    /// Host path where the volume's data is (or will be when mounted).
    pub mountpoint: Option<PathBuf>,
    /// RFC 3339 creation time, when the driver knows it.
    pub created_at: Option<String>,
    /// Options the volume was created with (`type`, `device`, `o` for the local driver).
    pub options: BTreeMap<String, String>,
    /// Driver-specific status, shown by `volume inspect` as Status.
    pub status: BTreeMap<String, serde_json::Value>,
}

/// The contract of a volume driver. Mounts are reference counted per caller: the same caller
/// mounting twice is one reference.
#[async_trait]
pub trait VolumeDriver: Send + Sync + 'static {
    /// The name `volume create -d` uses (`local` for the built-in one).
    fn name(&self) -> &str;

    fn capabilities(&self) -> VolumeCapabilities;

    async fn create(&self, name: &VolumeName, opts: &BTreeMap<String, String>) -> Result<()>;

    /// Deletes the volume and its data. `Busy` while any caller has it mounted.
    async fn remove(&self, name: &VolumeName) -> Result<()>;

    /// Makes the volume available for `caller` and returns its path.
    async fn mount(&self, name: &VolumeName, caller: &CallerId) -> Result<PathBuf>;

    /// Releases `caller`'s mount; the last release really unmounts.
    async fn unmount(&self, name: &VolumeName, caller: &CallerId) -> Result<()>;

    async fn path(&self, name: &VolumeName) -> Result<PathBuf>;

    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo>;

    async fn list(&self) -> Result<Vec<VolumeInfo>>;

    /// Bytes and inodes the volume's data occupies.
    async fn usage(&self, name: &VolumeName) -> Result<Usage>;
}
