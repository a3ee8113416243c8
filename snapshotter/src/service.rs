//! containerd's Snapshots service over a `LayerDriver`: snapshots are metadata records (see
//! [`crate::meta`]) that own driver layers named by ids we generate, never by containerd's
//! keys. An active snapshot owns a read-write layer created from its parent's layer; commit
//! only relabels it; a view of a parent mounts the parent's layer read-only and owns nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use containerd_snapshots::api::types::Mount;
use containerd_snapshots::{Info, Kind as WireKind, Snapshotter, Usage};
use futures::stream;
use strata_core::{CreateOpts, LayerDriver, LayerId};
use tokio::sync::Mutex;

use crate::error::{Result, SnapError};
use crate::filters::Filters;
use crate::meta::{Kind, Meta, Record};
use crate::mounts::Holds;
use crate::recovery;

pub struct StrataSnapshotter {
    driver: Arc<dyn LayerDriver>,
    meta: Arc<Meta>,
    holds: Holds,
    /// One change at a time: a driver step and its metadata transactions go together.
    writer: Mutex<()>,
}

impl StrataSnapshotter {
    /// Opens the metadata in `meta_path` and brings it and the driver back in step.
    pub async fn open(driver: Arc<dyn LayerDriver>, meta_path: &Path) -> Result<Self> {
        let path = meta_path.to_path_buf();
        let meta = Arc::new(tokio::task::spawn_blocking(move || Meta::open(&path)).await??);
        let this = Self {
            holds: Holds::new(Arc::clone(&driver)),
            driver,
            meta,
            writer: Mutex::new(()),
        };
        recovery::recover(&*this.driver, &this.meta_handle()).await?;
        Ok(this)
    }

    pub fn driver(&self) -> &Arc<dyn LayerDriver> {
        &self.driver
    }

    pub fn meta_handle(&self) -> MetaHandle {
        MetaHandle(Arc::clone(&self.meta))
    }

    /// Releases the mounts held here and the driver's own (shutdown).
    pub async fn shutdown(&self) {
        let _w = self.writer.lock().await;
        self.holds.release_all().await;
        if let Err(e) = self.driver.cleanup().await {
            tracing::warn!("driver cleanup: {e}");
        }
    }

    /// Creates an active or view snapshot. A view of a parent owns no layer; anything else
    /// gets a new layer over the parent's.
    async fn create(
        &self,
        kind: Kind,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let _w = self.writer.lock().await;
        let parent = (!parent.is_empty()).then_some(parent);
        let meta = self.meta_handle();
        let (k, p) = (key.clone(), parent.clone());
        let parent_record = meta.run(move |m| m.check_new(&k, p.as_deref())).await?;
        let parent_layer = parent_record.and_then(|r| r.layer);
        let layer = match (kind, &parent_layer) {
            (Kind::View, Some(_)) => None,
            _ => Some(self.new_layer(kind, parent_layer.as_ref()).await?),
        };
        let now = SystemTime::now();
        let record = Record {
            kind,
            parent,
            layer: layer.clone(),
            labels: labels.into_iter().collect(),
            created: now,
            updated: now,
        };
        let (k, r) = (key.clone(), record.clone());
        if let Err(e) = meta.run(move |m| m.insert(&k, &r)).await {
            if let Some(layer) = &layer {
                self.discard_layer(layer).await;
            }
            return Err(e);
        }
        self.mounts_of(&key, &record).await
    }

    /// Creates a driver layer, on `pending` until a snapshot record owns it.
    async fn new_layer(&self, kind: Kind, parent: Option<&LayerId>) -> Result<LayerId> {
        let layer = LayerId::random()?;
        let l = layer.clone();
        self.meta_handle().run(move |m| m.add_pending(&l)).await?;
        let opts = match kind {
            Kind::View => CreateOpts::read_only(),
            _ => CreateOpts::read_write(),
        };
        if let Err(e) = self.driver.create(&layer, parent, &opts).await {
            self.discard_layer(&layer).await;
            return Err(e.into());
        }
        Ok(layer)
    }

    /// Removes a pending layer from the driver and strikes it off; a failure leaves it
    /// pending for recovery or Cleanup.
    async fn discard_layer(&self, layer: &LayerId) {
        match self.driver.exists(layer).await {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = self.driver.remove(layer).await {
                    tracing::warn!(%layer, "removing the layer (left for cleanup): {e}");
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(%layer, "checking the layer (left for cleanup): {e}");
                return;
            }
        }
        let l = layer.to_string();
        if let Err(e) = self.meta_handle().run(move |m| m.drop_pending(&l)).await {
            tracing::warn!(%layer, "striking the layer off pending: {e}");
        }
    }

    /// The layer whose tree `record` shows and whether read-only.
    async fn tree_of(&self, key: &str, record: &Record) -> Result<(LayerId, bool)> {
        let read_only = match record.kind {
            Kind::Active => false,
            Kind::View => true,
            Kind::Committed => {
                return Err(SnapError::FailedPrecondition(format!(
                    "snapshot {key:?} is committed: only active snapshots and views have mounts"
                )))
            }
        };
        if let Some(layer) = &record.layer {
            return Ok((layer.clone(), read_only));
        }
        let parent = record.parent.clone().unwrap_or_default();
        let p = parent.clone();
        let parent_record = self.meta_handle().run(move |m| m.get(&p)).await?;
        match parent_record.and_then(|r| r.layer) {
            Some(layer) => Ok((layer, read_only)),
            None => Err(SnapError::NotFound(parent)),
        }
    }

