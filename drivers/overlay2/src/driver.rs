//! The driver's state and its blocking operations; `lib.rs` wraps them in the async trait.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use strata_core::fsutil;
use strata_core::{CreateOpts, Error, IoContext, LayerId, LayerKind, MountSpec, Result, Usage};

use crate::layout::{self, LayerMeta, Layout};
use crate::mount::{self, MountApi, Mounter, OverlaySpec};
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

struct Entry {
    meta: LayerMeta,
    parent: Option<LayerId>,
    mounts: u32,
    children: u32,
}

pub struct Overlay2 {
    layout: Layout,
    mounter: Mounter,
    probe: ProbeReport,
    native_diff: bool,
    quota: std::result::Result<QuotaControl, String>,
    default_size: Option<u64>,
    layers: Mutex<HashMap<LayerId, Entry>>,
}

/// A mount held for as long as the guard lives.
pub struct MountGuard {
    driver: Arc<Overlay2>,
    id: LayerId,
    pub path: PathBuf,
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.driver.put(&self.id) {
            tracing::warn!("releasing the mount of layer {}: {e}", self.id);
        }
    }
}

impl Overlay2 {
    /// Opens (creating if needed) the driver root, recovers from a crash and probes the host.
    pub fn open(root: PathBuf, settings: Settings) -> Result<Arc<Self>> {
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
        let layers = index_layers(metas);
        let mounter = Mounter::new(root, probe.api, probe.options.clone());
        Ok(Arc::new(Self {
            layout,
            mounter,
            probe,
            native_diff,
            quota,
            default_size: settings.default_size,
            layers: Mutex::new(layers),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<LayerId, Entry>> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
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
        self.mounter.max_lowers(Some(64))
    }

    pub fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts) -> Result<()> {
        opts.storage_opts.check_known("overlay2", &["size"])?;
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
        let quota = match size {
            Some(bytes) => Some((
                self.quota
                    .as_ref()
                    .map_err(|e| Error::unsupported(e.clone()))?,
                bytes,
            )),
            None => None,
        };
        let mut layers = self.lock();
        if layers.contains_key(id) || self.layout.layer_dir(id).exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        let lower = match parent {
            Some(p) => {
                let pe = layers
                    .get(p)
                    .ok_or_else(|| Error::not_found(format!("parent layer {p}")))?;
                let mut lower = vec![Layout::relative_link(&pe.meta.link)];
                lower.extend(pe.meta.lower.iter().cloned());
                lower
            }
            None => Vec::new(),
        };
        let read_only = opts.kind == LayerKind::ReadOnly;
        if parent.is_some() {
            let needed = lower.len() + usize::from(read_only);
            let max = self
                .mounter
                .max_lowers((!read_only).then_some(id.as_str().len()));
            if needed > max {
                return Err(Error::unsupported(format!(
                    "cannot create layer {id}: its chain would be {} layers deep and the limit \
                     is {} here ({})",
                    lower.len() + 1,
                    max + usize::from(!read_only),
                    match self.mounter.api() {
                        MountApi::NewApi => "overlayfs stacks at most 500 lower layers",
                        MountApi::Legacy =>
                            "without lowerdir+ (Linux 6.8+) the lowers must fit in one page of \
                             mount options",
                    }
                )));
            }
        }
        let meta = LayerMeta {
            link: self.unused_short_id(),
            lower,
            read_only,
        };
        let staging = self.layout.staging_dir(id);
        let built = self.build_layer_dir(id, &staging, &meta, parent.is_some(), quota);
        if let Err(e) = built {
            let _ = fsutil::remove_tree(&staging);
            // It may have been renamed into place already (a failed fsync); it did not exist
            // before (checked above, under the lock), so it is ours to remove.
            let _ = fsutil::remove_tree(&self.layout.layer_dir(id));
            let _ = std::fs::remove_file(self.layout.link_path(&meta.link));
            return Err(e);
        }
        if let Some(p) = parent {
            if let Some(pe) = layers.get_mut(p) {
                pe.children += 1;
            }
        }
        layers.insert(
            id.clone(),
            Entry {
                meta,
                parent: parent.cloned(),
                mounts: 0,
                children: 0,
            },
        );
        Ok(())
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

    fn unused_short_id(&self) -> String {
        loop {
            let short = layout::new_short_id();
            if std::fs::symlink_metadata(self.layout.link_path(&short)).is_err() {
                return short;
            }
        }
    }

    pub fn remove(&self, id: &LayerId) -> Result<()> {
        let mut layers = self.lock();
        let entry = layers
            .get(id)
            .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
        if entry.mounts > 0 {
            return Err(Error::busy(format!(
                "layer {id} is mounted ({} times); unmount it before removing it",
                entry.mounts
            )));
        }
        if entry.children > 0 {
            return Err(Error::busy(format!(
                "layer {id} has {} child layer(s); remove them first",
                entry.children
            )));
        }
        let removing = self.layout.removing_dir(id);
        let dir = self.layout.layer_dir(id);
        std::fs::rename(&dir, &removing).ctx("rename for removal", &dir)?;
        // Durable before anything inside is deleted: a crash then finds `.removing-<id>`
        // (recovery finishes it), never a half-emptied layer under its own name.
        fsutil::fsync_dir(self.layout.root())?;
        let Some(entry) = layers.remove(id) else {
            return Err(Error::not_found(format!("layer {id}")));
        };
        if let Some(p) = &entry.parent {
            if let Some(pe) = layers.get_mut(p) {
                pe.children = pe.children.saturating_sub(1);
            }
        }
        drop(layers);
        let link = self.layout.link_path(&entry.meta.link);
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", &link, e)),
        }
        fsutil::remove_tree(&removing)
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.lock().contains_key(id)
    }

    /// The parent recorded at create time.
    pub fn parent_of(&self, id: &LayerId) -> Result<Option<LayerId>> {
        let layers = self.lock();
        let e = layers
            .get(id)
            .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
        Ok(e.parent.clone())
    }

    /// Mounts the layer (or counts one more user of its mount) and returns its tree.
    pub fn get(&self, id: &LayerId) -> Result<PathBuf> {
        let mut layers = self.lock();
        let entry = layers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
        if entry.parent.is_none() {
            entry.mounts += 1;
            return Ok(self.layout.diff(id));
        }
        let merged = self.layout.merged(id);
        if entry.mounts > 0 {
            entry.mounts += 1;
            return Ok(merged);
        }
        let mut lowers = Vec::with_capacity(entry.meta.lower.len() + 1);
        let upper = if entry.meta.read_only {
            lowers.push(Layout::relative_link(&entry.meta.link));
            None
        } else {
            Some((format!("{id}/diff"), format!("{id}/work")))
        };
        lowers.extend(entry.meta.lower.iter().cloned());
        match std::fs::create_dir(&merged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &merged, e)),
        }
        let spec = OverlaySpec {
            lowers,
            upper,
            target: merged.clone(),
        };
        if let Err(e) = self.mounter.mount(&spec) {
            let _ = std::fs::remove_dir(&merged);
            return Err(e);
        }
        entry.mounts = 1;
        Ok(merged)
    }

