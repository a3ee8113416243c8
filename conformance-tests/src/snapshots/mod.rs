//! The layer-driver cases through containerd's Snapshots API (`--snapshotter SOCKET`, and the
//! test target's `snapshotter-DRIVER` entries, each a `strata-snapshotter` served in process on
//! the case's own root): a driver author sees their driver pass under containerd too.

mod driver;
mod mounting;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use strata_core::{Capabilities, CreateOpts, Error, LayerDriver, LayerId, Result};
use strata_snapshotter::client::connect;
use strata_snapshotter::drivers::DriverSource;
use strata_snapshotter::{server, StrataSnapshotter};
use tokio::sync::OnceCell;

pub use driver::SnapshotsDriver;

use crate::env::{DriverFactory, Environment, EnvironmentSpec, LoopFs};

enum Source {
    /// A snapshotter someone else runs; its driver's capabilities are probed once.
    External(PathBuf, OnceCell<Capabilities>),
    /// A built-in driver served in process, one snapshotter per case.
    InProcess(String),
}

pub struct SnapshotterFactory {
    name: String,
    source: Source,
}

const SOCKET: &str = "snapshotter.sock";

impl SnapshotterFactory {
    pub fn external(socket: &Path) -> Self {
        Self {
            name: "snapshotter".into(),
            source: Source::External(socket.into(), OnceCell::new()),
        }
    }

    pub fn in_process(driver: &str) -> Self {
        Self {
            name: format!("snapshotter-{driver}"),
            source: Source::InProcess(driver.into()),
        }
    }

    pub fn into_arc(self) -> Arc<dyn DriverFactory> {
        Arc::new(self)
    }

    fn socket(&self, root: &Path) -> Result<PathBuf> {
        match &self.source {
            Source::External(socket, _) => Ok(socket.clone()),
            Source::InProcess(_) => root
                .parent()
                .map(|d| d.join(SOCKET))
                .ok_or_else(|| Error::invalid("a case root without a parent")),
        }
    }
}

/// The case's environment with its snapshotter; the server stops before the directory goes.
struct Served {
    task: tokio::task::JoinHandle<()>,
    env: Box<dyn Environment>,
}

impl Environment for Served {
    fn root(&self) -> &Path {
        self.env.root()
    }
    fn scratch(&self) -> &Path {
        self.env.scratch()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_in_process(
    driver: &str,
    root: &Path,
    socket: &Path,
) -> Result<tokio::task::JoinHandle<()>> {
    let layers = root.join("layers");
    std::fs::create_dir_all(&layers).map_err(|e| Error::io("create", &layers, e))?;
    let d = DriverSource::Builtin(driver.into())
        .open(&layers, &[])
        .await?;
    let snap = StrataSnapshotter::open(d, &root.join("metadata.redb"))
        .await
        .map_err(|e| Error::Other(e.to_string()))?;
    let listener = server::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
    Ok(tokio::spawn(async move {
        if let Err(e) = server::serve(Arc::new(snap), listener, std::future::pending()).await {
            tracing::warn!("snapshotter: {e}");
        }
    }))
}

/// Whether a fresh child's usage excludes its parent's 1 MiB: the one capability the suite
/// reads that the Snapshots API cannot tell.
async fn probe(driver: &SnapshotsDriver) -> Result<Capabilities> {
    let (parent, child) = (LayerId::random()?, LayerId::random()?);
    driver
        .create(&parent, None, &CreateOpts::read_write())
        .await?;
    let path = driver.mount(&parent, "").await?;
    let written = std::fs::write(path.join("probe"), vec![7u8; 1 << 20]);
    driver.unmount(&parent).await?;
    written.map_err(|e| Error::io("write", path.join("probe"), e))?;
    driver
        .create(&child, Some(&parent), &CreateOpts::read_write())
        .await?;
    let shares = driver.usage(&child).await?.bytes < 512 << 10;
    driver.remove(&child).await?;
    driver.remove(&parent).await?;
    Ok(Capabilities {
        requires_root: true,
        layers_share_parent: shares,
        ..Capabilities::default()
    })
}

#[async_trait]
impl DriverFactory for SnapshotterFactory {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        let Source::InProcess(driver) = &self.source else {
            return EnvironmentSpec::TempDir.prepare(&self.name).await;
        };
        let spec = match driver.as_str() {
            "btrfs" => EnvironmentSpec::LoopFs(LoopFs::btrfs()),
            _ => EnvironmentSpec::TempDir,
        };
        let env = spec.prepare(&self.name).await?;
        let task = serve_in_process(driver, env.root(), &self.socket(env.root())?).await?;
        Ok(Box::new(Served { task, env }))
    }

    async fn open(&self, root: &Path) -> Result<Arc<dyn LayerDriver>> {
        let socket = self.socket(root)?;
        let client = connect(&socket)
            .await
            .map_err(|e| Error::Other(format!("connecting to {}: {e}", socket.display())))?;
        let caps = match &self.source {
            Source::InProcess(name) => in_process_capabilities(name),
            Source::External(_, caps) => {
                let probe_driver = SnapshotsDriver::new(
                    &self.name,
                    client.clone(),
                    Capabilities::default(),
                    root,
                )?;
                caps.get_or_try_init(|| probe(&probe_driver)).await?.clone()
            }
        };
        Ok(Arc::new(SnapshotsDriver::new(
            &self.name, client, caps, root,
        )?))
    }
}

/// What the suite may expect of a built-in driver behind the snapshotter: its sharing of
/// parent data; quotas and exact diffs do not cross the Snapshots API.
fn in_process_capabilities(driver: &str) -> Capabilities {
    Capabilities {
        requires_root: true,
        layers_share_parent: driver != "vfs",
        ..Capabilities::default()
    }
}
