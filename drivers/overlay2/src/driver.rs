//! The driver's state and its blocking operations, a `BlockingLayerDriver` that the driver
//! kit's `Blocking` adapter serves as the async trait.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use strata_core::driverkit::{layer_size, BlockingLayerDriver, Layers};
use strata_core::fsutil;
use strata_core::{
    Capabilities, Change, CreateOpts, Error, IoContext, LayerId, LayerKind, MountSpec, Result,
    TarStream, Usage,
};

use crate::layer_mounts::OverlayMounts;
use crate::layout::{self, LayerMeta, Layout};
use crate::mount::MountApi;
use crate::probe::{self, ProbeReport};
use crate::quota::QuotaControl;
use crate::recovery;

/// How the driver is set up (from `--storage-opt overlay2.*`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Always use the naive (walk both trees) changes and diff.
    pub naive_diff: bool,
    /// Default `size=` for read-write layers.
    pub default_size: Option<u64>,
    /// Force a mount API instead of detecting it.
    pub mount_api: Option<MountApi>,
}

pub struct Overlay2 {
    name: &'static str,
    layout: Layout,
    pub(crate) mounts: Arc<OverlayMounts>,
    probe: ProbeReport,
    native_diff: bool,
    pub(crate) quota: std::result::Result<QuotaControl, String>,
    default_size: Option<u64>,
    /// Parents, children, each layer's `link`/`lower` record and its mount references.
    pub(crate) layers: Layers<LayerMeta>,
}

impl Overlay2 {
    /// Opens (creating if needed) the driver root, recovers from a crash and probes the host.
    pub fn open(root: PathBuf, settings: Settings, name: &'static str) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o710)
            .create(&root)
            .ctx("create", &root)?;
        let root = std::fs::canonicalize(&root).ctx("resolve", &root)?;
        let layout = Layout::new(root.clone());
        let links = layout.links_dir();
        if !links.exists() {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&links)
                .ctx("create", &links)?;
        }
        let metas = recovery::recover(&layout)?;
        let probe = probe::run(&root, settings.mount_api)?;
        let dirs: Vec<PathBuf> = metas.keys().map(|id| layout.layer_dir(id)).collect();
        let quota = QuotaControl::new(&root, &probe.backing_fs, &dirs).map_err(|e| e.to_string());
        if let Some(size) = settings.default_size {
            if let Err(e) = &quota {
                return Err(Error::unsupported(format!(
                    "overlay2.size={size} cannot be honoured: {e}"
                )));
            }
        }
        if let Some(why) = &probe.naive_reason {
            tracing::info!("overlay2: not using native diff because {why}");
        }
        let native_diff = !settings.naive_diff && probe.naive_reason.is_none();
        let mounts = OverlayMounts::new(layout.clone(), probe.api, probe.options.clone());
        Ok(Self {
            name,
            layers: Layers::load("layer", with_parents(metas)),
            layout,
            mounts: Arc::new(mounts),
            probe,
            native_diff,
            quota,
            default_size: settings.default_size,
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn native_diff(&self) -> bool {
        self.native_diff
    }

    pub fn supports_quota(&self) -> bool {
        self.quota.is_ok()
    }

    /// The most layers one stack can hold (its own diff included).
    pub fn max_depth(&self) -> usize {
        self.mounts.mounter.max_lowers(Some(64))
    }

    fn create_layer(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        opts: &CreateOpts,
    ) -> Result<()> {
        opts.storage_opts.check_known("overlay2", &["size"])?;
        let quota = match layer_size(opts, self.default_size)? {
            Some(bytes) => Some((
                self.quota
                    .as_ref()
                    .map_err(|e| Error::unsupported(e.clone()))?,
                bytes,
            )),
            None => None,
        };
        if self.layout.layer_dir(id).exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        let creating = self.layers.begin_create(id, parent)?;
        let lower = match creating.parent_record() {
            Some(pm) => {
                let mut lower = vec![Layout::relative_link(&pm.link)];
                lower.extend(pm.lower.iter().cloned());
                lower
            }
            None => Vec::new(),
        };
        let read_only = opts.kind == LayerKind::ReadOnly;
        if parent.is_some() {
            self.check_depth(id, lower.len(), read_only)?;
        }
        let meta = LayerMeta {
            link: self.unused_short_id()?,
            lower,
            read_only,
        };
        let staging = self.layout.staging_dir(id);
        let built = self.build_layer_dir(id, &staging, &meta, parent.is_some(), quota);
        if let Err(e) = built {
            let _ = fsutil::remove_tree(&staging);
            let _ = fsutil::remove_tree(&self.layout.layer_dir(id));
            let _ = std::fs::remove_file(self.layout.link_path(&meta.link));
            return Err(e);
        }
        creating.commit(meta);
        Ok(())
    }

    /// Refuses a chain deeper than one mount can stack.
    fn check_depth(&self, id: &LayerId, lowers: usize, read_only: bool) -> Result<()> {
        let mounter = &self.mounts.mounter;
        let needed = lowers + usize::from(read_only);
        let max = mounter.max_lowers((!read_only).then_some(id.as_str().len()));
        if needed <= max {
            return Ok(());
        }
        Err(Error::unsupported(format!(
            "cannot create layer {id}: its chain would be {} layers deep and the limit is {} \
             here ({})",
            lowers + 1,
            max + usize::from(!read_only),
            match mounter.api() {
                MountApi::NewApi => "overlayfs stacks at most 500 lower layers",
                MountApi::Legacy =>
                    "without lowerdir+ (Linux 6.8+) the lowers must fit in one page of mount \
                     options",
            }
        )))
    }

    /// Builds the layer under its staging name and renames it into place, so a crash leaves
    /// the layer whole or not at all.
    fn build_layer_dir(
        &self,
        id: &LayerId,
        staging: &std::path::Path,
        meta: &LayerMeta,
        has_parent: bool,
        quota: Option<(&QuotaControl, u64)>,
    ) -> Result<()> {
        fsutil::remove_tree(staging)?;
        std::fs::DirBuilder::new()
            .mode(0o710)
            .create(staging)
            .ctx("create", staging)?;
        // mkdir's mode is masked by the umask; the layer dir must be exactly 0710.
        std::fs::set_permissions(staging, std::fs::Permissions::from_mode(0o710))
            .ctx("chmod", staging)?;
        if let Some((control, bytes)) = quota {
            control.apply(staging, bytes)?;
        }
        let diff = staging.join("diff");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&diff)
            .ctx("create", &diff)?;
        std::fs::set_permissions(&diff, std::fs::Permissions::from_mode(0o755))
            .ctx("chmod", &diff)?;
        if has_parent {
            let work = staging.join("work");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&work)
                .ctx("create", &work)?;
            // What the kernel's first mount would make (and remakes on every mount).
            let kernel_work = work.join("work");
            std::fs::DirBuilder::new()
                .mode(0o000)
                .create(&kernel_work)
                .ctx("create", &kernel_work)?;
        }
        let files = meta.write(staging)?;
        self.layout.make_link(&meta.link, id)?;
        let dest = self.layout.layer_dir(id);
        std::fs::rename(staging, &dest).ctx("rename into place", &dest)?;
        // Durable before create returns: the new files, the new directories and their entries,
        // and the rename. All fsyncs are issued at once (one flush's wait instead of one per
        // file). A crash before they all land can leave the layer under its final name with a
        // torn file or a missing directory: recovery checks every layer it finds
        // (recovery::validate) and removes such a one, so torn metadata is never used. The
        // `l/` link is not synced: recovery recreates it from `link`.
        let mut paths: Vec<PathBuf> = files.iter().map(|name| dest.join(name)).collect();
        paths.push(dest.join("diff"));
        if has_parent {
            paths.push(dest.join("work"));
        }
        paths.push(dest.clone());
        paths.push(self.layout.root().to_path_buf());
        let refs: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
        fsutil::sync::fsync_all(&refs)
    }

