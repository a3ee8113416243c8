//! Where a case runs: a fresh temporary directory holding the driver's root and a scratch area
//! for the suite (reference trees, sentinels), plus how drivers are opened on it.
//!
//! A driver that needs a particular backing filesystem plugs it in through
//! [`EnvironmentSpec::LoopFs`]: the suite makes an image file in the case's temporary directory,
//! formats it, loop-mounts it on the driver root, and takes it all down again in `Drop`
//! (also when the case fails or panics).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strata_core::fsutil::mounts;
use strata_core::registry::DriverConfig;
use strata_core::{Error, IoContext, LayerDriver, Result, StorageOpts, VolumeDriver};

/// The directories of one case. Dropping it unmounts whatever is still mounted below it and
/// deletes it.
pub trait Environment: Send + Sync {
    /// The directory the driver is opened on.
    fn root(&self) -> &Path;
    /// A directory outside the driver root, on the host's temporary filesystem, for the suite's
    /// own files: reference trees, sentinels that hostile archives must not reach.
    fn scratch(&self) -> &Path;
}

/// A temporary directory `strata-conformance-<driver>-XXXX/{root,scratch}`.
pub struct TempEnvironment {
    // Declared first so it is dropped (and its mounts taken down) before the directory goes.
    loop_fs: Option<LoopMount>,
    root: PathBuf,
    scratch: PathBuf,
    dir: tempfile::TempDir,
}

impl TempEnvironment {
    pub fn new(driver: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("strata-conformance-{driver}-"))
            .tempdir()
            .map_err(|e| Error::io("create temporary directory", std::env::temp_dir(), e))?;
        let root = dir.path().join("root");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&root).ctx("create", &root)?;
        std::fs::create_dir(&scratch).ctx("create", &scratch)?;
        Ok(Self {
            loop_fs: None,
            root,
            scratch,
            dir,
        })
    }

    /// A temporary directory whose `root` is a freshly made filesystem on a loop device.
    pub fn with_loop_fs(driver: &str, spec: &LoopFs) -> Result<Self> {
        let mut env = Self::new(driver)?;
        let image = env.dir.path().join(format!("{}.img", spec.fs_type));
        env.loop_fs = Some(LoopMount::make(spec, &image, &env.root)?);
        Ok(env)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Environment for TempEnvironment {
    fn root(&self) -> &Path {
        &self.root
    }

    fn scratch(&self) -> &Path {
        &self.scratch
    }
}

impl Drop for TempEnvironment {
    fn drop(&mut self) {
        // The loop filesystem is mounted on `root`; anything a driver mounted lies below it.
        // Deepest first, lazily, so a leaked busy mount cannot keep the directory alive.
        if let Err(e) = mounts::unmount_all_under(self.dir.path()) {
            eprintln!(
                "conformance: cannot unmount under {}: {e}",
                self.dir.path().display()
            );
        }
        self.loop_fs.take();
    }
}

/// A filesystem made on an image file and loop-mounted as a case's driver root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopFs {
    /// `-t` for mount(8): `btrfs`, `xfs`, `ext4`.
    pub fs_type: String,
    /// The mkfs command and its arguments; the image path is appended.
    pub mkfs: Vec<String>,
    /// Apparent size of the (sparse) image file.
    pub size_bytes: u64,
    /// Mount options besides `loop` (`pquota` for xfs project quotas).
    pub mount_options: String,
}

impl LoopFs {
    /// btrfs, big enough for the suite's 1 GiB sparse file to round-trip twice.
    pub fn btrfs() -> Self {
        Self {
            fs_type: "btrfs".into(),
            mkfs: vec!["mkfs.btrfs".into(), "-q".into(), "-f".into()],
            size_bytes: 4 << 30,
            mount_options: String::new(),
        }
    }

    /// xfs mounted with project quotas, as overlay2 needs for `size=`.
    pub fn xfs_pquota() -> Self {
        Self {
            fs_type: "xfs".into(),
            mkfs: vec!["mkfs.xfs".into(), "-q".into(), "-f".into()],
            size_bytes: 4 << 30,
            mount_options: "pquota".into(),
        }
    }

    pub fn ext4() -> Self {
        Self {
            fs_type: "ext4".into(),
            mkfs: vec!["mkfs.ext4".into(), "-q".into(), "-F".into()],
            size_bytes: 4 << 30,
            mount_options: String::new(),
        }
    }
}

/// A mounted loop filesystem; `Drop` unmounts it (mount(8)'s loop devices auto-clear).
struct LoopMount {
    target: PathBuf,
}

