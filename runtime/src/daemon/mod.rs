//! The daemon's state: the chosen layer driver, the stores and services above it, and their
//! start-up (recovery) and shutdown.

pub mod accounting;
pub mod builtins;
pub mod config;
pub mod containers;
pub mod driver_select;
pub mod events;
pub mod listen;
pub mod plugins;
mod scratch;
pub mod serve;
pub mod sizes;
pub mod tls;
pub mod volumes;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use strata_core::fsutil::atomic_write;
use strata_core::registry::DriverRegistry;
use strata_core::store::{ImageStore, LayerStore};
use strata_core::{IoContext, LayerDriver, StorageOpts, VolumeDriver};

pub use config::DaemonConfig;
use containers::Containers;
use sizes::SizeCache;
use volumes::VolumeService;

pub struct Daemon {
    pub config: DaemonConfig,
    pub data_root: PathBuf,
    pub driver: Arc<dyn LayerDriver>,
    pub layers: LayerStore,
    pub images: ImageStore,
    pub containers: Containers,
    pub volumes: VolumeService,
    pub sizes: SizeCache,
    /// `docker exec` instances of the running containers.
    pub execs: containers::exec::Execs,
    /// What happened, for `docker events`.
    pub events: events::Events,
    /// Set when shutdown begins: its stops are not the user's (restart policies hold at the
    /// next start) and schedule no restart.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// Plugins found at start-up, for `info`.
    pub plugins: plugins::PluginInventory,
    /// Stable engine id shown by `info`.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Select(#[from] driver_select::SelectError),
    #[error(transparent)]
    Core(#[from] strata_core::Error),
}

impl Daemon {
    pub async fn start(
        config: DaemonConfig,
        registry: &DriverRegistry,
        volume_drivers: BTreeMap<String, Arc<dyn VolumeDriver>>,
    ) -> Result<Arc<Self>, StartError> {
        let data_root = config.data_root.clone();
        std::fs::create_dir_all(&data_root).ctx("create", &data_root)?;
        let cleaned = scratch::clean_at_start(&data_root)?;
        if cleaned > 0 {
            tracing::info!("removed {cleaned} scratch entr(y/ies) left by interrupted operations");
        }
        let options = StorageOpts::parse(&config.storage_opts)?;
        let plugin_dirs = config.plugin_dirs();
        let plugins = plugins::inventory(&plugin_dirs).await;
        let driver = driver_select::select_driver(
            registry,
            &plugin_dirs,
            &data_root,
            config.storage_driver.as_deref(),
            &options,
        )
        .await?;
        // Mark the data root as this driver's, so a later start with another is refused.
        let image_dir = data_root.join("image").join(driver.name());
        std::fs::create_dir_all(&image_dir).ctx("create", &image_dir)?;
        let layers = LayerStore::open(&image_dir, driver.clone()).await?;
        let images = ImageStore::open(&image_dir, layers.clone()).await?;
        let containers =
            Containers::open(data_root.join("containers"), layers.clone(), images.clone()).await?;
        // Read-write layers whose container record was never written (a crash during create)
        // or whose build step never finished, then the layers that only they, an interrupted
        // load or a removed container held.
        let unowned = layers
            .remove_unowned_rw(|id| containers.owns_layer_of(id))
            .await?;
        if !unowned.is_empty() {
            tracing::info!(
                "removed {} read-write layer(s) no container owns",
                unowned.len()
            );
        }
        let swept = layers.release_unreferenced().await?;
        if !swept.is_empty() {
            tracing::info!(
                "removed {} unreferenced layer(s) left by an interrupted operation",
                swept.len()
            );
        }
        let volumes =
            VolumeService::new(data_root.join("volume-meta"), volume_drivers, plugin_dirs)?;
        for name in &plugins.volume {
            if let Err(e) = volumes.connect_plugin(name).await {
                tracing::warn!(plugin = %name, "volume plugin not usable: {e}");
            }
        }
        let id = engine_id(&data_root)?;
        Ok(Arc::new(Self {
            config,
            data_root,
            driver,
            layers,
            images,
            containers,
            volumes,
            sizes: SizeCache::default(),
            execs: Default::default(),
            events: Default::default(),
            shutting_down: Default::default(),
            plugins,
            id,
        }))
    }

    /// Runs what the daemon owes at start once it is up: containers whose restart policy
    /// says so start again.
    pub fn after_start(self: &Arc<Self>) {
        containers::restart::at_daemon_start(self);
    }

    /// Stops everything the daemon started and unmounts what it mounted, in bounded time
    /// (about 7 s at most): containers get their stop signal and at most
    /// `SHUTDOWN_STOP_GRACE` before SIGKILL; one whose stop cannot run (its lock is held by
    /// an operation that is stuck) is killed directly. We do not live-restore, so nothing is
    /// left running.
    pub async fn shutdown(self: &Arc<Self>) {
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let stops = self
            .containers
            .all()
            .into_iter()
            .filter(|c| c.is_running())
            .map(|c| self.stop_for_shutdown(c));
        futures::future::join_all(stops).await;
        // Unmounts handed to the runtime by dropped mount guards finish before the driver's
        // cleanup, which would otherwise race them.
        if !self.layers.settle_unmounts(SHUTDOWN_CLEANUP_LIMIT).await {
            tracing::warn!("some layer unmounts did not finish in time; the driver cleans up");
        }
        match tokio::time::timeout(SHUTDOWN_CLEANUP_LIMIT, self.driver.cleanup()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("storage driver cleanup failed: {e}"),
            Err(_) => tracing::error!("storage driver cleanup did not finish in time"),
        }
    }

    async fn stop_for_shutdown(self: &Arc<Self>, c: Arc<containers::Container>) {
        let id = c.record().id.clone();
        let configured = c.snapshot().config.stop_timeout;
        let grace = configured
            .unwrap_or(SHUTDOWN_STOP_GRACE)
            .clamp(0, SHUTDOWN_STOP_GRACE);
        let stop = containers::lifecycle::stop(self, &id, None, Some(grace));
        match tokio::time::timeout(SHUTDOWN_STOP_LIMIT, stop).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(container = %id, "stop at shutdown failed: {e}"),
            Err(_) => {
                tracing::warn!(container = %id, "stop at shutdown timed out; killing it");
                if let Some(running) = c.running() {
                    let _ = running.kill(nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

/// Seconds a container gets between its stop signal and SIGKILL when the daemon stops.
const SHUTDOWN_STOP_GRACE: i64 = 4;
/// How long shutdown waits for a container's stop, lock included.
const SHUTDOWN_STOP_LIMIT: std::time::Duration = std::time::Duration::from_millis(5500);
/// How long the storage driver gets to unmount what is left.
const SHUTDOWN_CLEANUP_LIMIT: std::time::Duration = std::time::Duration::from_millis(1500);

/// The engine id, made once and kept in the data root.
fn engine_id(data_root: &std::path::Path) -> strata_core::Result<String> {
    let path = data_root.join("engine-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return Ok(id);
        }
    }
    let id = uuid_like()?;
    atomic_write(&path, id.as_bytes())?;
    Ok(id)
}

fn uuid_like() -> Result<String, strata_core::Error> {
    let mut b = [0u8; 16];
    strata_core::ids::fill_random(&mut b)?;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}
