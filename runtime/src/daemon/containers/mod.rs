//! Containers as the engine keeps them: records on disk, the running process, waiters and
//! attachers. The process itself is `crate::container`'s business; the storage is the layer
//! store's (one read-write driver layer per container, no init layer).

pub mod archive;
pub mod changes;
pub mod create;
pub mod exec;
pub mod export;
mod extract;
mod fsops;
pub mod health;
pub mod lifecycle;
pub mod mounts;
pub mod pause;
pub mod process_identity;
pub mod record;
mod rename;
pub mod restart;
pub mod rootfs;
pub mod stats;
mod tar_tree;
pub mod top;
pub mod update;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_core::store::{ImageStore, LayerStore};
use strata_core::{Error, IoContext, LayerId, Result};
use tokio::sync::{broadcast, watch};

use crate::container::{ContainerStdin, OutputChunk, RunningContainer};
use record::{ContainerRecord, Status};

/// Exit events: a counter that grows at every exit, so `wait?condition=next-exit` can wait for
/// the next one, and the code of the last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exits {
    pub count: u64,
    pub last_code: i64,
}

/// One container in memory.
pub struct Container {
    record: Mutex<ContainerRecord>,
    /// Output of the current run; made at creation so an attach before start sees everything.
    pub output: broadcast::Sender<OutputChunk>,
    pub running: Mutex<Option<Arc<RunningContainer>>>,
    /// The stdin of the current run, taken by the first attach that asks for it.
    pub stdin: Mutex<Option<ContainerStdin>>,
    /// Bumped at every start, so a stdin attacher knows a run began.
    pub starts: watch::Sender<u64>,
    pub exits: watch::Sender<Exits>,
    pub removed: watch::Sender<bool>,
    /// Serialises start, stop and remove of this container.
    pub op_lock: tokio::sync::Mutex<()>,
    /// Frozen by `docker pause` (see `pause.rs`).
    pub paused: std::sync::atomic::AtomicBool,
}

