//! The fuse-overlay LayerDriver: overlay2's layout, each mount served by this process through
//! /dev/fuse. Mounts are reference counted; the last unmount unmounts and ends the serving
//! task. Changes and diffs read the upper (diff) directory directly.
//!
//! Driver options (`--storage-opt`): `fuse-overlay.durable_copy_up=true|false` (default true:
//! fsync a copied-up file before it replaces the lower one, as kernel overlayfs does).

mod layout;
mod native_diff;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strata_core::archive::{self, WhiteoutMode};
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

struct Active {
    count: usize,
    mount: OverlayMount,
}

struct Inner {
    layout: Layout,
    durable_copy_up: bool,
    mounts: tokio::sync::Mutex<HashMap<LayerId, Active>>,
}

pub struct FuseOverlayDriver {
    inner: Arc<Inner>,
}

impl FuseOverlayDriver {
    /// Opens the driver in `root`: detaches FUSE mounts a crashed daemon left behind and
    /// deletes half-made layers.
    pub async fn open(root: PathBuf, options: &StorageOpts) -> Result<Self> {
        options.check_known(NAME, &OPTIONS)?;
        let durable_copy_up = match options.get("fuse-overlay.durable_copy_up") {
            None => true,
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => true,
                "false" | "0" | "no" => false,
                other => {
                    return Err(Error::invalid(format!(
                        "fuse-overlay.durable_copy_up={other:?} is not true or false"
                    )))
                }
            },
        };
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
        tokio::task::spawn_blocking(move || -> Result<()> {
            std::fs::create_dir_all(&l.root).ctx("create", &l.root)?;
            let stale = fsutil::mounts::unmount_all_under(&l.root)?;
            if stale > 0 {
                tracing::warn!(count = stale, root = %l.root.display(), "detached FUSE mounts left by an earlier daemon");
            }
            l.recover()
        })
        .await??;
        Ok(Self {
            inner: Arc::new(Inner {
                layout,
                durable_copy_up,
                mounts: tokio::sync::Mutex::new(HashMap::new()),
            }),
        })
    }
}

impl Inner {
    fn check_exists(&self, id: &LayerId) -> Result<()> {
        if self.layout.exists(id) {
            Ok(())
        } else {
            Err(Error::not_found(format!("layer {id}")))
        }
    }

