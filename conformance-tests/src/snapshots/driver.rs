//! A `LayerDriver` over containerd's Snapshots API, so the layer-driver cases run through a
//! snapshotter as containerd would use it. Layer `id` is the active snapshot `NS/active/id`
//! until it gets a child, then the committed `NS/id` (Docker's parents are never written once
//! they have children); a committed layer is mounted through a view `NS/view/id`. Diffs are
//! core's naive diff over the mounted trees, applies go through the mount; `NS` is the case's
//! root, so cases sharing one snapshotter never see each other's snapshots.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_snapshots::tonic::{Code, Status};
use strata_core::archive::WhiteoutMode;
use strata_core::naive::{self, MountedPair};
use strata_core::{
    Capabilities, Change, CreateOpts, Error, LayerDriver, LayerId, Result, TarStream, Usage,
};
use strata_snapshotter::api::snapshots::v1 as api;
use strata_snapshotter::client::Client;

use super::mounting::mount_all;

struct Mounted {
    path: PathBuf,
    count: u32,
    view: Option<String>,
}

pub struct SnapshotsDriver {
    name: String,
    client: Client,
    caps: Capabilities,
    ns: String,
    mnt: PathBuf,
    mounted: Arc<Mutex<HashMap<LayerId, Mounted>>>,
    /// Views whose mount is gone but whose snapshot is still to be removed (see `release`).
    stale_views: Arc<Mutex<Vec<String>>>,
    /// One create, remove, mount or unmount at a time: each is several RPCs (stat, commit,
    /// view) that must not interleave.
    op: tokio::sync::Mutex<()>,
}

fn status(e: Status) -> Error {
    let msg = format!("snapshotter: {}", e.message());
    match e.code() {
        Code::NotFound => Error::NotFound(msg),
        Code::AlreadyExists => Error::AlreadyExists(msg),
        Code::FailedPrecondition => Error::Busy(msg),
        Code::InvalidArgument => Error::InvalidInput(msg),
        Code::Unimplemented => Error::Unsupported(msg),
        _ => Error::Other(msg),
    }
}

#[derive(PartialEq)]
enum State {
    Active,
    Committed,
}

impl SnapshotsDriver {
    /// A driver on the case's `root`; mounts a previous driver left there are taken down, as
    /// an engine restarting does (their views go when the layer is next mounted).
    pub fn new(name: &str, client: Client, caps: Capabilities, root: &Path) -> Result<Self> {
        let mnt = root.join("snapshot-mounts");
        std::fs::create_dir_all(&mnt).map_err(|e| Error::io("create", &mnt, e))?;
        strata_core::fsutil::mounts::unmount_all_under(&mnt)?;
        Ok(Self {
            name: name.to_string(),
            client,
            caps,
            ns: format!("conformance{}", root.display()),
            mnt,
            mounted: Arc::default(),
            stale_views: Arc::default(),
            op: tokio::sync::Mutex::new(()),
        })
    }

    fn active(&self, id: &LayerId) -> String {
        format!("{}/active/{id}", self.ns)
    }

    fn committed(&self, id: &LayerId) -> String {
        format!("{}/{id}", self.ns)
    }

    async fn stat(&self, key: String) -> Result<bool> {
        let req = api::StatSnapshotRequest {
            snapshotter: String::new(),
            key,
        };
        match self.client.clone().stat(req).await {
            Ok(_) => Ok(true),
            Err(e) if e.code() == Code::NotFound => Ok(false),
            Err(e) => Err(status(e)),
        }
    }

    async fn state(&self, id: &LayerId) -> Result<State> {
        if self.stat(self.active(id)).await? {
            return Ok(State::Active);
        }
        if self.stat(self.committed(id)).await? {
            return Ok(State::Committed);
        }
        Err(Error::not_found(format!("layer {id}")))
    }

    async fn remove_key(&self, key: String) -> Result<()> {
        let req = api::RemoveSnapshotRequest {
            snapshotter: String::new(),
            key,
        };
        self.client
            .clone()
            .remove(req)
            .await
            .map(|_| ())
            .map_err(status)
    }

    /// Removes the views whose mounts were released outside async code.
    async fn drain_views(&self) -> Result<()> {
        let views: Vec<String> = std::mem::take(&mut *self.stale_views.lock().unwrap());
        for v in views {
            self.remove_key(v).await?;
        }
        Ok(())
    }

    /// `id`'s snapshot committed, so it may be a parent.
    async fn commit_for_child(&self, id: &LayerId) -> Result<String> {
        if self.state(id).await? == State::Active {
            let req = api::CommitSnapshotRequest {
                snapshotter: String::new(),
                name: self.committed(id),
                key: self.active(id),
                labels: HashMap::new(),
            };
            self.client.clone().commit(req).await.map_err(status)?;
        }
        Ok(self.committed(id))
    }

    async fn mounts_for(
        &self,
        id: &LayerId,
    ) -> Result<(Vec<strata_snapshotter::api::types::Mount>, Option<String>)> {
        if self.state(id).await? == State::Active {
            let req = api::MountsRequest {
                snapshotter: String::new(),
                key: self.active(id),
            };
            let m = self.client.clone().mounts(req).await.map_err(status)?;
            return Ok((m.into_inner().mounts, None));
        }
        let view = format!("{}/view/{id}", self.ns);
        let req = api::ViewSnapshotRequest {
            snapshotter: String::new(),
            key: view.clone(),
            parent: self.committed(id),
            labels: HashMap::new(),
        };
        let m = match self.client.clone().view(req.clone()).await {
            // Left by a driver before a restart: no mount of ours uses it any more.
            Err(e) if e.code() == Code::AlreadyExists => {
                self.remove_key(view.clone()).await?;
                self.client.clone().view(req).await
            }
            other => other,
        };
        Ok((m.map_err(status)?.into_inner().mounts, Some(view)))
    }