impl Container {
    fn new(record: ContainerRecord) -> Arc<Self> {
        let (output, _) = crate::container::output_channel();
        Arc::new(Self {
            record: Mutex::new(record),
            output,
            running: Mutex::new(None),
            stdin: Mutex::new(None),
            starts: watch::channel(0).0,
            exits: watch::channel(Exits::default()).0,
            removed: watch::channel(false).0,
            op_lock: tokio::sync::Mutex::new(()),
            paused: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The record; poisoning (a panic while holding it) is not recoverable state, so the
    /// guard is taken anyway.
    pub fn record(&self) -> MutexGuard<'_, ContainerRecord> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> ContainerRecord {
        self.record().clone()
    }

    pub fn running(&self) -> Option<Arc<RunningContainer>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_running(&self) -> bool {
        self.record().state.status == Status::Running
    }
}

/// Measures a stopped container's layer and keeps the figures in its record (see
/// `daemon::sizes`). A container that started meanwhile is left alone.
pub async fn record_sizes(root: PathBuf, layers: LayerStore, c: &Container) {
    // Measuring may hold the layer (btrfs mounts it to walk it): under the container's op
    // lock, so a `docker rm` right after the exit waits for it instead of finding the layer
    // busy; when an operation already runs (that rm, a restart), measuring is skipped.
    let Ok(_op) = c.op_lock.try_lock() else {
        return;
    };
    let id = c.record().id.clone();
    let own_dir = ContainerRecord::dir(&root, &id);
    match super::sizes::measure(&id, &layers, own_dir).await {
        Ok(size) => {
            let mut r = c.record();
            if r.state.status != Status::Running {
                r.sizes = Some(record::RecordedSizes {
                    size_rw: size.size_rw,
                    on_disk: size.on_disk,
                });
                if let Err(e) = r.save(&root) {
                    tracing::debug!(container = %id, "sizes not saved: {e}");
                }
            }
        }
        Err(e) => tracing::debug!(container = %id, "sizes not measured: {e}"),
    }
}

/// A container's own directory (config, logs, hosts files), which its size counts besides its
/// read-write layer.
pub fn own_dir(containers_root: &std::path::Path, id: &str) -> PathBuf {
    ContainerRecord::dir(containers_root, id)
}

/// All containers of the daemon.
pub struct Containers {
    pub root: PathBuf,
    pub layers: LayerStore,
    pub images: ImageStore,
    table: Mutex<BTreeMap<String, Arc<Container>>>,
    /// Names of containers being created: taken together with the table's lock, so two
    /// creates cannot both pass the name check.
    pending_names: Mutex<std::collections::BTreeSet<String>>,
}

/// A name held for a container being created; given back when dropped.
struct NameReservation<'a> {
    pending: &'a Mutex<std::collections::BTreeSet<String>>,
    name: String,
}

impl Drop for NameReservation<'_> {
    fn drop(&mut self) {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// Moves a container directory that cannot be loaded to `<root>/.quarantine/`, with a log line
/// saying why; a failed move leaves it in place (it is skipped again at the next start).
fn quarantine(root: &std::path::Path, dir: &std::path::Path, why: &str) {
    let aside = root.join(".quarantine");
    let target = dir.file_name().map(|n| aside.join(n));
    let moved = target.as_ref().is_some_and(|t| {
        std::fs::create_dir_all(&aside).is_ok() && std::fs::rename(dir, t).is_ok()
    });
    tracing::warn!(
        dir = %dir.display(),
        moved_to = ?target.filter(|_| moved),
        "container not loaded: {why}"
    );
}

impl Containers {
    /// Loads every container record. Containers that were running when the daemon died are
    /// recorded as exited (their processes are killed: we do not live-restore).
    pub async fn open(root: PathBuf, layers: LayerStore, images: ImageStore) -> Result<Self> {
        std::fs::create_dir_all(&root).ctx("create", &root)?;
        let mut table = BTreeMap::new();
        let entries = std::fs::read_dir(&root).ctx("read directory", &root)?;
        for entry in entries {
            let entry = entry.ctx("read directory", &root)?;
            let dir = entry.path();
            if entry.file_name().as_encoded_bytes().starts_with(b".") {
                continue; // the quarantine, or a temporary
            }
            let mut rec = match ContainerRecord::load(&dir) {
                Ok(r) => r,
                Err(e) => {
                    // A create that never finished, or a record damaged on disk: kept aside
                    // for the operator, never deleted, and not served.
                    quarantine(&root, &dir, &e.to_string());
                    continue;
                }
            };
            if layers.get_rw(&rec.id).is_none() {
                quarantine(&root, &dir, "the container has no read-write layer");
                continue;
            }
            if rec.state.status == Status::Running || rec.state.status == Status::Removing {
                lifecycle::kill_orphan(&rec);
                // Docker records 255 for a container it could not restore.
                rec.state.status = Status::Exited;
                rec.state.exit_code = 255;
                rec.state.pid = 0;
                rec.state.process = None;
                rec.state.error = "the daemon stopped while the container was running".into();
                rec.state.finished_at = Some(lifecycle::now());
                rec.save(&root)?;
            }
            table.insert(rec.id.clone(), Container::new(rec));
        }
        Ok(Self {
            root,
            layers,
            images,
            table: Mutex::new(table),
            pending_names: Mutex::new(Default::default()),
        })
    }

    /// Whether a read-write layer made for `id` has an owner: a loaded container, or one
    /// kept in quarantine for the operator (its layer is kept with it).
    pub fn owns_layer_of(&self, id: &str) -> bool {
        self.table().contains_key(id) || self.root.join(".quarantine").join(id).exists()
    }

    fn table(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Container>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.table().values().cloned().collect()
    }

    /// Finds a container by full id, name (with or without `/`) or unique id prefix.
    pub fn get(&self, key: &str) -> Result<Arc<Container>> {
        let key = key.strip_prefix('/').unwrap_or(key);
        let table = self.table();
        if let Some(c) = table.get(key) {
            return Ok(c.clone());
        }
        if let Some(c) = table.values().find(|c| c.record().name == key) {
            return Ok(c.clone());
        }
        let matches: Vec<_> = table
            .iter()
            .filter(|(id, _)| !key.is_empty() && id.starts_with(key))
            .collect();
        match matches.as_slice() {
            [(_, c)] => Ok((*c).clone()),
            [] => Err(Error::not_found(format!("No such container: {key}"))),
            _ => Err(Error::invalid(format!(
                "multiple containers match the prefix {key}; use more of the id"
            ))),
        }
    }

    /// Holds `wanted` (or a generated name: Docker's adjective_name, with a number once the
    /// plain combinations run short) for a container being created. Taken while the table is
    /// locked, so a name is checked and held in one step.
    fn reserve_name(&self, wanted: Option<String>) -> Result<NameReservation<'_>> {
        let table = self.table();
        let mut pending = self.pending_names.lock().unwrap_or_else(|p| p.into_inner());
        let owner = |name: &str| {
            table
                .values()
                .find(|c| c.record().name == name)
                .map(|c| c.record().id.clone())
        };
        let name = match wanted {
            Some(name) => {
                let holder = owner(&name).or_else(|| {
                    pending
                        .contains(&name)
                        .then(|| "(being created)".to_string())
                });
                if let Some(other) = holder {
                    return Err(Error::busy(format!(
                        "Conflict. The container name \"/{name}\" is already in use by container \"{other}\". You have to remove (or rename) that container to be able to reuse that name."
                    )));
                }
                name
            }
            None => {
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let base = record::random_name()?;
                    let name = if attempt <= 10 {
                        base
                    } else {
                        let mut b = [0u8; 2];
                        strata_core::ids::fill_random(&mut b)?;
                        format!("{base}{}", u16::from_le_bytes(b) % 10_000)
                    };
                    if owner(&name).is_none() && !pending.contains(&name) {
                        break name;
                    }
                }
            }
        };
        pending.insert(name.clone());
        Ok(NameReservation {
            pending: &self.pending_names,
            name,
        })
    }