    fn overlay_config(&self, id: &LayerId) -> Result<OverlayConfig> {
        let parents: Vec<PathBuf> = self
            .layout
            .lowers(id)?
            .iter()
            .map(|l| self.layout.diff(l))
            .collect();
        let mut cfg = match self.layout.kind(id)? {
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

    async fn mount(&self, id: &LayerId) -> Result<PathBuf> {
        let mut mounts = self.mounts.lock().await;
        if let Some(a) = mounts.get_mut(id) {
            a.count += 1;
            return Ok(a.mount.path().to_path_buf());
        }
        self.check_exists(id)?;
        let cfg = self.overlay_config(id)?;
        let merged = self.layout.merged(id);
        let mount = OverlayMount::mount(cfg, &merged)
            .await
            .ctx("mount fuse-overlay", &merged)?;
        mounts.insert(id.clone(), Active { count: 1, mount });
        Ok(merged)
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let mut mounts = self.mounts.lock().await;
        let Some(a) = mounts.get_mut(id) else {
            tracing::debug!(%id, "unmount of a layer that is not mounted");
            return Ok(());
        };
        a.count -= 1;
        if a.count > 0 {
            return Ok(());
        }
        if let Some(a) = mounts.remove(id) {
            let path = a.mount.path().to_path_buf();
            a.mount.unmount().await.ctx("unmount", &path)?;
        }
        Ok(())
    }

    async fn is_mounted(&self, id: &LayerId) -> bool {
        self.mounts.lock().await.contains_key(id)
    }
}

/// Keeps a layer mounted while a blocking job reads it; unmounts when dropped.
struct MountGuard {
    inner: Arc<Inner>,
    id: LayerId,
    path: PathBuf,
    rt: tokio::runtime::Handle,
}

impl MountGuard {
    async fn new(inner: &Arc<Inner>, id: &LayerId) -> Result<Self> {
        let path = inner.mount(id).await?;
        Ok(Self {
            inner: inner.clone(),
            id: id.clone(),
            path,
            rt: tokio::runtime::Handle::current(),
        })
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let inner = self.inner.clone();
        let id = self.id.clone();
        self.rt.spawn(async move {
            if let Err(e) = inner.unmount(&id).await {
                tracing::warn!(%id, "unmount after diff: {e}");
            }
        });
    }
}

/// Where a diff reads from: the upper directory with the parent's tree beside it (native),
/// or both trees mounted (when asked against a layer that is not the recorded parent).
struct DiffSource {
    layer_root: PathBuf,
    parent_root: Option<PathBuf>,
    native: bool,
    _guards: Vec<MountGuard>,
}

impl DiffSource {
    fn changes(&self) -> Result<Vec<Change>> {
        if self.native {
            native_changes(&self.layer_root, self.parent_root.as_deref())
        } else {
            archive::naive_changes(&self.layer_root, self.parent_root.as_deref())
        }
    }
}

impl FuseOverlayDriver {
    async fn diff_source(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<DiffSource> {
        let inner = &self.inner;
        inner.check_exists(id)?;
        let recorded = inner.layout.lowers(id)?.first().cloned();
        let mut guards = Vec::new();
        let parent_root = match parent {
            Some(p) => {
                let g = MountGuard::new(inner, p).await?;
                let path = g.path.clone();
                guards.push(g);
                Some(path)
            }
            None => None,
        };
        if recorded.as_ref() == parent {
            return Ok(DiffSource {
                layer_root: inner.layout.diff(id),
                parent_root,
                native: true,
                _guards: guards,
            });
        }
        let g = MountGuard::new(inner, id).await?;
        let layer_root = g.path.clone();
        guards.push(g);
        Ok(DiffSource {
            layer_root,
            parent_root,
            native: false,
            _guards: guards,
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
        let layout = self.inner.layout.clone();
        let (id, parent, kind) = (id.clone(), parent.cloned(), opts.kind);
        tokio::task::spawn_blocking(move || layout.create(&id, parent.as_ref(), kind)).await?
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        self.inner.check_exists(id)?;
        if self.inner.is_mounted(id).await {
            return Err(Error::busy(format!("layer {id} is mounted")));
        }
        let layout = self.inner.layout.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let children = layout.children_of(&id)?;
            if let Some(c) = children.first() {
                return Err(Error::busy(format!("layer {id} has a child layer {c}")));
            }
            layout.remove(&id)
        })
        .await?
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.inner.layout.exists(id))
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        self.inner.mount(id).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        self.inner.unmount(id).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let src = self.diff_source(id, parent).await?;
        tokio::task::spawn_blocking(move || src.changes()).await?
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let src = self.diff_source(id, parent).await?;
        Ok(stream::blocking_chunk_stream(move |send| {
            let changes = src.changes()?;
            archive::write_diff_chunks(send, &src.layer_root, &changes, src.parent_root.as_deref())
        }))
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        _parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        self.inner.check_exists(id)?;
        if self.inner.is_mounted(id).await {
            return Err(Error::busy(format!(
                "layer {id} is mounted; unmount it before applying a diff"
            )));
        }
        let dest = self.inner.layout.diff(id);
        let stats = stream::with_blocking_reader(tar, move |r| {
            archive::apply_layer_with(&dest, r, &naive::driver_apply(WhiteoutMode::OverlayMarkers))
        })
        .await?;
        Ok(stats.content_bytes)
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let src = self.diff_source(id, parent).await?;
        tokio::task::spawn_blocking(move || {
            let changes = src.changes()?;
            archive::changes_size(&src.layer_root, &changes)
        })
        .await?
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        self.inner.check_exists(id)?;
        let diff = self.inner.layout.diff(id);
        tokio::task::spawn_blocking(move || fsutil::usage::tree_usage(&diff)).await?
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        let root = self.inner.layout.root.clone();
        let fs = tokio::task::spawn_blocking(move || fsutil::filesystem_name(&root)).await??;
        let mounts = self.inner.mounts.lock().await.len();
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
                self.inner.durable_copy_up.to_string(),
            ),
            ("Active Mounts".into(), mounts.to_string()),
        ])
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.inner.check_exists(id)?;
        let l = &self.inner.layout;
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
        let active: Vec<(LayerId, Active)> = self.inner.mounts.lock().await.drain().collect();
        for (id, a) in active {
            let path = a.mount.path().to_path_buf();
            if let Err(e) = a.mount.unmount().await {
                tracing::warn!(%id, "unmount {}: {e}", path.display());
            }
        }
        let root = self.inner.layout.root.clone();
        tokio::task::spawn_blocking(move || fsutil::mounts::unmount_all_under(&root)).await??;
        Ok(())
    }
}
