//! The overlay2 layer driver: kernel overlayfs in Docker's overlay2 layout (see DESIGN.md and
//! `layout.rs`). Beyond Docker: stacks up to the kernel's 500 lowers with the new mount API,
//! a native diff that lists exactly what the naive walk lists, and crash recovery at start-up.
//!
//! Driver options (`--storage-opt`): `overlay2.naive_diff=true` (always walk both trees),
//! `overlay2.size=SIZE` (default quota of read-write layers), `overlay2.mount_api=legacy|new`
//! (force a mount method instead of detecting it).
//!
//! Not done: SELinux mount labels (`mount_label` is ignored; this host has no SELinux) and
//! user-namespace (`userxattr`) mounts; the driver needs root in the initial namespace.

mod diff_ops;
mod driver;
mod layout;
mod mount;
mod native_diff;
mod probe;
mod quota;
mod recovery;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use strata_core::registry::DriverConfig;
use strata_core::{
    Capabilities, Change, CreateOpts, Error, LayerDriver, LayerId, MountSpec, Result, StorageOpts,
    TarStream, Usage,
};

pub use driver::Settings;
pub use mount::MountApi;

/// The name `--storage-driver` uses.
pub const NAME: &str = "overlay2";

const OPTIONS: [&str; 3] = ["overlay2.naive_diff", "overlay2.size", "overlay2.mount_api"];

/// The name of the forced-naive variant the conformance suite runs beside `overlay2`.
pub const NAIVE_NAME: &str = "overlay2-naive";

/// The overlay2 driver as the registry and the daemon use it.
pub struct Overlay2Driver {
    inner: Arc<driver::Overlay2>,
    name: &'static str,
}

/// The registry's constructor: `init(config)` opens the driver in `config.root`.
pub fn init(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let driver = Overlay2Driver::open(config.root, &config.options).await?;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}

/// overlay2 with the naive diff forced on, under its own name ([`NAIVE_NAME`]), so the
/// conformance suite can hold both diff paths to the same results.
pub fn init_naive(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let mut settings = parse_settings(&config.options)?;
        settings.naive_diff = true;
        let mut driver = Overlay2Driver::with_settings(config.root, settings).await?;
        driver.name = NAIVE_NAME;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}

/// Parses the `overlay2.*` daemon options.
pub fn parse_settings(options: &StorageOpts) -> Result<Settings> {
    options.check_known(NAME, &OPTIONS)?;
    let naive_diff = match options.get("overlay2.naive_diff") {
        None => false,
        Some(v) => parse_bool("overlay2.naive_diff", v)?,
    };
    let default_size = options
        .get("overlay2.size")
        .map(strata_core::options::parse_bytes)
        .transpose()?;
    let mount_api = match options.get("overlay2.mount_api") {
        None | Some("auto") => None,
        Some("new") => Some(MountApi::NewApi),
        Some("legacy") => Some(MountApi::Legacy),
        Some(other) => {
            return Err(Error::invalid(format!(
                "overlay2.mount_api={other:?} is not one of auto, new, legacy"
            )))
        }
    };
    Ok(Settings {
        naive_diff,
        default_size,
        mount_api,
    })
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err(Error::invalid(format!("{key}={v:?} is not true or false"))),
    }
}

impl Overlay2Driver {
    /// Opens the driver in `root` with daemon options `options`.
    pub async fn open(root: PathBuf, options: &StorageOpts) -> Result<Self> {
        let settings = parse_settings(options)?;
        Self::with_settings(root, settings).await
    }

    pub async fn with_settings(root: PathBuf, settings: Settings) -> Result<Self> {
        let inner =
            tokio::task::spawn_blocking(move || driver::Overlay2::open(root, settings)).await??;
        Ok(Self { inner, name: NAME })
    }

    /// Runs `f` on the blocking pool with the driver.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Arc<driver::Overlay2>) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner)).await?
    }

    /// The quota currently set on a layer, in bytes (for tests and `inspect`).
    pub async fn quota_limit(&self, id: &LayerId) -> Result<u64> {
        let id = id.clone();
        self.blocking(move |d| d.quota_limit(&id)).await
    }

    /// The driver root (`<data-root>/overlay2`, resolved).
    pub fn root(&self) -> PathBuf {
        self.inner.layout().root().to_path_buf()
    }
}

#[async_trait]
impl LayerDriver for Overlay2Driver {
    fn name(&self) -> &str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_diff: self.inner.native_diff(),
            quota: self.inner.supports_quota(),
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
        let (id, parent, opts) = (id.clone(), parent.cloned(), opts.clone());
        self.blocking(move |d| d.create(&id, parent.as_ref(), &opts))
            .await
    }

    async fn remove(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.blocking(move |d| d.remove(&id)).await
    }

    async fn exists(&self, id: &LayerId) -> Result<bool> {
        Ok(self.inner.exists(id))
    }

    async fn mount(&self, id: &LayerId, _mount_label: &str) -> Result<PathBuf> {
        let id = id.clone();
        self.blocking(move |d| d.get(&id)).await
    }

    async fn unmount(&self, id: &LayerId) -> Result<()> {
        let id = id.clone();
        self.blocking(move |d| d.put(&id)).await
    }

    async fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let id = id.clone();
        self.blocking(move |d| d.mount_spec(&id, read_only)).await
    }

    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>> {
        let (id, parent) = (id.clone(), parent.cloned());
        self.blocking(move |d| d.changes(&id, parent.as_ref()))
            .await
    }

    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        self.inner.diff(id, parent).await
    }

    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64> {
        self.inner.apply_diff(id, parent, tar).await
    }

    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let (id, parent) = (id.clone(), parent.cloned());
        self.blocking(move |d| d.diff_size(&id, parent.as_ref()))
            .await
    }

    async fn usage(&self, id: &LayerId) -> Result<Usage> {
        let id = id.clone();
        self.blocking(move |d| d.usage(&id)).await
    }

    async fn status(&self) -> Result<Vec<(String, String)>> {
        Ok(self.inner.status())
    }

    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>> {
        let id = id.clone();
        self.blocking(move |d| d.metadata(&id)).await
    }

    async fn cleanup(&self) -> Result<()> {
        self.blocking(|d| d.cleanup()).await
    }
}