    /// Containers using an image (by id), for rmi's conflict check and `system df`.
    pub fn using_image(&self, image_id: &str) -> Vec<String> {
        self.table()
            .values()
            .filter(|c| c.record().image_id == image_id)
            .map(|c| c.record().id.clone())
            .collect()
    }

    /// Creates a container: its read-write layer on the image's top layer, its directory and
    /// record. On any failure nothing is left.
    pub async fn create(
        &self,
        name: Option<&str>,
        req: &create::ContainerCreateRequest,
        volumes: &super::volumes::VolumeService,
    ) -> Result<(String, Vec<String>)> {
        let image_ref = req.config.image.clone();
        if image_ref.is_empty() {
            return Err(Error::invalid("Config.Image is required"));
        }
        let image_id = self
            .images
            .resolve(&image_ref)
            .map_err(|_| Error::not_found(format!("No such image: {image_ref}")))?;
        let image = self.images.get(&image_id)?;
        let defaults = create::image_defaults(image.config.config.as_ref())?;
        let prepared = create::prepare(req, &defaults)?;
        let wanted = name
            .filter(|n| !n.is_empty())
            .map(record::validate_name)
            .transpose()?;
        let reservation = self.reserve_name(wanted)?;
        let name = reservation.name.clone();
        let id = LayerId::random()?.to_string();
        let top = image.top_layer();
        let opts = strata_core::CreateOpts::read_write();
        let rw = self.layers.create_rw(&id, top.as_ref(), &opts).await?;
        let record = ContainerRecord {
            id: id.clone(),
            name,
            created: lifecycle::now(),
            path: prepared.path,
            args: prepared.args,
            config: prepared.config,
            host_config: prepared.host_config,
            image_id: image_id.to_string(),
            image_ref,
            rw_layer: rw.mount_id.to_string(),
            mount_requests: prepared.mounts,
            mounts: Vec::new(),
            state: record::State::default(),
            restart_count: 0,
            auto_remove: prepared.auto_remove,
            manually_stopped: false,
            restarting: false,
            restart_delay_ms: 0,
            sizes: None,
        };
        if let Err(e) = record.save(&self.root) {
            let _ = self.layers.remove_rw(&id).await;
            let _ = std::fs::remove_dir_all(ContainerRecord::dir(&self.root, &id));
            return Err(e);
        }
        for m in &record.mount_requests {
            if let mounts::MountRequest::Volume { name: Some(v), .. } = m {
                if let Ok(v) = strata_core::VolumeName::new(v.as_str()) {
                    volumes.add_user(&v, &id);
                }
            }
        }
        self.table().insert(id.clone(), Container::new(record));
        drop(reservation);
        Ok((id, Vec::new()))
    }

    /// Removes a container: refused while running unless `force` (then killed first).
    pub async fn remove(
        &self,
        key: &str,
        force: bool,
        remove_volumes: bool,
        volumes: &super::volumes::VolumeService,
    ) -> Result<()> {
        let c = self.get(key)?;
        let _op = c.op_lock.lock().await;
        let id = c.record().id.clone();
        if c.is_running() {
            if !force {
                // Docker 20.10's words, which clients match on (Docker's Python SDK tests do).
                return Err(Error::busy(format!(
                    "You cannot remove a running container {id}. Stop the container before \
                     attempting removal or force remove"
                )));
            }
            pause::thaw_for_signal(&c).await;
            if let Some(r) = c.running() {
                let _ = r.kill(nix::sys::signal::Signal::SIGKILL);
                r.wait().await;
            }
            lifecycle::wait_until_stopped(&c).await;
        }
        // The monitor of the last run may still be unmounting; the record says what is left.
        let rec = c.snapshot();
        // The monitor of the last run unmounted the layer before recording the exit.
        self.layers.remove_rw(&id).await?;
        for mp in &rec.mounts {
            if mp.kind != "volume" {
                continue;
            }
            let Ok(vname) = strata_core::VolumeName::new(mp.name.as_str()) else {
                continue;
            };
            volumes.remove_user(&vname, &id);
            if remove_volumes && volumes.is_anonymous(&vname) {
                if let Err(e) = volumes.remove(&vname, false).await {
                    tracing::warn!(volume = %vname, "could not remove anonymous volume: {e}");
                }
            }
        }
        for m in &rec.mount_requests {
            if let mounts::MountRequest::Volume { name: Some(v), .. } = m {
                if let Ok(v) = strata_core::VolumeName::new(v.as_str()) {
                    volumes.remove_user(&v, &id);
                }
            }
        }
        strata_core::fsutil::remove_tree(&ContainerRecord::dir(&self.root, &id))?;
        self.table().remove(&id);
        c.removed.send_replace(true);
        Ok(())
    }
}
