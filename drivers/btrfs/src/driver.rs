//! The btrfs layer driver: one subvolume per layer at `subvolumes/<id>`, a child is a snapshot
//! of its parent (O(1), every extent shared), a base layer is an empty subvolume.
//!
//! Decisions:
//! - Read-only layers are read-only subvolumes (snapshot with the read-only flag). So a write
//!   through their mount fails with EROFS without any bind mount. `apply_diff` flips the flag
//!   off for the duration of the apply and back on after, also when the apply fails.
//! - Crash safety: a create that takes several steps (snapshot, then quota limit) happens
//!   under `staging/` and ends with a rename into place; a plain snapshot is one ioctl, whole or
//!   absent after a crash, and is made in place. A writable layer is removed by a rename into
//!   `trash/`, then deleted (nested subvolumes make that several steps); a read-only one (no
//!   rename possible: EROFS, no nested subvolumes) by one ioctl. Start-up deletes whatever
//!   `staging/` and `trash/` hold.
//! - `mount` returns the subvolume directory itself (no mount(2)), reference counted in memory,
//!   as Docker's btrfs driver; `metadata` is empty (Docker shows GraphDriver.Data null).
//! - Parents are recorded by btrfs itself: a child's `parent_uuid` is its parent's uuid, read
//!   once at open into the driver kit's index. No metadata file can disagree with the
//!   filesystem.
//! - `size=` is a qgroup limit on the layer's exclusive bytes (what the layer writes itself,
//!   whatever its parent holds). Quotas are enabled on the filesystem on first use, as Docker
//!   does; note that quotas make snapshot deletion markedly slower on btrfs.
//! - `usage` (see usage.rs): with quotas on, for a layer without children, the qgroup's
//!   exclusive bytes and the inodes changed since the snapshot, read from btrfs's trees (no
//!   walk); otherwise a walk against the parent. A layer with a child walks because the
//!   extents it shares with the child are no longer exclusive to it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_core::archive::{self, WhiteoutMode};
use strata_core::driverkit::{
    layer_size, run_blocking, Blocking, BlockingLayerDriver, Held, InPlace, Layers,
};
use strata_core::fsutil::{atomic_write, filesystem_name, fsync_dir, remove_tree};
use strata_core::naive::{self, MountedPair};
use strata_core::{
    Capabilities, Change, CreateOpts, Error, IoContext, LayerId, LayerKind, Result, StorageOpts,
    TarStream, Usage,
};

use crate::layout::Layout;
use crate::{qgroup, subvol, usage};

pub const NAME: &str = "btrfs";

/// Storage options the driver accepts daemon-wide: a default `size` for read-write layers and
/// Docker's `btrfs.min_space` (the smallest `size=` accepted).
const DAEMON_OPTIONS: &[&str] = &["size", "btrfs.min_space"];
const CREATE_OPTIONS: &[&str] = &["size"];

/// The btrfs driver as the registry and the daemon use it: blocking code on the kit's adapter.
pub type BtrfsDriver = Blocking<Btrfs>;

/// Opens the driver on `root` (`<data-root>/btrfs`): refuses unless it is on btrfs, creates
/// the layout and deletes whatever a crash left in `staging/` and `trash/`.
pub async fn open(root: PathBuf, options: StorageOpts) -> Result<BtrfsDriver> {
    let driver = run_blocking(move || Btrfs::open(&root, &options)).await?;
    Ok(Blocking::new(Arc::new(driver)))
}

pub struct Btrfs {
    pub(crate) layout: Layout,
    default_size: Option<u64>,
    min_space: Option<u64>,
    /// Parents and children (from the subvolumes' parent uuids) and mount references.
    layers: Layers<()>,
    in_place: Arc<InPlace>,
    /// Serialises updates of the `qgroups-pending` list.
    pending: Mutex<()>,
}

/// A layer snapshotted (or created) under `staging/`, not yet renamed into place.
pub(crate) struct Staged {
    pub(crate) path: PathBuf,
}