    async fn mounts_of(&self, key: &str, record: &Record) -> Result<Vec<Mount>> {
        let (layer, read_only) = self.tree_of(key, record).await?;
        self.holds.mounts(key, &layer, read_only).await
    }

    async fn record(&self, key: &str) -> Result<Record> {
        let k = key.to_string();
        self.meta_handle()
            .run(move |m| m.get(&k))
            .await?
            .ok_or_else(|| SnapError::NotFound(key.to_string()))
    }
}

/// The metadata store, used from async code on the blocking pool (redb syncs at commit).
#[derive(Clone)]
pub struct MetaHandle(Arc<Meta>);

impl MetaHandle {
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Meta) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let meta = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&meta)).await?
    }
}

pub fn info(name: String, r: Record) -> Info {
    Info {
        kind: match r.kind {
            Kind::Active => WireKind::Active,
            Kind::View => WireKind::View,
            Kind::Committed => WireKind::Committed,
        },
        name,
        parent: r.parent.unwrap_or_default(),
        labels: r.labels.into_iter().collect(),
        created_at: r.created,
        updated_at: r.updated,
    }
}

/// containerd's Update: only labels change. No paths replaces all labels, as does `labels`;
/// `labels.KEY` sets that label, or deletes it when the request has none.
fn apply_update(
    record: &mut Record,
    labels: &HashMap<String, String>,
    paths: Option<&[String]>,
) -> Result<()> {
    let all: BTreeMap<String, String> = labels.clone().into_iter().collect();
    let Some(paths) = paths.filter(|p| !p.is_empty()) else {
        record.labels = all;
        return Ok(());
    };
    for path in paths {
        if path == "labels" {
            record.labels = all.clone();
        } else if let Some(key) = path.strip_prefix("labels.") {
            match labels.get(key) {
                Some(v) => record.labels.insert(key.to_string(), v.clone()),
                None => record.labels.remove(key),
            };
        } else {
            return Err(SnapError::InvalidArgument(format!(
                "cannot update field {path:?} of a snapshot"
            )));
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Snapshotter for StrataSnapshotter {
    type Error = SnapError;
    type InfoStream = stream::Iter<std::vec::IntoIter<Result<Info>>>;

    async fn stat(&self, key: String) -> Result<Info> {
        let record = self.record(&key).await?;
        Ok(info(key, record))
    }

    async fn update(&self, info_in: Info, fieldpaths: Option<Vec<String>>) -> Result<Info> {
        let _w = self.writer.lock().await;
        let key = info_in.name.clone();
        let k = key.clone();
        let record = self
            .meta_handle()
            .run(move |m| {
                m.update(&k, |r| {
                    apply_update(r, &info_in.labels, fieldpaths.as_deref())
                })
            })
            .await?;
        Ok(info(key, record))
    }

    async fn usage(&self, key: String) -> Result<Usage> {
        let record = self.record(&key).await?;
        let (Kind::Active | Kind::Committed, Some(layer)) = (record.kind, &record.layer) else {
            return Ok(Usage::default());
        };
        let u = self.driver.usage(layer).await?;
        Ok(Usage {
            size: i64::try_from(u.bytes).unwrap_or(i64::MAX),
            inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<Mount>> {
        let record = self.record(&key).await?;
        self.mounts_of(&key, &record).await
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(Kind::Active, key, parent, labels).await
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(Kind::View, key, parent, labels).await
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let _w = self.writer.lock().await;
        let labels: BTreeMap<String, String> = labels.into_iter().collect();
        let k = key.clone();
        self.meta_handle()
            .run(move |m| m.commit(&name, &k, labels))
            .await?;
        // The committed layer is never written again: the mount taken for the active key goes.
        self.holds.release(&key).await
    }

    async fn remove(&self, key: String) -> Result<()> {
        let _w = self.writer.lock().await;
        let k = key.clone();
        let record = self.meta_handle().run(move |m| m.remove(&k)).await?;
        self.holds.release(&key).await?;
        if let Some(layer) = &record.layer {
            self.discard_layer(layer).await;
        }
        Ok(())
    }

    async fn clear(&self) -> Result<()> {
        let _w = self.writer.lock().await;
        let removed = recovery::remove_orphans(&*self.driver, &self.meta_handle()).await?;
        tracing::info!(removed, "cleanup");
        Ok(())
    }

    async fn list(&self, _snapshotter: String, filters: Vec<String>) -> Result<Self::InfoStream> {
        let filters = Filters::parse(&filters)?;
        let all = self.meta_handle().run(|m| m.list()).await?;
        let infos: Vec<Result<Info>> = all
            .into_iter()
            .filter(|(name, r)| filters.matches(name, r))
            .map(|(name, r)| Ok(info(name, r)))
            .collect();
        Ok(stream::iter(infos))
    }
}