impl LoopMount {
    fn make(spec: &LoopFs, image: &Path, target: &Path) -> Result<Self> {
        let file = std::fs::File::create(image).ctx("create", image)?;
        file.set_len(spec.size_bytes).ctx("truncate", image)?;
        drop(file);
        let (prog, args) = spec
            .mkfs
            .split_first()
            .ok_or_else(|| Error::invalid("LoopFs.mkfs is empty"))?;
        run(Command::new(prog).args(args).arg(image))?;
        let mut options = String::from("loop");
        if !spec.mount_options.is_empty() {
            options.push(',');
            options.push_str(&spec.mount_options);
        }
        run(Command::new("mount")
            .args(["-t", &spec.fs_type, "-o", &options])
            .arg(image)
            .arg(target))?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        if let Err(e) = mounts::unmount(&self.target, true) {
            eprintln!("conformance: cannot unmount {}: {e}", self.target.display());
        }
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| Error::Other(format!("cannot run {shown}: {e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// What a case's temporary directory is made of.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EnvironmentSpec {
    /// A plain directory on the host's temporary filesystem.
    #[default]
    TempDir,
    /// A loop-mounted filesystem as the driver root.
    LoopFs(LoopFs),
}

impl EnvironmentSpec {
    pub async fn prepare(&self, driver: &str) -> Result<Box<dyn Environment>> {
        let spec = self.clone();
        let driver = driver.to_string();
        tokio::task::spawn_blocking(move || -> Result<Box<dyn Environment>> {
            Ok(Box::new(match &spec {
                EnvironmentSpec::TempDir => TempEnvironment::new(&driver)?,
                EnvironmentSpec::LoopFs(fs) => TempEnvironment::with_loop_fs(&driver, fs)?,
            }))
        })
        .await?
    }
}

/// Makes layer drivers for the suite: one fresh environment and driver per case.
#[async_trait]
pub trait DriverFactory: Send + Sync {
    /// The driver's name as `--storage-driver` spells it; the driver must report the same.
    fn name(&self) -> &str;

    /// A fresh environment for one case. The default is a plain temporary directory.
    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        EnvironmentSpec::TempDir.prepare(self.name()).await
    }

    /// Opens the driver on `root` (called again on the same root by `restart_recovery`).
    async fn open(&self, root: &Path) -> Result<Arc<dyn LayerDriver>>;
}

pub type OpenLayerDriver =
    Arc<dyn Fn(PathBuf) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> + Send + Sync>;

/// A [`DriverFactory`] from a name, an environment and an open function: what a built-in
/// driver registers with one line in [`crate::builtin`].
pub struct LayerFactory {
    name: String,
    environment: EnvironmentSpec,
    open: OpenLayerDriver,
}

impl LayerFactory {
    pub fn new<F, Fut>(name: &str, open: F) -> Self
    where
        F: Fn(PathBuf) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn LayerDriver>>> + Send + 'static,
    {
        Self {
            name: name.to_string(),
            environment: EnvironmentSpec::TempDir,
            open: Arc::new(move |root| Box::pin(open(root))),
        }
    }

    /// A factory from a registry constructor (`strata_vfs::init`): the case root becomes
    /// `DriverConfig.root`, with no daemon-wide storage options.
    pub fn from_init<F>(name: &str, init: F) -> Self
    where
        F: Fn(DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>>
            + Send
            + Sync
            + 'static,
    {
        Self::new(name, move |root| {
            init(DriverConfig {
                root,
                options: StorageOpts::default(),
            })
        })
    }

    /// Runs every case on a fresh loop-mounted filesystem of this kind.
    pub fn on_loop_fs(mut self, fs: LoopFs) -> Self {
        self.environment = EnvironmentSpec::LoopFs(fs);
        self
    }

    pub fn into_arc(self) -> Arc<dyn DriverFactory> {
        Arc::new(self)
    }
}

#[async_trait]
impl DriverFactory for LayerFactory {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        self.environment.prepare(&self.name).await
    }

    async fn open(&self, root: &Path) -> Result<Arc<dyn LayerDriver>> {
        (self.open)(root.to_path_buf()).await
    }
}

/// Makes volume drivers for the volume suite, as [`DriverFactory`] does for layers.
#[async_trait]
pub trait VolumeFactory: Send + Sync {
    fn name(&self) -> &str;

    /// Whether the driver takes the `local` driver's mount options (`type`, `device`, `o`);
    /// cases that need them are not applicable otherwise.
    fn local_options(&self) -> bool {
        false
    }

    /// Why the suite cannot open a second driver on a case's root that amounts to a restart
    /// (cases that need one are not applicable then), or `None` when it can.
    fn cannot_restart(&self) -> Option<String> {
        None
    }

    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        EnvironmentSpec::TempDir.prepare(self.name()).await
    }

    async fn open(&self, root: &Path) -> Result<Arc<dyn VolumeDriver>>;
}

pub type OpenVolumeDriver =
    Arc<dyn Fn(PathBuf) -> BoxFuture<'static, Result<Arc<dyn VolumeDriver>>> + Send + Sync>;

/// A [`VolumeFactory`] from a name and an open function.
pub struct VolumeDriverFactory {
    name: String,
    local_options: bool,
    open: OpenVolumeDriver,
}

impl VolumeDriverFactory {
    pub fn new<F, Fut>(name: &str, open: F) -> Self
    where
        F: Fn(PathBuf) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn VolumeDriver>>> + Send + 'static,
    {
        Self {
            name: name.to_string(),
            local_options: false,
            open: Arc::new(move |root| Box::pin(open(root))),
        }
    }

    /// Declares that the driver takes the local driver's `type`/`device`/`o` options.
    pub fn with_local_options(mut self) -> Self {
        self.local_options = true;
        self
    }

    pub fn into_arc(self) -> Arc<dyn VolumeFactory> {
        Arc::new(self)
    }
}

#[async_trait]
impl VolumeFactory for VolumeDriverFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn local_options(&self) -> bool {
        self.local_options
    }

    async fn open(&self, root: &Path) -> Result<Arc<dyn VolumeDriver>> {
        (self.open)(root.to_path_buf()).await
    }
}
