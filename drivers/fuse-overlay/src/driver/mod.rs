//! The fuse-overlay LayerDriver: overlay2's layout, each mount served by this process through
//! /dev/fuse. Mounts are reference counted; the last unmount unmounts and ends the serving
//! task. Changes and diffs read the upper (diff) directory directly.
//!
//! Driver options (`--storage-opt`): `fuse-overlay.durable_copy_up=true|false` (default true:
//! fsync a copied-up file before it replaces the lower one, as kernel overlayfs does).

mod layout;
mod native_diff;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strata_core::archive::{self, WhiteoutMode};
use strata_core::driverkit::{run_blocking, Held, Layers, MountOps};
use strata_core::naive;
use strata_core::registry::DriverConfig;
use strata_core::{
    fsutil, stream, Capabilities, Change, CreateOpts, Error, IoContext, LayerDriver, LayerId,
    LayerKind, Result, StorageOpts, TarStream, Usage,
};

use crate::fs::OverlayConfig;
use crate::mount::OverlayMount;
use layout::Layout;
pub use native_diff::native_changes;

/// The name `--storage-driver` uses.
pub const NAME: &str = "fuse-overlay";

const OPTIONS: [&str; 1] = ["fuse-overlay.durable_copy_up"];

/// The registry's constructor.
pub fn init(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let driver = FuseOverlayDriver::open(config.root, &config.options).await?;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}

/// The real mount of a layer: an overlay served by this process.
struct FuseMounts {
    layout: Layout,
    durable_copy_up: bool,
}

pub struct FuseOverlayDriver {
    /// Parents, children, kinds and the live mounts.
    layers: Layers<LayerKind, OverlayMount>,
    mounts: Arc<FuseMounts>,
}

impl FuseOverlayDriver {
    /// Opens the driver in `root`: detaches FUSE mounts a crashed daemon left behind and
    /// deletes half-made layers.
    pub async fn open(root: PathBuf, options: &StorageOpts) -> Result<Self> {
        options.check_known(NAME, &OPTIONS)?;
        let durable_copy_up = options.flag("fuse-overlay.durable_copy_up", true)?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::unsupported(
                "fuse-overlay mounts through /dev/fuse and needs root: run the daemon as root",
            ));
        }
        if !std::path::Path::new("/dev/fuse").exists() {
            return Err(Error::unsupported(
                "fuse-overlay needs /dev/fuse: load the fuse module (modprobe fuse)",
            ));
        }
        let layout = Layout { root: root.clone() };
        let l = layout.clone();
        let found = run_blocking(move || {
            std::fs::create_dir_all(&l.root).ctx("create", &l.root)?;
            let stale = fsutil::mounts::unmount_all_under(&l.root)?;
            if stale > 0 {
                tracing::warn!(count = stale, root = %l.root.display(), "detached FUSE mounts left by an earlier daemon");
            }
            l.recover()?;
            l.load()
        })
        .await?;
        Ok(Self {
            layers: Layers::load("layer", found),
            mounts: Arc::new(FuseMounts {
                layout,
                durable_copy_up,
            }),
        })
    }

    fn layout(&self) -> &Layout {
        &self.mounts.layout
    }

    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.layers.exists(id) {
            Ok(())
        } else {
            Err(Error::not_found(format!("layer {id}")))
        }
    }
}

impl FuseMounts {
    fn overlay_config(&self, id: &LayerId, kind: LayerKind) -> Result<OverlayConfig> {
        let parents: Vec<PathBuf> = self
            .layout
            .lowers(id)?
            .iter()
            .map(|l| self.layout.diff(l))
            .collect();
        let mut cfg = match kind {
            LayerKind::ReadOnly => {
                let mut lowers = vec![self.layout.diff(id)];
                lowers.extend(parents);
                OverlayConfig::new(lowers, None)
            }
            LayerKind::ReadWrite => {
                OverlayConfig::new(parents, Some((self.layout.diff(id), self.layout.work(id))))
            }
        };
        cfg.durable_copy_up = self.durable_copy_up;
        Ok(cfg)
    }
}

#[async_trait]
impl MountOps<LayerKind> for FuseMounts {
    type Handle = OverlayMount;

    async fn mount(&self, id: &LayerId, kind: &LayerKind) -> Result<(PathBuf, OverlayMount)> {
        let cfg = self.overlay_config(id, *kind)?;
        let merged = self.layout.merged(id);
        let mount = OverlayMount::mount(cfg, &merged)
            .await
            .ctx("mount fuse-overlay", &merged)?;
        Ok((merged, mount))
    }

    async fn unmount(
        &self,
        _id: &LayerId,
        _kind: &LayerKind,
        path: &Path,
        mount: &mut OverlayMount,
    ) -> Result<()> {
        mount.stop().await.ctx("unmount", path)
    }
}

/// Where a diff reads from: the upper directory with the parent's tree beside it (native),
/// or both trees mounted (when asked against a layer that is not the recorded parent).
struct DiffSource {
    layer_root: PathBuf,
    parent_root: Option<PathBuf>,
    native: bool,
    held: Vec<Held>,
}