    fn unused_short_id(&self) -> Result<String> {
        loop {
            let short = layout::new_short_id()?;
            if std::fs::symlink_metadata(self.layout.link_path(&short)).is_err() {
                return Ok(short);
            }
        }
    }

    fn remove_layer(&self, id: &LayerId) -> Result<()> {
        let removing = self.layers.begin_remove(id)?;
        let link = removing.record().map(|m| self.layout.link_path(&m.link));
        let doomed = self.layout.removing_dir(id);
        let dir = self.layout.layer_dir(id);
        std::fs::rename(&dir, &doomed).ctx("rename for removal", &dir)?;
        // Durable before anything inside is deleted: a crash then finds `.removing-<id>`
        // (recovery finishes it), never a half-emptied layer under its own name.
        fsutil::fsync_dir(self.layout.root())?;
        removing.done();
        if let Some(link) = link {
            match std::fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io("remove", &link, e)),
            }
        }
        fsutil::remove_tree(&doomed)
    }

    /// The layer's tree as a mount a client performs itself (see [`Mounter::client_options`]):
    /// a bind of `diff` for a base layer, else an overlay whose upper is the layer's own diff
    /// unless `read_only` (or the layer is an image layer). `None` when the chain is too deep
    /// for a client's mount(2); `mount` (new mount API) still mounts it.
    ///
    /// [`Mounter::client_options`]: crate::mount::Mounter::client_options
    fn client_mount(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let meta = self.layers.record(id)?;
        if meta.lower.is_empty() {
            let mode = if read_only { "ro" } else { "rw" };
            return Ok(Some(MountSpec {
                fs_type: "bind".into(),
                source: self.layout.diff(id).to_string_lossy().into_owned(),
                options: vec!["rbind".into(), mode.into()],
            }));
        }
        let writable = !read_only && !meta.read_only;
        let mut lowers = Vec::with_capacity(meta.lower.len() + 1);
        if !writable {
            lowers.push(Layout::relative_link(&meta.link));
        }
        lowers.extend(meta.lower.iter().cloned());
        let (upper, work) = (format!("{id}/diff"), format!("{id}/work"));
        let upper = writable.then_some((upper.as_str(), work.as_str()));
        Ok(self
            .mounts
            .mounter
            .client_options(&lowers, upper)
            .map(|options| MountSpec {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options,
            }))
    }

    fn layer_usage(&self, id: &LayerId) -> Result<Usage> {
        if !self.layers.exists(id) {
            return Err(Error::not_found(format!("layer {id}")));
        }
        // The whole layer directory (diff, work, link and lower files) and its `l/` symlink
        // (its target is too long to live in the inode, so it takes a block), so that every
        // byte of the data root belongs to some layer; a mounted `merged` is another
        // filesystem and is not crossed. `work/work`, which the kernel makes on mount, exists
        // from create on, so mounting does not change the figure.
        let dir = self.layout.layer_dir(id);
        let mut usage = fsutil::usage::tree_usage(&dir)?;
        if let Ok(meta) = LayerMeta::read(&dir) {
            if let Ok(link) = std::fs::symlink_metadata(self.layout.link_path(&meta.link)) {
                use std::os::unix::fs::MetadataExt;
                usage.bytes += link.blocks() * 512;
                usage.inodes += 1;
            }
        }
        Ok(usage)
    }

    fn status_lines(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                "Backing Filesystem".to_string(),
                self.probe.backing_fs.clone(),
            ),
            (
                "Supports d_type".to_string(),
                self.probe.supports_d_type.to_string(),
            ),
            (
                "Native Overlay Diff".to_string(),
                self.native_diff.to_string(),
            ),
            (
                "Using metacopy".to_string(),
                self.probe.using_metacopy.to_string(),
            ),
            ("Max Depth".to_string(), self.max_depth().to_string()),
            (
                "Mount API".to_string(),
                match self.mounts.mounter.api() {
                    MountApi::NewApi => "fsopen with lowerdir+".to_string(),
                    MountApi::Legacy => "mount(2) with l/ short links".to_string(),
                },
            ),
        ];
        out.push((
            "Supports quota".to_string(),
            self.supports_quota().to_string(),
        ));
        out
    }

    /// Docker's GraphDriver.Data for overlay2.
    fn graph_data(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let lower = self.layers.record(id)?.lower;
        let dir = self.layout.layer_dir(id);
        let mut m = BTreeMap::new();
        let show = |p: PathBuf| p.to_string_lossy().into_owned();
        m.insert("MergedDir".into(), show(dir.join("merged")));
        m.insert("UpperDir".into(), show(dir.join("diff")));
        m.insert("WorkDir".into(), show(dir.join("work")));
        if !lower.is_empty() {
            let mut dirs = Vec::with_capacity(lower.len());
            for entry in &lower {
                let short = entry.strip_prefix("l/").unwrap_or(entry);
                let target = self.layout.link_target(short).ok_or_else(|| {
                    Error::Other(format!("short link {entry} of layer {id} is broken"))
                })?;
                dirs.push(show(self.layout.diff(&target)));
            }
            m.insert("LowerDir".into(), dirs.join(":"));
        }
        Ok(m)
    }
}

