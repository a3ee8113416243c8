//! The vfs layer driver: each layer is a full, exact copy of its parent in `<root>/dir/<id>`
//! (Docker's vfs layout). It needs nothing from the kernel or the filesystem, which makes it
//! the driver that works everywhere; the copy is cloned (FICLONE) where the filesystem can,
//! else done in the kernel with copy_file_range. Diffs are core's naive ones.
//!
//! A create is exactly one copy of the parent: the runtime must not stack an init layer on a
//! copy of a copy if it wants a container to cost one image copy at most.

mod layout;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strata_core::archive::WhiteoutMode;
use strata_core::driverkit::{run_blocking, Held, InPlace, Layers};
use strata_core::fsutil::{self, copy::copy_tree, remove_tree};
use strata_core::naive::{self, MountedPair};
use strata_core::registry::DriverConfig;
use strata_core::{
    Capabilities, Change, CreateOpts, Error, IoContext, LayerDriver, LayerId, Result, StorageOpts,
    TarStream, Usage,
};

use crate::layout::Layout;

pub const DRIVER_NAME: &str = "vfs";

pub struct VfsDriver {
    layout: Layout,
    /// Parents, children and mount references (vfs mounts nothing: the count guards `remove`).
    layers: Layers<()>,
    in_place: Arc<InPlace>,
    backing_fs: String,
    reflink: bool,
}

/// The registry's constructor: `registry.register("vfs", Arc::new(strata_vfs::init))`.
pub fn init(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let driver: Arc<dyn LayerDriver> = VfsDriver::new(config.root, config.options).await?;
        Ok(driver)
    })
}

/// vfs keeps full copies and has no way to cap a layer's size.
fn check_storage_opts(opts: &StorageOpts) -> Result<()> {
    if opts.get("size").is_some() {
        return Err(Error::unsupported(
            "the vfs storage driver cannot limit a layer's size (size=); \
             use overlay2 on xfs mounted with pquota, or btrfs, for size quotas",
        ));
    }
    opts.check_known(DRIVER_NAME, &[])
}

impl VfsDriver {
    /// Opens (creating if needed) the driver at `root` (`<data-root>/vfs`), removing staging
    /// leftovers of a crash and reloading every layer's parent link.
    pub async fn new(root: PathBuf, opts: StorageOpts) -> Result<Arc<Self>> {
        check_storage_opts(&opts)?;
        let layout = Layout::new(root);
        let (found, backing_fs, reflink) = run_blocking({
            let layout = layout.clone();
            move || {
                let found = layout.recover()?;
                let backing_fs = fsutil::filesystem_name(&layout.root)?;
                let reflink = fsutil::copy::reflink_supported(&layout.staging_root())?;
                Ok((found, backing_fs, reflink))
            }
        })
        .await?;
        tracing::info!(root = %layout.root.display(), layers = found.len(), %backing_fs, reflink, "vfs driver ready");
        Ok(Arc::new(Self {
            in_place: Arc::new(InPlace(layout.dirs_root())),
            layout,
            layers: Layers::load("vfs layer", found),
            backing_fs,
            reflink,
        }))
    }

    /// The tree of a layer that exists and is not being created or removed.
    fn ready_dir(&self, id: &LayerId) -> Result<PathBuf> {
        if self.layers.exists(id) {
            Ok(self.layout.layer_dir(id))
        } else {
            Err(Error::not_found(format!("vfs layer {id}")))
        }
    }