impl Btrfs {
    fn open(root: &Path, options: &StorageOpts) -> Result<Self> {
        options.check_known(NAME, DAEMON_OPTIONS)?;
        let default_size = options.size()?;
        let min_space = options.bytes("btrfs.min_space")?;
        check_backing_fs(root)?;
        let layout = Layout::new(root);
        for dir in [layout.subvolumes(), layout.staging(), layout.trash()] {
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        }
        let mut driver = Self {
            in_place: Arc::new(InPlace(layout.subvolumes())),
            layout,
            default_size,
            min_space,
            layers: Layers::load("layer", []),
            pending: Mutex::new(()),
        };
        driver.recover()?;
        driver.layers = Layers::load("layer", driver.find_layers()?);
        Ok(driver)
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Every layer with its parent: the layer whose uuid is its `parent_uuid` (btrfs records
    /// the snapshot source itself; no file of ours can disagree with it).
    fn find_layers(&self) -> Result<Vec<(LayerId, Option<LayerId>, ())>> {
        let dir = self.layout.subvolumes();
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let entry = entry.ctx("read directory", &dir)?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| LayerId::new(n).ok())
            else {
                continue;
            };
            let info = subvol::subvolume_info(&entry.path())?;
            found.push((id, info.uuid, info.parent_uuid));
        }
        let by_uuid: HashMap<[u8; 16], LayerId> = found
            .iter()
            .map(|(id, uuid, _)| (*uuid, id.clone()))
            .collect();
        Ok(found
            .into_iter()
            .map(|(id, _, parent_uuid)| (id, by_uuid.get(&parent_uuid).cloned(), ()))
            .collect())
    }

    /// Deletes every half-created (staging) and half-removed (trash) subvolume.
    pub(crate) fn recover(&self) -> Result<usize> {
        let mut purged = 0;
        for dir in [self.layout.staging(), self.layout.trash()] {
            let entries = std::fs::read_dir(&dir).ctx("read directory", &dir)?;
            for entry in entries {
                let path = entry.ctx("read directory", &dir)?.path();
                tracing::info!(path = %path.display(), "btrfs: deleting what an interrupted create or remove left");
                purge(&path)?;
                purged += 1;
            }
        }
        if qgroup::quota_status(self.layout.root())?.enabled {
            self.destroy_qgroups(&[])?;
        }
        Ok(purged)
    }

    /// First half of `create` for a writable layer: the new subvolume under `staging/`, with
    /// its quota limit, invisible as a layer until [`Btrfs::commit_staged`].
    pub(crate) fn stage(&self, parent: Option<&LayerId>, size: Option<u64>) -> Result<Staged> {
        let path = self.layout.new_staging_path()?;
        match parent {
            Some(p) => subvol::create_snapshot(&self.parent_path(p)?, &path, false)?,
            None => subvol::create_subvolume(&path)?,
        }
        let staged = Staged { path };
        if let Some(bytes) = size {
            if let Err(e) = self.limit(&staged.path, bytes) {
                let _ = purge(&staged.path);
                return Err(e);
            }
        }
        Ok(staged)
    }