    /// The layer's tree as a mount a client performs itself (see [`Mounter::client_options`]):
    /// a bind of `diff` for a base layer, else an overlay whose upper is the layer's own diff
    /// unless `read_only` (or the layer is an image layer). `None` when the chain is too deep
    /// for a client's mount(2); `get` (new mount API) still mounts it.
    pub fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let layers = self.lock();
        let entry = layers
            .get(id)
            .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
        if entry.parent.is_none() {
            let mode = if read_only { "ro" } else { "rw" };
            return Ok(Some(MountSpec {
                fs_type: "bind".into(),
                source: self.layout.diff(id).to_string_lossy().into_owned(),
                options: vec!["rbind".into(), mode.into()],
            }));
        }
        let writable = !read_only && !entry.meta.read_only;
        let mut lowers = Vec::with_capacity(entry.meta.lower.len() + 1);
        if !writable {
            lowers.push(Layout::relative_link(&entry.meta.link));
        }
        lowers.extend(entry.meta.lower.iter().cloned());
        let (upper, work) = (format!("{id}/diff"), format!("{id}/work"));
        let upper = writable.then_some((upper.as_str(), work.as_str()));
        Ok(self
            .mounter
            .client_options(&lowers, upper)
            .map(|options| MountSpec {
                fs_type: "overlay".into(),
                source: "overlay".into(),
                options,
            }))
    }

    /// Releases one `get`; the last release unmounts and removes `merged`.
    pub fn put(&self, id: &LayerId) -> Result<()> {
        let mut layers = self.lock();
        let entry = layers
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
        if entry.mounts == 0 {
            tracing::debug!("unmount of layer {id}, which is not mounted");
            return Ok(());
        }
        entry.mounts -= 1;
        if entry.mounts == 0 && entry.parent.is_some() {
            if let Err(e) = mount::unmount(&self.layout.merged(id)) {
                entry.mounts = 1;
                return Err(e);
            }
        }
        Ok(())
    }

    /// `get` tied to a guard that releases the mount when dropped.
    pub fn hold(self: &Arc<Self>, id: &LayerId) -> Result<MountGuard> {
        let path = self.get(id)?;
        Ok(MountGuard {
            driver: Arc::clone(self),
            id: id.clone(),
            path,
        })
    }

    pub fn usage(&self, id: &LayerId) -> Result<Usage> {
        if !self.exists(id) {
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

    pub fn status(&self) -> Vec<(String, String)> {
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
                match self.mounter.api() {
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
    pub fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let lower = {
            let layers = self.lock();
            let e = layers
                .get(id)
                .ok_or_else(|| Error::not_found(format!("layer {id}")))?;
            e.meta.lower.clone()
        };
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

    /// Unmounts every merged mount (daemon shutdown).
    pub fn cleanup(&self) -> Result<()> {
        let mut layers = self.lock();
        for (id, entry) in layers.iter_mut() {
            if entry.mounts > 0 && entry.parent.is_some() {
                mount::unmount(&self.layout.merged(id))?;
            }
            entry.mounts = 0;
        }
        Ok(())
    }

    pub fn quota_limit(&self, id: &LayerId) -> Result<u64> {
        let control = self
            .quota
            .as_ref()
            .map_err(|e| Error::unsupported(e.clone()))?;
        control.limit_of(&self.layout.layer_dir(id))
    }
}

/// The in-memory index: each layer's parent (from the first `lower` entry's short name) and
/// its number of children. A layer whose parent is gone cannot be mounted and is left out.
fn index_layers(metas: HashMap<LayerId, LayerMeta>) -> HashMap<LayerId, Entry> {
    let by_short: HashMap<String, LayerId> = metas
        .iter()
        .map(|(id, m)| (m.link.clone(), id.clone()))
        .collect();
    let mut layers: HashMap<LayerId, Entry> = HashMap::new();
    for (id, meta) in metas {
        let parent = match meta.parent_short() {
            None => None,
            Some(short) => match by_short.get(short) {
                Some(p) => Some(p.clone()),
                None => {
                    tracing::warn!("layer {id}: its parent (l/{short}) is gone; ignoring it");
                    continue;
                }
            },
        };
        layers.insert(
            id,
            Entry {
                meta,
                parent,
                mounts: 0,
                children: 0,
            },
        );
    }
    let parents: Vec<LayerId> = layers.values().filter_map(|e| e.parent.clone()).collect();
    for p in parents {
        if let Some(e) = layers.get_mut(&p) {
            e.children += 1;
        }
    }
    layers
}
