//! A volume plugin as an ordinary `VolumeDriver`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;

use super::errors;
use super::graph_client::{activate, within_scope};
use super::transport::Transport;
use super::wire::{VolumeReply, VolumeRequest, WireVolume};
use strata_core::error::{Error, Result};
use strata_core::ids::{CallerId, VolumeName};
use strata_core::layer::Usage;
use strata_core::volume::{VolumeCapabilities, VolumeDriver, VolumeInfo, VolumeScope};

pub struct VolumeDriverPlugin {
    transport: Transport,
    /// Mount paths must lie below this, when the plugin's spec declares it.
    scope: Option<PathBuf>,
    capabilities: VolumeCapabilities,
}

impl VolumeDriverPlugin {
    pub async fn connect(transport: Transport, scope: Option<PathBuf>) -> Result<Self> {
        activate(&transport, "VolumeDriver").await?;
        let capabilities = match transport
            .call::<_, VolumeReply>("VolumeDriver.Capabilities", &serde_json::json!({}))
            .await
        {
            // A missing or unknown scope means local, and the value is lower-cased (Docker).
            Ok(r) => VolumeCapabilities {
                scope: match r
                    .capabilities
                    .map(|c| c.scope.to_ascii_lowercase())
                    .as_deref()
                {
                    Some("global") => VolumeScope::Global,
                    _ => VolumeScope::Local,
                },
            },
            Err(Error::Unsupported(_)) => VolumeCapabilities::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            transport,
            scope,
            capabilities,
        })
    }

    async fn call(&self, endpoint: &str, req: VolumeRequest) -> Result<VolumeReply> {
        let reply: VolumeReply = self.transport.call(endpoint, &req).await?;
        if !reply.err.is_empty() {
            return Err(errors::decode(&self.transport.name, endpoint, &reply.err));
        }
        Ok(reply)
    }

    fn checked_path(&self, endpoint: &str, p: &str) -> Result<PathBuf> {
        let path = PathBuf::from(p);
        if within_scope(&path, self.scope.as_deref()) {
            Ok(path)
        } else {
            Err(Error::Other(format!(
                "plugin {:?}: {endpoint}: the mount point {p:?} is outside the plugin's scope{}",
                self.transport.name,
                self.scope
                    .as_ref()
                    .map(|s| format!(" ({})", s.display()))
                    .unwrap_or_default()
            )))
        }
    }

    fn info(&self, v: WireVolume) -> Result<VolumeInfo> {
        let mountpoint = if v.mountpoint.is_empty() {
            None
        } else {
            Some(self.checked_path("VolumeDriver.Get", &v.mountpoint)?)
        };
        Ok(VolumeInfo {
            name: VolumeName::new(v.name)?,
            mountpoint,
            created_at: (!v.created_at.is_empty()).then_some(v.created_at),
            options: BTreeMap::new(),
            status: v.status,
        })
    }
}

fn req(name: &VolumeName) -> VolumeRequest {
    VolumeRequest {
        name: name.to_string(),
        ..Default::default()
    }
}

#[async_trait]
impl VolumeDriver for VolumeDriverPlugin {
    fn name(&self) -> &str {
        &self.transport.name
    }

    fn capabilities(&self) -> VolumeCapabilities {
        self.capabilities.clone()
    }

    async fn create(&self, name: &VolumeName, opts: &BTreeMap<String, String>) -> Result<()> {
        let mut r = req(name);
        r.opts = Some(opts.clone());
        self.call("VolumeDriver.Create", r).await.map(|_| ())
    }

    async fn remove(&self, name: &VolumeName) -> Result<()> {
        self.call("VolumeDriver.Remove", req(name))
            .await
            .map(|_| ())
    }

    async fn mount(&self, name: &VolumeName, caller: &CallerId) -> Result<PathBuf> {
        let mut r = req(name);
        r.id = caller.to_string();
        let reply = self.call("VolumeDriver.Mount", r.clone()).await?;
        match self.checked_path("VolumeDriver.Mount", &reply.mountpoint) {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = self.call("VolumeDriver.Unmount", r).await;
                Err(e)
            }
        }
    }

    async fn unmount(&self, name: &VolumeName, caller: &CallerId) -> Result<()> {
        let mut r = req(name);
        r.id = caller.to_string();
        self.call("VolumeDriver.Unmount", r).await.map(|_| ())
    }

    async fn path(&self, name: &VolumeName) -> Result<PathBuf> {
        let reply = self.call("VolumeDriver.Path", req(name)).await?;
        self.checked_path("VolumeDriver.Path", &reply.mountpoint)
    }

    async fn get(&self, name: &VolumeName) -> Result<VolumeInfo> {
        let reply = self.call("VolumeDriver.Get", req(name)).await?;
        let v = reply
            .volume
            .ok_or_else(|| Error::not_found(format!("volume {name}")))?;
        self.info(v)
    }

    async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let reply = self
            .call("VolumeDriver.List", VolumeRequest::default())
            .await?;
        reply
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| self.info(v))
            .collect()
    }

    async fn usage(&self, name: &VolumeName) -> Result<Usage> {
        let reply = self.call("VolumeDriver.Usage", req(name)).await?;
        let u = reply.usage.unwrap_or_default();
        Ok(Usage {
            bytes: u.bytes,
            inodes: u.inodes,
        })
    }
}