impl DiffSource {
    fn changes(&self) -> Result<Vec<Change>> {
        if self.native {
            native_changes(&self.layer_root, self.parent_root.as_deref())
        } else {
            archive::naive_changes(&self.layer_root, self.parent_root.as_deref())
        }
    }

    /// Unmounts what the diff held, on the blocking thread that did the work.
    fn release(self) {
        for held in self.held {
            if let Err(e) = held.release_blocking() {
                tracing::warn!("unmount after diff: {e}");
            }
        }
    }
}

impl FuseOverlayDriver {
    async fn diff_source(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<DiffSource> {
        let recorded = self.layers.parent(id)?;
        let mut held = Vec::new();
        if let Some(p) = parent {
            held.push(self.layers.hold(p, &self.mounts).await?);
        }
        let parent_root = held.first().map(|h| h.path.clone());
        if recorded.as_ref() == parent {
            return Ok(DiffSource {
                layer_root: self.layout().diff(id),
                parent_root,
                native: true,
                held,
            });
        }
        let layer = match self.layers.hold(id, &self.mounts).await {
            Ok(layer) => layer,
            Err(e) => {
                for h in held {
                    h.release().await?;
                }
                return Err(e);
            }
        };
        let layer_root = layer.path.clone();
        held.push(layer);
        Ok(DiffSource {
            layer_root,
            parent_root,
            native: false,
            held,
        })
    }
}

#[async_trait]
impl LayerDriver for FuseOverlayDriver {
    fn name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: true,
            quota: false,
            reproducible_diff: true,
            requires_root: true,
            backing_filesystems: Vec::new(),
            layers_share_parent: true,
        }
    }

    async fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        opts.storage_opts.check_known(NAME, &[])?;
        let creating = self.layers.begin_create(id, parent)?;
        let layout = self.layout().clone();
        let (id, parent, kind) = (id.clone(), parent.cloned(), opts.kind);
        run_blocking(move || layout.create(&id, parent.as_ref(), kind)).await?;
        creating.commit(kind);
        Ok(())
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let removing = self.layers.begin_remove(id)?;
        let layout = self.layout().clone();
        let doomed = id.clone();
        let removed = run_blocking(move || layout.remove(&doomed)).await;
        if !self.layout().dir(id).exists() {
            removing.done();
        }
        removed
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.layers.exists(id))
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        self.layers.acquire(id, self.mounts.as_ref()).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        self.layers.release(id, self.mounts.as_ref()).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let src = self.diff_source(id, parent).await?;
        run_blocking(move || {
            let changes = src.changes();
            src.release();
            changes
        })
        .await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let src = self.diff_source(id, parent).await?;
        Ok(stream::blocking_chunk_stream(move |send| {
            let written = src.changes().and_then(|changes| {
                archive::write_diff_chunks(
                    send,
                    &src.layer_root,
                    &changes,
                    src.parent_root.as_deref(),
                )
            });
            src.release();
            written
        }))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        self.check_exists(id)?;
        if self.layers.is_mounted(id) {
            return Err(Error::busy(format!(
                "layer {id} is mounted; unmount it before applying a diff"
            )));
        }
        let dest = self.layout().diff(id);
        let stats = stream::with_blocking_reader(tar, move |r| {
            archive::apply_layer_with(&dest, r, &naive::driver_apply(WhiteoutMode::OverlayMarkers))
        })
        .await?;
        Ok(stats.content_bytes)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let src = self.diff_source(id, parent).await?;
        run_blocking(move || {
            let size = src
                .changes()
                .and_then(|changes| archive::changes_size(&src.layer_root, &changes));
            src.release();
            size
        })
        .await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        self.check_exists(id)?;
        let diff = self.layout().diff(id);
        run_blocking(move || fsutil::usage::tree_usage(&diff)).await
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        let root = self.layout().root.clone();
        let fs = run_blocking(move || fsutil::filesystem_name(&root)).await?;
        let mounts = self.layers.mounted();
        Ok(vec![
            ("Backing Filesystem".into(), fs),
            ("Native Overlay Diff".into(), "true".into()),
            ("Supports d_type".into(), "true".into()),
            (
                "FUSE Implementation".into(),
                "strata (in-process, fuse3)".into(),
            ),
            (
                "Durable Copy-up".into(),
                self.mounts.durable_copy_up.to_string(),
            ),
            ("Active Mounts".into(), mounts.to_string()),
        ])
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.check_exists(id)?;
        let l = self.layout();
        let lowers: Vec<String> = l
            .lowers(id)?
            .iter()
            .map(|p| l.diff(p).display().to_string())
            .collect();
        let mut m = BTreeMap::new();
        if !lowers.is_empty() {
            m.insert("LowerDir".into(), lowers.join(":"));
        }
        m.insert("UpperDir".into(), l.diff(id).display().to_string());
        m.insert("WorkDir".into(), l.work(id).display().to_string());
        m.insert("MergedDir".into(), l.merged(id).display().to_string());
        Ok(m)
    }

    async fn cleanup(&self) -> Result<()> {
        if let Err(e) = self.layers.release_all(self.mounts.as_ref()).await {
            tracing::warn!("fuse-overlay cleanup: {e}");
        }
        let root = self.layout().root.clone();
        run_blocking(move || fsutil::mounts::unmount_all_under(&root)).await?;
        Ok(())
    }
}