    /// The layer's and its parent's trees, each held by a mount reference while the work on
    /// them lasts, so neither can be removed under a diff.
    async fn hold_pair(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<(Held, Option<Held>)> {
        let layer = self.layers.hold(id, &self.in_place).await?;
        let parent = match parent.map(|p| self.layers.hold(p, &self.in_place)) {
            None => None,
            Some(held) => match held.await {
                Ok(held) => Some(held),
                Err(e) => {
                    layer.release().await?;
                    return Err(e);
                }
            },
        };
        Ok((layer, parent))
    }

    /// [`Self::hold_pair`] as the pair naive diffs take; it is released on the blocking thread
    /// that finishes the work.
    async fn pinned_pair(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<MountedPair> {
        let (layer, parent) = self.hold_pair(id, parent).await?;
        let pair = MountedPair::new(layer.path.clone(), parent.as_ref().map(|p| p.path.clone()));
        Ok(pair.on_release(move || {
            for held in std::iter::once(layer).chain(parent) {
                if let Err(e) = held.release_blocking() {
                    tracing::warn!("vfs: releasing a diff's layer: {e}");
                }
            }
        }))
    }
}

/// Copies (or makes) the tree in staging, syncs it, records the parent, renames it in.
fn build_layer(layout: &Layout, id: &LayerId, parent: Option<&LayerId>) -> Result<()> {
    let staging = layout.staging_dir(id);
    remove_tree(&staging)?;
    match parent {
        Some(p) => {
            let stats = copy_tree(&layout.layer_dir(p), &staging)?;
            tracing::debug!(layer = %id, parent = %p, ?stats, "vfs: copied parent");
        }
        None => make_base_dir(&staging)?,
    }
    sync_filesystem(&staging)?;
    layout.write_record(id, parent)?;
    let dir = layout.layer_dir(id);
    std::fs::rename(&staging, &dir).ctx("rename", &dir)?;
    fsutil::fsync_dir(&layout.dirs_root())
}

fn delete_layer(layout: &Layout, id: &LayerId) -> Result<()> {
    let dir = layout.layer_dir(id);
    let doomed = layout.removal_dir(id)?;
    // After this rename the layer is gone, whatever happens to the deletion below.
    std::fs::rename(&dir, &doomed).ctx("rename", &dir)?;
    fsutil::fsync_dir(&layout.dirs_root())?;
    layout.remove_record(id)?;
    remove_tree(&doomed)
}

/// An empty base layer: mode 0755, owned by root, as Docker's vfs makes it.
fn make_base_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .ctx("mkdir", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).ctx("chmod", path)?;
    std::os::unix::fs::lchown(path, Some(0), Some(0)).ctx("chown", path)
}

/// One syncfs makes the whole copied tree durable, far cheaper than an fsync per file.
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = std::fs::File::open(path).ctx("open", path)?;
    // SAFETY: `dir` is an open descriptor for the duration of the call.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
        return Err(Error::io("syncfs", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[async_trait]
impl LayerDriver for VfsDriver {
    fn name(&self) -> &str {
        DRIVER_NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: false,
            quota: false,
            reproducible_diff: true,
            requires_root: true,
            backing_filesystems: Vec::new(),
            layers_share_parent: false,
        }
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        check_storage_opts(&opts.storage_opts)?;
        let creating = self.layers.begin_create(id, parent)?;
        run_blocking({
            let layout = self.layout.clone();
            let id = id.clone();
            let parent = parent.cloned();
            move || {
                let built = build_layer(&layout, &id, parent.as_ref());
                if built.is_err() {
                    // Leave nothing behind: the layer was never visible.
                    let _ = remove_tree(&layout.staging_dir(&id));
                    let _ = remove_tree(&layout.layer_dir(&id));
                    let _ = layout.remove_record(&id);
                }
                built
            }
        })
        .await?;
        creating.commit(());
        Ok(())
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let removing = self.layers.begin_remove(id)?;
        let outcome = run_blocking({
            let layout = self.layout.clone();
            let id = id.clone();
            move || delete_layer(&layout, &id)
        })
        .await;
        if !self.layout.layer_dir(id).exists() {
            removing.done();
        }
        outcome
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.layers.exists(id))
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        self.layers.acquire(id, self.in_place.as_ref()).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        self.layers.release(id, self.in_place.as_ref()).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        naive::changes(self.pinned_pair(id, parent).await?).await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        Ok(naive::diff(self.pinned_pair(id, parent).await?))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        // The layer's tree already holds its parent's content: whiteouts delete for real.
        let (layer, parent) = self.hold_pair(id, parent).await?;
        let stats = naive::apply(layer.path.clone(), tar, WhiteoutMode::Delete).await;
        for held in std::iter::once(layer).chain(parent) {
            held.release().await?;
        }
        Ok(stats?.content_bytes)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        naive::diff_size(self.pinned_pair(id, parent).await?).await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let dir = self.ready_dir(id)?;
        run_blocking(move || fsutil::usage::tree_usage(&dir)).await
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        let layers = self.layers.len();
        Ok(vec![
            ("Backing Filesystem".into(), self.backing_fs.clone()),
            ("Reflink".into(), self.reflink.to_string()),
            ("Layers".into(), layers.to_string()),
        ])
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let dir = self.ready_dir(id)?;
        Ok(BTreeMap::from([(
            "Dir".to_string(),
            dir.to_string_lossy().into_owned(),
        )]))
    }

    async fn cleanup(&self) -> Result<()> {
        // Nothing is mounted: a vfs "mount" is the directory itself. Drop the references.
        self.layers.release_all(self.in_place.as_ref()).await
    }
}

#[cfg(test)]
mod tests;
