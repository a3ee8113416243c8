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
//! - Children are found by btrfs itself: a child's `parent_uuid` is its parent's uuid. No
//!   metadata file can disagree with the filesystem.
//! - `size=` is a qgroup limit on the layer's exclusive bytes (what the layer writes itself,
//!   whatever its parent holds). Quotas are enabled on the filesystem on first use, as Docker
//!   does; note that quotas make snapshot deletion markedly slower on btrfs.
//! - `usage` (see usage.rs): with quotas on, for a layer without children, the qgroup's
//!   exclusive bytes and the inodes changed since the snapshot, read from btrfs's trees (no
//!   walk); otherwise a walk against the parent. A layer with a child walks because the
//!   extents it shares with the child are no longer exclusive to it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use strata_core::archive::WhiteoutMode;
use strata_core::fsutil::{atomic_write, filesystem_name, fsync_dir, remove_tree};
use strata_core::naive::{self, MountedPair};
use strata_core::{
    Capabilities, Change, CreateOpts, Error, IoContext, LayerDriver, LayerId, LayerKind, Result,
    StorageOpts, TarStream, Usage,
};

use crate::layout::Layout;
use crate::{qgroup, subvol, usage};

pub const NAME: &str = "btrfs";

/// Storage options the driver accepts daemon-wide: a default `size` for read-write layers and
/// Docker's `btrfs.min_space` (the smallest `size=` accepted).
const DAEMON_OPTIONS: &[&str] = &["size", "btrfs.min_space"];
const CREATE_OPTIONS: &[&str] = &["size"];

pub struct BtrfsDriver {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) layout: Layout,
    default_size: Option<u64>,
    min_space: Option<u64>,
    /// Mount reference counts. Also held while a layer is staged into place or moved to the
    /// trash, so create/remove/mount never see each other half done.
    state: Mutex<HashMap<LayerId, usize>>,
    /// Serialises updates of the `qgroups-pending` list.
    pending: Mutex<()>,
}

/// A layer snapshotted (or created) under `staging/`, not yet renamed into place.
pub(crate) struct Staged {
    pub(crate) path: PathBuf,
}

impl BtrfsDriver {
    /// Opens the driver on `root` (`<data-root>/btrfs`): refuses unless it is on btrfs, creates
    /// the layout and deletes whatever a crash left in `staging/` and `trash/`.
    pub async fn open(root: PathBuf, options: StorageOpts) -> Result<Self> {
        let inner = tokio::task::spawn_blocking(move || Inner::open(&root, &options)).await??;
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }
}