    /// A pair of mounts released (unmounted) when the naive diff is done.
    async fn pair(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<MountedPair> {
        let layer = self.mount(id, "").await?;
        let parent_path = match parent {
            Some(p) => match self.mount(p, "").await {
                Ok(path) => Some(path),
                Err(e) => {
                    let _ = release(&self.mounted, &self.stale_views, id);
                    return Err(e);
                }
            },
            None => None,
        };
        let (mounted, views) = (Arc::clone(&self.mounted), Arc::clone(&self.stale_views));
        let ids: Vec<LayerId> = std::iter::once(id.clone()).chain(parent.cloned()).collect();
        Ok(MountedPair::new(layer, parent_path).on_release(move || {
            for i in &ids {
                if let Err(e) = release(&mounted, &views, i) {
                    tracing::warn!(%i, "releasing a diff mount: {e}");
                }
            }
        }))
    }
}

/// Drops one reference to `id`'s mount; the last unmounts it and queues its view for removal
/// (callable from blocking code: no RPC here).
fn release(
    mounted: &Mutex<HashMap<LayerId, Mounted>>,
    views: &Mutex<Vec<String>>,
    id: &LayerId,
) -> Result<()> {
    let mut table = mounted.lock().unwrap();
    let Some(m) = table.get_mut(id) else {
        return Ok(());
    };
    m.count -= 1;
    if m.count > 0 {
        return Ok(());
    }
    let m = table.remove(id).expect("present");
    strata_core::fsutil::mounts::unmount(&m.path, false)?;
    let _ = std::fs::remove_dir(&m.path);
    views.lock().unwrap().extend(m.view);
    Ok(())
}

#[async_trait]
impl LayerDriver for SnapshotsDriver {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        _opts: &CreateOpts,
    ) -> Result<()> {
        let _op = self.op.lock().await;
        self.drain_views().await?;
        if self.exists(id).await? {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        let parent = match parent {
            Some(p) => self.commit_for_child(p).await?,
            None => String::new(),
        };
        let req = api::PrepareSnapshotRequest {
            snapshotter: String::new(),
            key: self.active(id),
            parent,
            labels: HashMap::new(),
        };
        self.client
            .clone()
            .prepare(req)
            .await
            .map(|_| ())
            .map_err(status)
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let _op = self.op.lock().await;
        self.drain_views().await?;
        if self.mounted.lock().unwrap().contains_key(id) {
            return Err(Error::busy(format!("layer {id} is mounted")));
        }
        match self.state(id).await? {
            State::Active => self.remove_key(self.active(id)).await,
            State::Committed => self.remove_key(self.committed(id)).await,
        }
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.stat(self.active(id)).await? || self.stat(self.committed(id)).await?)
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let _op = self.op.lock().await;
        self.drain_views().await?;
        if let Some(m) = self.mounted.lock().unwrap().get_mut(id) {
            m.count += 1;
            return Ok(m.path.clone());
        }
        let (mounts, view) = self.mounts_for(id).await?;
        let path = self.mnt.join(id.as_str());
        std::fs::create_dir_all(&path).map_err(|e| Error::io("create", &path, e))?;
        if let Err(e) = mount_all(&mounts, &path) {
            if let Some(v) = view {
                self.remove_key(v).await?;
            }
            return Err(e);
        }
        let entry = Mounted {
            path: path.clone(),
            count: 1,
            view,
        };
        self.mounted.lock().unwrap().insert(id.clone(), entry);
        Ok(path)
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let _op = self.op.lock().await;
        release(&self.mounted, &self.stale_views, id)?;
        self.drain_views().await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        naive::changes(self.pair(id, parent).await?).await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        Ok(naive::diff(self.pair(id, parent).await?))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        let path = self.mount(id, "").await?;
        let applied = naive::apply(path, tar, WhiteoutMode::Delete).await;
        self.unmount(id).await?;
        Ok(applied?.content_bytes)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        naive::diff_size(self.pair(id, parent).await?).await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let key = match self.state(id).await? {
            State::Active => self.active(id),
            State::Committed => self.committed(id),
        };
        let req = api::UsageRequest {
            snapshotter: String::new(),
            key,
        };
        let u = self
            .client
            .clone()
            .usage(req)
            .await
            .map_err(status)?
            .into_inner();
        Ok(Usage {
            bytes: u.size.max(0) as u64,
            inodes: u.inodes.max(0) as u64,
        })
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        Ok(vec![("Snapshots API".into(), self.ns.clone())])
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.state(id).await?;
        Ok(BTreeMap::new())
    }

    async fn cleanup(&self) -> Result<()> {
        let ids: Vec<LayerId> = self.mounted.lock().unwrap().keys().cloned().collect();
        for id in ids {
            while self.mounted.lock().unwrap().contains_key(&id) {
                release(&self.mounted, &self.stale_views, &id)?;
            }
        }
        self.drain_views().await
    }
}
