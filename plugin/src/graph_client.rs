//! A graphdriver plugin as an ordinary `LayerDriver`.

use std::collections::BTreeMap;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use super::errors;
use super::transport::{PluginAddr, Transport};
use super::wire::{ActivateReply, GraphReply, GraphRequest, InitRequest, WireChange};
use strata_core::error::{Error, Result};
use strata_core::ids::LayerId;
use strata_core::layer::{
    Capabilities, Change, ChangeKind, CreateOpts, LayerDriver, LayerKind, TarStream, Usage,
};

pub struct GraphDriverPlugin {
    transport: Transport,
    home: PathBuf,
    capabilities: Capabilities,
}

/// Asks the plugin what it implements; refuses one that does not implement `kind`.
pub(super) async fn activate(t: &Transport, kind: &str) -> Result<()> {
    let reply: ActivateReply = t.call("Plugin.Activate", &serde_json::json!({})).await?;
    if !reply.implements.iter().any(|i| i == kind) {
        return Err(Error::invalid(format!(
            "plugin {:?} implements {:?}, not {kind}",
            t.name, reply.implements
        )));
    }
    Ok(())
}

/// Is `p` an absolute path without `.` or `..`, at or below `scope`?
pub(super) fn within_scope(p: &Path, scope: Option<&Path>) -> bool {
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && scope.is_none_or(|s| p.starts_with(s))
        && p != Path::new("/")
}

impl GraphDriverPlugin {
    /// Activates the plugin, gives it its home (`Init`) and reads its capabilities.
    pub async fn connect(
        transport: Transport,
        home: PathBuf,
        options: Vec<String>,
    ) -> Result<Self> {
        activate(&transport, "GraphDriver").await?;
        let init = InitRequest {
            home: home.display().to_string(),
            opts: options,
            ..Default::default()
        };
        let reply: GraphReply = transport.call("GraphDriver.Init", &init).await?;
        check(&transport, "GraphDriver.Init", &reply)?;
        let capabilities = match transport
            .call::<_, GraphReply>("GraphDriver.Capabilities", &serde_json::json!({}))
            .await
        {
            Ok(r) => {
                let wire = r.capabilities.unwrap_or_default();
                let mut caps = wire.strata.unwrap_or_default();
                caps.reproducible_diff |= wire.reproduces_exact_diffs;
                caps
            }
            Err(Error::Unsupported(_)) => Capabilities::default(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            transport,
            home,
            capabilities,
        })
    }

    pub fn addr(&self) -> &PluginAddr {
        &self.transport.addr
    }

    async fn call(&self, endpoint: &str, req: GraphRequest) -> Result<GraphReply> {
        let reply: GraphReply = self.transport.call(endpoint, &req).await?;
        check(&self.transport, endpoint, &reply)?;
        Ok(reply)
    }
}

fn check(t: &Transport, endpoint: &str, reply: &GraphReply) -> Result<()> {
    if reply.err.is_empty() {
        Ok(())
    } else {
        Err(errors::decode(&t.name, endpoint, &reply.err))
    }
}

fn req(id: &LayerId, parent: Option<&LayerId>) -> GraphRequest {
    GraphRequest {
        id: id.to_string(),
        parent: parent.map(|p| p.to_string()).unwrap_or_default(),
        ..Default::default()
    }
}

#[async_trait]
impl LayerDriver for GraphDriverPlugin {
    fn name(&self) -> &str {
        &self.transport.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        let endpoint = match opts.kind {
            LayerKind::ReadOnly => "GraphDriver.Create",
            LayerKind::ReadWrite => "GraphDriver.CreateReadWrite",
        };
        let mut r = req(id, parent);
        r.mount_label = opts.mount_label.clone();
        r.storage_opt = opts.storage_opts.0.clone();
        self.call(endpoint, r).await.map(|_| ())
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        self.call("GraphDriver.Remove", req(id, None))
            .await
            .map(|_| ())
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.call("GraphDriver.Exists", req(id, None)).await?.exists)
    }

    async fn mount(&self, id: &LayerId, mount_label: &str) -> Result<PathBuf> {
        let mut r = req(id, None);
        r.mount_label = mount_label.to_string();
        let reply = self.call("GraphDriver.Get", r).await?;
        let dir = PathBuf::from(&reply.dir);
        if !within_scope(&dir, Some(&self.home)) {
            // Do not leave the plugin holding a reference we will never release.
            let _ = self.call("GraphDriver.Put", req(id, None)).await;
            return Err(Error::Other(format!(
                "plugin {:?} returned the mount path {:?}, outside its home {}",
                self.transport.name,
                reply.dir,
                self.home.display()
            )));
        }
        Ok(dir)
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        self.call("GraphDriver.Put", req(id, None))
            .await
            .map(|_| ())
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let reply = self.call("GraphDriver.Changes", req(id, parent)).await?;
        reply
            .changes
            .into_iter()
            .map(|change| {
                let WireChange {
                    path,
                    kind,
                    path_bytes,
                } = change;
                let kind = ChangeKind::from_wire(kind).ok_or_else(|| {
                    Error::Other(format!(
                        "plugin {:?}: GraphDriver.Changes: unknown change kind {kind} for {path:?}",
                        self.transport.name
                    ))
                })?;
                // The exact bytes of a name that is not UTF-8, when the plugin sends them.
                let path = match path_bytes {
                    Some(bytes) => PathBuf::from(std::ffi::OsString::from_vec(bytes)),
                    None => PathBuf::from(path),
                };
                let bytes = path.as_os_str().as_bytes();
                if !bytes.starts_with(b"/") || bytes.split(|b| *b == b'/').any(|c| c == b"..") {
                    return Err(Error::Other(format!(
                        "plugin {:?}: GraphDriver.Changes: bad path {path:?}",
                        self.transport.name
                    )));
                }
                Ok(Change { path, kind })
            })
            .collect()
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        self.transport
            .call_stream_reply("GraphDriver.Diff", &req(id, parent))
            .await
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        let mut query = format!("?id={id}");
        if let Some(p) = parent {
            query.push_str(&format!("&parent={p}"));
        }
        let reply: GraphReply = self
            .transport
            .call_stream_request("GraphDriver.ApplyDiff", &query, tar)
            .await?;
        check(&self.transport, "GraphDriver.ApplyDiff", &reply)?;
        Ok(reply.size)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        Ok(self
            .call("GraphDriver.DiffSize", req(id, parent))
            .await?
            .size)
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let reply = self.call("GraphDriver.Usage", req(id, None)).await?;
        let u = reply.usage.unwrap_or_default();
        Ok(Usage {
            bytes: u.bytes,
            inodes: u.inodes,
        })
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        let reply = self
            .call("GraphDriver.Status", GraphRequest::default())
            .await?;
        Ok(reply.status.into_iter().map(|[k, v]| (k, v)).collect())
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        Ok(self
            .call("GraphDriver.GetMetadata", req(id, None))
            .await?
            .metadata)
    }

    async fn cleanup(&self) -> Result<()> {
        // Docker ignores transport errors here: the plugin may already be gone.
        match self
            .call("GraphDriver.Cleanup", GraphRequest::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Other(e)) if e.contains("cannot connect") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
