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
mod layer_mounts;
mod layout;
mod mount;
mod native_diff;
mod probe;
mod quota;
mod recovery;

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use strata_core::driverkit::{run_blocking, Blocking};
use strata_core::registry::DriverConfig;
use strata_core::{Error, LayerDriver, LayerId, Result, StorageOpts};

pub use driver::{Overlay2, Settings};
pub use mount::MountApi;

/// The name `--storage-driver` uses.
pub const NAME: &str = "overlay2";

const OPTIONS: [&str; 3] = ["overlay2.naive_diff", "overlay2.size", "overlay2.mount_api"];

/// The name of the forced-naive variant the conformance suite runs beside `overlay2`.
pub const NAIVE_NAME: &str = "overlay2-naive";

/// The overlay2 driver as the registry and the daemon use it: blocking code on the kit's
/// adapter.
pub type Overlay2Driver = Blocking<Overlay2>;

/// The registry's constructor: `init(config)` opens the driver in `config.root`.
pub fn init(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let driver = open(config.root, &config.options).await?;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}

/// overlay2 with the naive diff forced on, under its own name ([`NAIVE_NAME`]), so the
/// conformance suite can hold both diff paths to the same results.
pub fn init_naive(config: DriverConfig) -> BoxFuture<'static, Result<Arc<dyn LayerDriver>>> {
    Box::pin(async move {
        let mut settings = parse_settings(&config.options)?;
        settings.naive_diff = true;
        let driver = open_named(config.root, settings, NAIVE_NAME).await?;
        Ok(Arc::new(driver) as Arc<dyn LayerDriver>)
    })
}

/// Opens the driver in `root` with daemon options `options`.
pub async fn open(root: PathBuf, options: &StorageOpts) -> Result<Overlay2Driver> {
    open_with(root, parse_settings(options)?).await
}

pub async fn open_with(root: PathBuf, settings: Settings) -> Result<Overlay2Driver> {
    open_named(root, settings, NAME).await
}

async fn open_named(
    root: PathBuf,
    settings: Settings,
    name: &'static str,
) -> Result<Overlay2Driver> {
    let driver = run_blocking(move || Overlay2::open(root, settings, name)).await?;
    Ok(Blocking::new(Arc::new(driver)))
}

/// Parses the `overlay2.*` daemon options.
pub fn parse_settings(options: &StorageOpts) -> Result<Settings> {
    options.check_known(NAME, &OPTIONS)?;
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
        naive_diff: options.flag("overlay2.naive_diff", false)?,
        default_size: options.bytes("overlay2.size")?,
        mount_api,
    })
}

impl Overlay2 {
    /// The quota currently set on a layer, in bytes (for tests and `inspect`).
    pub fn quota_limit(&self, id: &LayerId) -> Result<u64> {
        let control = self
            .quota
            .as_ref()
            .map_err(|e| Error::unsupported(e.clone()))?;
        control.limit_of(&self.layout().layer_dir(id))
    }

    /// The driver root (`<data-root>/overlay2`, resolved).
    pub fn root(&self) -> PathBuf {
        self.layout().root().to_path_buf()
    }
}