    fn parent_path(&self, parent: &LayerId) -> Result<PathBuf> {
        let path = self.layout.layer(parent);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::not_found(format!("parent layer {parent}")))
        }
    }

    /// Second half of `create`: the atomic rename into place.
    pub(crate) fn commit_staged(&self, staged: Staged, id: &LayerId) -> Result<()> {
        let dest = self.layout.layer(id);
        let renamed = nix::fcntl::renameat2(
            None,
            &staged.path,
            None,
            &dest,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        );
        if let Err(e) = renamed {
            let _ = purge(&staged.path);
            return Err(match e {
                nix::errno::Errno::EEXIST => Error::AlreadyExists(format!("layer {id}")),
                e => Error::io("rename into place", &dest, e.into()),
            });
        }
        fsync_dir(&self.layout.subvolumes())
    }

    fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        opts.storage_opts.check_known(NAME, CREATE_OPTIONS)?;
        let read_only = opts.kind == LayerKind::ReadOnly;
        let size = layer_size(opts, self.default_size)?;
        if let (Some(s), Some(min)) = (size, self.min_space) {
            if s < min {
                return Err(Error::invalid(format!(
                    "size={s} is below btrfs.min_space={min}; ask for at least {min} bytes"
                )));
            }
        }
        let creating = self.layers.begin_create(id, parent)?;
        let dest = self.layout.layer(id);
        if dest.exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        // One ioctl makes a snapshot whole or not at all, and it commits the transaction: a
        // child without size= is snapshotted in place, durable when the call returns (staging
        // it would cost a second commit for the rename, 25% of a create). A layer that needs
        // more than one step (a quota limit) is staged and renamed into place. btrfs refuses to
        // rename read-only subvolumes (EROFS), which is why size= is for writable layers only.
        let made = match (parent, size) {
            (Some(p), None) => subvol::create_snapshot(&self.parent_path(p)?, &dest, read_only),
            (None, None) => {
                // A new subvolume appears whole too; the flag is set in the same transaction
                // unless a commit falls in between, leaving at worst an empty writable layer
                // the layer store never registered. The fsync commits both.
                subvol::create_subvolume(&dest)?;
                if read_only {
                    subvol::set_read_only(&dest, true)?;
                }
                fsync_dir(&self.layout.subvolumes())
            }
            (_, Some(_)) => {
                let staged = self.stage(parent, size)?;
                self.commit_staged(staged, id)
            }
        };
        made?;
        creating.commit(());
        Ok(())
    }

    /// Sets a qgroup limit on the subvolume at `path`, enabling quotas first if needed.
    fn limit(&self, path: &Path, bytes: u64) -> Result<()> {
        let root = self.layout.root();
        if !qgroup::quota_status(root)?.enabled {
            tracing::warn!(
                root = %root.display(),
                "btrfs: enabling quotas on the filesystem for size=; this makes subvolume deletion slower"
            );
            qgroup::enable_quota(root)?;
        }
        let id = subvol::subvolume_id(path)?;
        qgroup::set_exclusive_limit(path, id, bytes)
    }

    /// First half of `remove`: the checks, then the layer leaves `subvolumes/` atomically. A
    /// writable layer is renamed into `trash/` (the subvolumes a container nested in it make
    /// its deletion several steps); a read-only one cannot be renamed (EROFS) nor hold nested
    /// subvolumes, and its deletion is one ioctl, done here. Returns the trash path, if any,
    /// and the subvolume id (for its qgroup).
    pub(crate) fn move_to_trash(&self, id: &LayerId) -> Result<(Option<PathBuf>, u64)> {
        let removing = self.layers.begin_remove(id)?;
        let path = self.layout.layer(id);
        let info = subvol::subvolume_info(&path)?;
        if info.read_only {
            subvol::delete_subvolume_recursive(&path)?;
            removing.done();
            return Ok((None, info.id));
        }
        let trash = self.layout.new_trash_path()?;
        std::fs::rename(&path, &trash).ctx("rename to trash", &path)?;
        removing.done();
        fsync_dir(&self.layout.subvolumes())?;
        Ok((Some(trash), info.id))
    }

    fn remove_layer(&self, id: &LayerId) -> Result<()> {
        let (trash, subvol_id) = self.move_to_trash(id)?;
        if let Some(trash) = trash {
            purge(&trash)?;
        }
        if qgroup::quota_status(self.layout.root())?.enabled {
            self.destroy_qgroups(&[subvol_id])?;
        }
        Ok(())
    }

    /// Destroys the qgroups of deleted subvolumes `ids` and of those still pending from
    /// earlier removes. The kernel refuses while its cleaner has not dropped a subvolume yet;
    /// those ids are kept in `qgroups-pending` and retried at the next remove and start-up.
    pub(crate) fn destroy_qgroups(&self, ids: &[u64]) -> Result<()> {
        let _guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let file = self.layout.pending_qgroups();
        let mut todo: Vec<u64> = match std::fs::read_to_string(&file) {
            Ok(text) => text.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", &file, e)),
        };
        let before = todo.clone();
        todo.extend_from_slice(ids);
        todo.sort_unstable();
        todo.dedup();
        let mut still = Vec::new();
        for id in todo {
            if qgroup::destroy_qgroup(self.layout.root(), id)? == qgroup::Destroyed::Busy {
                still.push(id);
            }
        }
        if still != before {
            let text: String = still.iter().map(|id| format!("{id}\n")).collect();
            atomic_write(&file, text.as_bytes())?;
        }
        Ok(())
    }

    fn existing(&self, id: &LayerId) -> Result<PathBuf> {
        if self.layers.exists(id) {
            Ok(self.layout.layer(id))
        } else {
            Err(Error::not_found(format!("layer {id}")))
        }
    }

    fn layer_usage(&self, id: &LayerId) -> Result<Usage> {
        let layer = self.existing(id)?;
        if self.layers.children(id).is_empty() {
            if let Some(u) = usage::from_qgroup(&layer)? {
                return Ok(u);
            }
        }
        let parent = self.layers.parent(id)?.map(|p| self.layout.layer(&p));
        usage::by_walk(&layer, parent.as_deref())
    }

    /// Holds `id` (and `parent`) mounted for the length of a diff or an apply, so neither can
    /// be removed meanwhile.
    fn hold(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<(Held, Option<Held>)> {
        let layer = self.layers.hold_blocking(id, &self.in_place)?;
        match parent.map(|p| self.layers.hold_blocking(p, &self.in_place)) {
            Some(Err(e)) => {
                layer.release_blocking()?;
                Err(e)
            }
            Some(Ok(p)) => Ok((layer, Some(p))),
            None => Ok((layer, None)),
        }
    }

    /// [`Self::hold`] as the pair a naive diff takes, released where the work ends.
    fn held_pair(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<MountedPair> {
        let (layer, parent) = self.hold(id, parent)?;
        let pair = MountedPair::new(layer.path.clone(), parent.as_ref().map(|p| p.path.clone()));
        Ok(pair.on_release(move || release_all(layer, parent)))
    }

    /// Applies with the read-only flag off for the duration, back on after (also on failure).
    fn apply_tar(&self, id: &LayerId, tar: &mut dyn Read) -> Result<u64> {
        // The layer holds its parent's full tree already: whiteouts delete for real.
        let (layer, _) = self.hold(id, None)?;
        let path = layer.path.clone();
        let applied = (|| {
            let was_read_only = subvol::is_read_only(&path)?;
            if was_read_only {
                subvol::set_read_only(&path, false)?;
            }
            let applied =
                archive::apply_layer_with(&path, tar, &naive::driver_apply(WhiteoutMode::Delete));
            if was_read_only {
                subvol::set_read_only(&path, true)?;
            }
            applied
        })();
        layer.release_blocking()?;
        Ok(applied?.content_bytes)
    }
}

fn release_all(layer: Held, parent: Option<Held>) {
    for held in std::iter::once(layer).chain(parent) {
        if let Err(e) = held.release_blocking() {
            tracing::warn!("btrfs: releasing a diff's layer: {e}");
        }
    }
}

/// Deletes a subvolume (with the subvolumes nested in it) or, if `path` is a plain directory
/// or file, removes it.
fn purge(path: &Path) -> Result<()> {
    if subvol::is_subvolume(path)? {
        subvol::delete_subvolume_recursive(path)
    } else {
        remove_tree(path)
    }
}

/// Refuses a root that is not on btrfs. The root may not exist yet: its nearest existing
/// ancestor is what it will be on.
fn check_backing_fs(root: &Path) -> Result<()> {
    let probe = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let fs = filesystem_name(probe)?;
    if fs != "btrfs" {
        return Err(Error::unsupported(format!(
            "the btrfs storage driver needs its root {} on a btrfs filesystem, but it is on {fs}; \
             put the data root on btrfs (--data-root) or choose another --storage-driver",
            root.display()
        )));
    }
    Ok(())
}

impl BlockingLayerDriver for Btrfs {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            quota: true,
            reproducible_diff: true,
            requires_root: true,
            backing_filesystems: vec!["btrfs".to_string()],
            layers_share_parent: true,
        }
    }

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts)
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
        self.remove_layer(id)
    }

    fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.layers.exists(id))
    }

    fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        self.layers.acquire_blocking(id, self.in_place.as_ref())
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        self.layers.release_blocking(id, self.in_place.as_ref())
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let pair = self.held_pair(id, parent)?;
        archive::naive_changes(&pair.layer, pair.parent.as_deref())
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        Ok(naive::diff(self.held_pair(id, parent)?))
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: &mut dyn Read,
    ) -> Result<u64> {
        self.apply_tar(id, tar)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let pair = self.held_pair(id, parent)?;
        archive::naive_changes(&pair.layer, pair.parent.as_deref())
            .and_then(|changes| archive::changes_size(&pair.layer, &changes))
    }

    fn usage(&self, id: &LayerId) -> Result<Usage> {
        self.layer_usage(id)
    }

    fn status(&self) -> Result<Vec<(String, String)>> {
        let quota = qgroup::quota_status(self.layout.root())?;
        Ok(vec![
            (
                "Build Version".to_string(),
                format!("libbtrfsutil {}", subvol::HEADER_VERSION),
            ),
            (
                "Library Version".to_string(),
                subvol::loaded_library_version().unwrap_or_else(|| "unknown".to_string()),
            ),
            (
                "Quotas".to_string(),
                match (quota.enabled, quota.consistent) {
                    (false, _) => "disabled",
                    (true, true) => "enabled",
                    (true, false) => "enabled (rescan pending; sizes are walked meanwhile)",
                }
                .to_string(),
            ),
        ])
    }

    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.existing(id).map(|_| BTreeMap::new())
    }

    fn cleanup(&self) -> Result<()> {
        // Nothing is mounted at the filesystem level: releasing means forgetting the counts.
        futures::executor::block_on(self.layers.release_all(self.in_place.as_ref()))
    }
}
