//! Volumes as the engine sees them: a driver per volume (`local` or a plugin), labels, whether
//! a volume is anonymous, and which containers use it. The drivers store the data; this keeps
//! the engine's own facts in `<data-root>/volume-meta/<name>.json`.
//!
//! Create and remove of one name are serialised (a lock per volume name held from the lookup
//! to the end of the write), and the record is written before the answer: a restarted daemon
//! sees exactly the volumes, drivers and labels the API acknowledged.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strata_core::fsutil::doc_lock::DocLocks;
use strata_core::fsutil::{atomic_write, fsync_dir};
use strata_core::{Error, IoContext, Result, VolumeDriver, VolumeName};
use strata_plugin::PluginDirs;

/// What the engine records per volume.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumeMeta {
    pub driver: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made implicitly for a container (`-v /path`), removed by `rm -v` and pruned by default.
    #[serde(default)]
    pub anonymous: bool,
}

/// A volume as the API shows it (Docker's `Volume` object); its driver's status is any JSON.
pub type VolumeView = strata_api_types::volume::Volume<serde_json::Value>;
pub use strata_api_types::volume::UsageData;

pub struct VolumeService {
    /// Built-in drivers and the plugins connected so far.
    drivers: Mutex<BTreeMap<String, Arc<dyn VolumeDriver>>>,
    plugins: PluginDirs,
    meta_dir: PathBuf,
    users: Mutex<BTreeMap<VolumeName, BTreeSet<String>>>,
    /// Records read or written so far, with their allocated bytes (for `system df`): the
    /// records change only through this service, so requests need not read them again.
    metas: Mutex<BTreeMap<VolumeName, (VolumeMeta, u64)>>,
    /// Held across create and remove of one volume name (its driver volume and its record).
    docs: DocLocks<VolumeName>,
}

impl VolumeService {
    pub fn new(
        meta_dir: PathBuf,
        drivers: BTreeMap<String, Arc<dyn VolumeDriver>>,
        plugins: PluginDirs,
    ) -> Result<Self> {
        std::fs::create_dir_all(&meta_dir).ctx("create", &meta_dir)?;
        strata_core::fsutil::remove_stale_temps(&meta_dir)?;
        Ok(Self {
            drivers: Mutex::new(drivers),
            plugins,
            meta_dir,
            users: Mutex::new(BTreeMap::new()),
            metas: Mutex::new(BTreeMap::new()),
            docs: DocLocks::new(),
        })
    }