impl Inner {
    fn open(root: &Path, options: &StorageOpts) -> Result<Self> {
        options.check_known(NAME, DAEMON_OPTIONS)?;
        let default_size = options.size()?;
        let min_space = options
            .get("btrfs.min_space")
            .map(strata_core::options::parse_bytes)
            .transpose()?;
        check_backing_fs(root)?;
        let layout = Layout::new(root);
        for dir in [layout.subvolumes(), layout.staging(), layout.trash()] {
            std::fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        }
        let inner = Self {
            layout,
            default_size,
            min_space,
            state: Mutex::new(HashMap::new()),
            pending: Mutex::new(()),
        };
        inner.recover()?;
        Ok(inner)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LayerId, usize>> {
        // A panic while holding the lock leaves only counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
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
    /// its quota limit, invisible as a layer until [`Inner::commit_staged`].
    pub(crate) fn stage(&self, parent: Option<&LayerId>, size: Option<u64>) -> Result<Staged> {
        let path = self.layout.new_staging_path();
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

    fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.storage_opts.check_known(NAME, CREATE_OPTIONS)?;
        let read_only = opts.kind == LayerKind::ReadOnly;
        let size = match (opts.storage_opts.size()?, opts.kind) {
            (Some(_), LayerKind::ReadOnly) => {
                return Err(Error::invalid(
                    "the size= storage option applies to read-write layers only",
                ))
            }
            (Some(s), LayerKind::ReadWrite) => Some(s),
            (None, LayerKind::ReadWrite) => self.default_size,
            (None, LayerKind::ReadOnly) => None,
        };
        if let (Some(s), Some(min)) = (size, self.min_space) {
            if s < min {
                return Err(Error::invalid(format!(
                    "size={s} is below btrfs.min_space={min}; ask for at least {min} bytes"
                )));
            }
        }
        let _guard = self.lock();
        let dest = self.layout.layer(id);
        if dest.exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        // One ioctl makes a snapshot whole or not at all, and it commits the transaction: a
        // child without size= is snapshotted in place, durable when the call returns (staging
        // it would cost a second commit for the rename, 25% of a create). A layer that needs
        // more than one step (a quota limit) is staged and renamed into place. btrfs refuses to
        // rename read-only subvolumes (EROFS), which is why size= is for writable layers only.
        match (parent, size) {
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
        }
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
        let mounts = self.lock();
        let path = self.layout.layer(id);
        if !path.exists() {
            return Err(Error::not_found(format!("layer {id}")));
        }
        if let Some(n) = mounts.get(id).filter(|n| **n > 0) {
            return Err(Error::busy(format!(
                "layer {id} is mounted ({n} times); unmount it before removing it"
            )));
        }
        let info = subvol::subvolume_info(&path)?;
        if let Some(child) = self.child_of(&info.uuid)? {
            return Err(Error::busy(format!(
                "cannot remove layer {id}: layer {child} is created on it; remove that first"
            )));
        }
        if info.read_only {
            subvol::delete_subvolume_recursive(&path)?;
            return Ok((None, info.id));
        }
        let trash = self.layout.new_trash_path();
        std::fs::rename(&path, &trash).ctx("rename to trash", &path)?;
        fsync_dir(&self.layout.subvolumes())?;
        Ok((Some(trash), info.id))
    }

    fn remove(&self, id: &LayerId) -> Result<()> {
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

    /// The name of a layer that is a snapshot of the subvolume with `uuid`, if any.
    fn child_of(&self, uuid: &[u8; 16]) -> Result<Option<String>> {
        let dir = self.layout.subvolumes();
        for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let entry = entry.ctx("read directory", &dir)?;
            let path = entry.path();
            match subvol::subvolume_info(&path) {
                Ok(info) if info.parent_uuid == *uuid => {
                    return Ok(Some(entry.file_name().to_string_lossy().into_owned()))
                }
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The layer this one was snapshotted from, if it still is a layer.
    fn parent_of(&self, layer: &Path) -> Result<Option<PathBuf>> {
        let info = subvol::subvolume_info(layer)?;
        if info.parent_uuid == [0u8; 16] {
            return Ok(None);
        }
        let dir = self.layout.subvolumes();
        for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let path = entry.ctx("read directory", &dir)?.path();
            match subvol::subvolume_info(&path) {
                Ok(candidate) if candidate.uuid == info.parent_uuid => return Ok(Some(path)),
                Ok(_) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn existing(&self, id: &LayerId) -> Result<PathBuf> {
        let path = self.layout.layer(id);
        if path.exists() {
            Ok(path)
        } else {
            Err(Error::not_found(format!("layer {id}")))
        }
    }

    fn mount(&self, id: &LayerId) -> Result<PathBuf> {
        let mut mounts = self.lock();
        let path = self.existing(id)?;
        *mounts.entry(id.clone()).or_insert(0) += 1;
        Ok(path)
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        let mut mounts = self.lock();
        match mounts.get_mut(id) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                mounts.remove(id);
            }
            None => {
                self.existing(id)?;
                tracing::debug!(%id, "btrfs: unmount of a layer that is not mounted");
            }
        }
        Ok(())
    }

    fn usage(&self, id: &LayerId) -> Result<Usage> {
        let layer = self.existing(id)?;
        let uuid = subvol::subvolume_info(&layer)?.uuid;
        if self.child_of(&uuid)?.is_none() {
            if let Some(u) = usage::from_qgroup(&layer)? {
                return Ok(u);
            }
        }
        let parent = self.parent_of(&layer)?;
        usage::by_walk(&layer, parent.as_deref())
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

#[async_trait]
impl LayerDriver for BtrfsDriver {
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

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        let (id, parent, opts) = (id.clone(), parent.cloned(), opts.clone());
        self.blocking(move |d| d.create(&id, parent.as_ref(), &opts))
            .await
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.blocking(move |d| d.remove(&id)).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        let path = self.inner.layout.layer(id);
        self.blocking(move |_| Ok(path.exists())).await
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let id = id.clone();
        self.blocking(move |d| d.mount(&id)).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.blocking(move |d| d.unmount(&id)).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        naive::changes(self.hold(id, parent).await?).await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        Ok(naive::diff(self.hold(id, parent).await?))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        // The layer holds its parent's full tree already: whiteouts delete for real.
        let pair = self.hold(id, None).await?;
        let layer = pair.layer.clone();
        let was_read_only = {
            let layer = layer.clone();
            self.blocking(move |_| {
                let ro = subvol::is_read_only(&layer)?;
                if ro {
                    subvol::set_read_only(&layer, false)?;
                }
                Ok(ro)
            })
            .await?
        };
        let applied = naive::apply(layer.clone(), tar, WhiteoutMode::Delete).await;
        if was_read_only {
            self.blocking(move |_| subvol::set_read_only(&layer, true))
                .await?;
        }
        drop(pair);
        Ok(applied?.content_bytes)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        naive::diff_size(self.hold(id, parent).await?).await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let id = id.clone();
        self.blocking(move |d| d.usage(&id)).await
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        let root = self.inner.layout.root().to_path_buf();
        let quota = self.blocking(move |_| qgroup::quota_status(&root)).await?;
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

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = id.clone();
        self.blocking(move |d| d.existing(&id).map(|_| BTreeMap::new()))
            .await
    }

    async fn cleanup(&self) -> Result<()> {
        // Nothing is mounted at the filesystem level: releasing means forgetting the counts.
        self.inner.lock().clear();
        Ok(())
    }
}

impl BtrfsDriver {
    /// Holds `id` (and `parent`) mounted for the length of a diff or an apply, so neither can
    /// be removed meanwhile; the pair releases them when the work is over.
    async fn hold(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<MountedPair> {
        let mut ids = vec![id.clone()];
        ids.extend(parent.cloned());
        let held = ids.clone();
        let paths = self
            .blocking(move |d| {
                let mut mounts = d.lock();
                let paths = held
                    .iter()
                    .map(|i| d.existing(i))
                    .collect::<Result<Vec<_>>>()?;
                for i in &held {
                    *mounts.entry(i.clone()).or_insert(0) += 1;
                }
                Ok(paths)
            })
            .await?;
        let inner = Arc::clone(&self.inner);
        let mut paths = paths.into_iter();
        let layer = paths.next().unwrap_or_default();
        Ok(MountedPair::new(layer, paths.next()).on_release(move || {
            let mut mounts = inner.lock();
            for i in &ids {
                if let Some(n) = mounts.get_mut(i) {
                    *n -= 1;
                    if *n == 0 {
                        mounts.remove(i);
                    }
                }
            }
        }))
    }
}