/// Each layer with its parent, found from the first `lower` entry's short name (recovery
/// already left out every layer whose chain does not match its parent's).
fn with_parents(
    metas: HashMap<LayerId, LayerMeta>,
) -> impl Iterator<Item = (LayerId, Option<LayerId>, LayerMeta)> {
    let by_short: HashMap<String, LayerId> = metas
        .iter()
        .map(|(id, m)| (m.link.clone(), id.clone()))
        .collect();
    metas.into_iter().filter_map(move |(id, meta)| {
        let parent = match meta.parent_short() {
            None => None,
            Some(short) => match by_short.get(short) {
                Some(p) => Some(p.clone()),
                None => {
                    tracing::warn!("layer {id}: its parent (l/{short}) is gone; ignoring it");
                    return None;
                }
            },
        };
        Some((id, parent, meta))
    })
}

impl BlockingLayerDriver for Overlay2 {
    fn name(&self) -> &str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: self.native_diff,
            quota: self.supports_quota(),
            reproducible_diff: true,
            requires_root: true,
            backing_filesystems: Vec::new(),
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
        self.layers.acquire_blocking(id, self.mounts.as_ref())
    }

    fn unmount(&self, id: &LayerId) -> Result<()> {
        self.layers.release_blocking(id, self.mounts.as_ref())
    }

    fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        self.client_mount(id, read_only)
    }

    fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        self.diff_changes(id, parent)
    }

    fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        self.diff_stream(id, parent)
    }

    fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut dyn std::io::Read,
    ) -> Result<u64> {
        self.apply_tar(id, parent, tar)
    }

    fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        self.changes_size(id, parent)
    }

    fn usage(&self, id: &LayerId) -> Result<Usage> {
        self.layer_usage(id)
    }

    fn status(&self) -> Result<Vec<(String, String)>> {
        Ok(self.status_lines())
    }

    fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        self.graph_data(id)
    }

    /// Unmounts every merged mount (daemon shutdown).
    fn cleanup(&self) -> Result<()> {
        futures::executor::block_on(self.layers.release_all(self.mounts.as_ref()))
    }
}