    fn connected(&self) -> Vec<Arc<dyn VolumeDriver>> {
        self.drivers
            .lock()
            .map(|d| d.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn driver_names(&self) -> Vec<String> {
        self.drivers
            .lock()
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// A built-in driver, or the volume plugin of that name (connected on first use).
    async fn driver(&self, name: &str) -> Result<Arc<dyn VolumeDriver>> {
        if let Some(d) = self.drivers.lock().ok().and_then(|d| d.get(name).cloned()) {
            return Ok(d);
        }
        match super::plugins::volume_driver(&self.plugins, name).await? {
            Some(d) => {
                if let Ok(mut map) = self.drivers.lock() {
                    map.insert(name.to_string(), d.clone());
                }
                Ok(d)
            }
            None => Err(Error::not_found(format!(
                "volume driver {name:?}: not built in ({}) and no plugin of that name",
                self.driver_names().join(", ")
            ))),
        }
    }

    /// Connects a volume plugin now (at start-up, so its volumes are listed).
    pub async fn connect_plugin(&self, name: &str) -> Result<()> {
        self.driver(name).await.map(|_| ())
    }

    fn meta_path(&self, name: &VolumeName) -> PathBuf {
        self.meta_dir.join(format!("{name}.json"))
    }

    fn read_meta(&self, name: &VolumeName) -> Option<VolumeMeta> {
        self.read_meta_sized(name).map(|(m, _)| m)
    }

    /// The record and its allocated bytes; read from disk once, then kept.
    fn read_meta_sized(&self, name: &VolumeName) -> Option<(VolumeMeta, u64)> {
        if let Some(found) = self.metas.lock().ok()?.get(name) {
            return Some(found.clone());
        }
        let path = self.meta_path(name);
        let bytes = std::fs::read(&path).ok()?;
        let meta: VolumeMeta = serde_json::from_slice(&bytes).ok()?;
        let allocated = super::accounting::allocated(&path);
        let found = (meta, allocated);
        if let Ok(mut m) = self.metas.lock() {
            m.insert(name.clone(), found.clone());
        }
        Some(found)
    }

    fn forget_meta(&self, name: &VolumeName) {
        if let Ok(mut m) = self.metas.lock() {
            m.remove(name);
        }
    }

    /// What a volume costs on disk: what its driver stores (the driver keeps that figure; see
    /// `VolumeDriver::usage`) plus the engine's record of it. `None` when the driver cannot
    /// tell.
    pub async fn on_disk(&self, name: &VolumeName) -> Option<u64> {
        let record = self.read_meta_sized(name).map_or(0, |(_, b)| b);
        self.usage(name).await.ok().map(|u| u.bytes + record)
    }

    /// The driver that holds `name`: the recorded one, else the first driver that knows it.
    async fn locate(&self, name: &VolumeName) -> Result<(String, VolumeMeta)> {
        if let Some(meta) = self.read_meta(name) {
            return Ok((meta.driver.clone(), meta));
        }
        let drivers: Vec<(String, Arc<dyn VolumeDriver>)> = self
            .drivers
            .lock()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for (driver_name, driver) in &drivers {
            if driver.get(name).await.is_ok() {
                let meta = VolumeMeta {
                    driver: driver_name.clone(),
                    ..VolumeMeta::default()
                };
                return Ok((driver_name.clone(), meta));
            }
        }
        Err(Error::not_found(format!("volume {name}")))
    }

    /// Creates a volume; creating one that exists with the same driver returns it (Docker's
    /// behaviour), with another driver is a conflict.
    pub async fn create(
        &self,
        name: Option<VolumeName>,
        driver: Option<&str>,
        opts: &BTreeMap<String, String>,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeView> {
        let anonymous = name.is_none();
        let name = match name {
            Some(n) => n,
            None => VolumeName::new(strata_core::LayerId::random()?.to_string())?,
        };
        let driver_name = driver.filter(|d| !d.is_empty()).unwrap_or("local");
        let doc = self.docs.lock(&name).await;
        if let Ok((existing, _)) = self.locate(&name).await {
            if existing != driver_name {
                return Err(Error::AlreadyExists(format!(
                    "volume {name} with driver {existing} (asked for {driver_name})"
                )));
            }
            drop(doc);
            return self.inspect(&name).await;
        }
        let driver = self.driver(driver_name).await?;
        let meta = VolumeMeta {
            driver: driver_name.to_string(),
            labels,
            anonymous,
        };
        let bytes = serde_json::to_vec(&meta).map_err(|e| Error::Other(e.to_string()))?;
        driver.create(&name, opts).await?;
        let path = self.meta_path(&name);
        self.forget_meta(&name);
        let written = tokio::task::spawn_blocking(move || atomic_write(&path, &bytes)).await?;
        if let Err(e) = written {
            // Unrecorded, the volume would come back after a restart without its labels.
            if let Err(undo) = driver.remove(&name).await {
                tracing::warn!(volume = %name, "could not undo a volume create: {undo}");
            }
            return Err(e);
        }
        drop(doc);
        self.inspect(&name).await
    }

    pub async fn inspect(&self, name: &VolumeName) -> Result<VolumeView> {
        let (driver_name, meta) = self.locate(name).await?;
        let driver = self.driver(&driver_name).await?;
        let info = driver.get(name).await?;
        Ok(VolumeView {
            name: name.to_string(),
            driver: driver_name,
            mountpoint: info
                .mountpoint
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            created_at: info.created_at,
            labels: meta.labels,
            scope: match driver.capabilities().scope {
                strata_core::VolumeScope::Local => "local".into(),
                strata_core::VolumeScope::Global => "global".into(),
            },
            options: info.options,
            status: (!info.status.is_empty()).then_some(info.status),
            usage_data: None,
        })
    }

    pub async fn list(&self) -> Result<Vec<VolumeView>> {
        let mut out = Vec::new();
        for driver in self.connected() {
            for info in driver.list().await? {
                match self.inspect(&info.name).await {
                    Ok(v) => out.push(v),
                    Err(e) => tracing::warn!(volume = %info.name, "skipping volume: {e}"),
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub fn is_anonymous(&self, name: &VolumeName) -> bool {
        self.read_meta(name).is_some_and(|m| m.anonymous)
    }

    /// Containers using the volume (mounted or merely referenced by a container's config).
    pub fn users(&self, name: &VolumeName) -> usize {
        self.users
            .lock()
            .map(|u| u.get(name).map_or(0, BTreeSet::len))
            .unwrap_or(0)
    }

    pub fn add_user(&self, name: &VolumeName, container: &str) {
        if let Ok(mut u) = self.users.lock() {
            u.entry(name.clone())
                .or_default()
                .insert(container.to_string());
        }
    }

    pub fn remove_user(&self, name: &VolumeName, container: &str) {
        if let Ok(mut u) = self.users.lock() {
            if let Some(set) = u.get_mut(name) {
                set.remove(container);
                if set.is_empty() {
                    u.remove(name);
                }
            }
        }
    }

    /// Removes a volume; refused while a container uses it unless `force` (Docker's force
    /// only ignores missing volumes; in-use stays refused).
    pub async fn remove(&self, name: &VolumeName, force: bool) -> Result<()> {
        let _doc = self.docs.lock(name).await;
        let (driver_name, _) = match self.locate(name).await {
            Ok(found) => found,
            Err(Error::NotFound(_)) if force => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.users(name) > 0 {
            return Err(Error::busy(format!(
                "remove {name}: volume is in use by {} container(s)",
                self.users(name)
            )));
        }
        self.driver(&driver_name).await?.remove(name).await?;
        self.forget_meta(name);
        let meta = self.meta_path(name);
        let dir = self.meta_dir.clone();
        tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&meta) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(Error::io("remove", meta, e)),
            }
            fsync_dir(&dir)
        })
        .await?
    }

    pub async fn mount(
        &self,
        name: &VolumeName,
        caller: &strata_core::CallerId,
    ) -> Result<PathBuf> {
        let (driver_name, _) = self.locate(name).await?;
        self.driver(&driver_name).await?.mount(name, caller).await
    }

    pub async fn unmount(&self, name: &VolumeName, caller: &strata_core::CallerId) -> Result<()> {
        let (driver_name, _) = self.locate(name).await?;
        self.driver(&driver_name).await?.unmount(name, caller).await
    }

    pub async fn usage(&self, name: &VolumeName) -> Result<strata_core::Usage> {
        let (driver_name, _) = self.locate(name).await?;
        self.driver(&driver_name).await?.usage(name).await
    }

    /// Removes unused volumes: anonymous ones only, or all with `all` (API >= 1.42 rule).
    pub async fn prune(&self, all: bool) -> Result<(Vec<String>, u64)> {
        let mut deleted = Vec::new();
        let mut reclaimed = 0;
        for v in self.list().await? {
            let Ok(name) = VolumeName::new(v.name.clone()) else {
                continue;
            };
            if self.users(&name) > 0 || !(all || self.is_anonymous(&name)) {
                continue;
            }
            let size = self.usage(&name).await.map(|u| u.bytes).unwrap_or(0);
            if self.remove(&name, false).await.is_ok() {
                reclaimed += size;
                deleted.push(v.name);
            }
        }
        Ok((deleted, reclaimed))
    }
}
