//! Plugins under the suite: factories that drive a layer-driver or volume plugin through core's
//! protocol clients ([`GraphDriverPlugin`], [`VolumeDriverPlugin`]), either on the socket of a
//! plugin someone else runs (`--graphdriver-plugin PATH`, `--volume-plugin PATH`) or on a
//! [`PluginServer`] started in this process for each case (the test target's `plugin-vfs`,
//! `plugin-loopvol`), so the suite, the client and the server are proven together.
//!
//! Restarts: a layer case's "new driver on the same root" is a new client connection whose
//! `GraphDriver.Init` gives the same home; the plugin keeps running and opens its driver afresh
//! on that home, as it must when the engine restarts. A volume plugin has no Init: in process,
//! the suite restarts the plugin itself (a new driver on the same root behind a new server);
//! a plugin it does not run cannot be restarted, so `restart_keeps_volumes` is not applicable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use strata_core::{Error, LayerDriver, Result, VolumeDriver};
use strata_plugin::{
    serve, GraphDriverPlugin, GraphFactory, PluginAddr, PluginServer, Transport, VolumeDriverPlugin,
};
use tokio::task::JoinHandle;

use crate::env::{DriverFactory, Environment, EnvironmentSpec, OpenVolumeDriver, VolumeFactory};

/// The socket of an in-process server, beside the case's `root` and `scratch`.
const SOCKET_NAME: &str = "plugin.sock";

fn in_process_socket(root: &Path) -> Result<PathBuf> {
    root.parent()
        .map(|dir| dir.join(SOCKET_NAME))
        .ok_or_else(|| Error::invalid(format!("{} has no parent directory", root.display())))
}

/// A plugin's name as the engine would know it: its socket's file name without `.sock`.
fn name_of_socket(socket: &Path) -> String {
    socket
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "plugin".into())
}

/// The server task of an in-process plugin; stopped when replaced or dropped.
#[derive(Default)]
struct ServerSlot(Mutex<Option<JoinHandle<Result<()>>>>);

impl ServerSlot {
    /// Binds `socket` now (so a client may connect at once) and serves `server` on it,
    /// stopping the server that ran here before.
    fn start(&self, server: PluginServer, socket: &Path) -> Result<()> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            old.abort();
        }
        match std::fs::remove_file(socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("remove", socket, e)),
        }
        let listener =
            tokio::net::UnixListener::bind(socket).map_err(|e| Error::io("bind", socket, e))?;
        *slot = Some(tokio::spawn(serve(Arc::new(server), listener)));
        Ok(())
    }
}

impl Drop for ServerSlot {
    fn drop(&mut self) {
        if let Some(task) = self.0.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// A case's environment with the in-process plugin serving it. The server stops before the
/// environment unmounts and deletes its directory.
struct ServedEnvironment {
    server: Arc<ServerSlot>,
    env: Box<dyn Environment>,
}

impl Environment for ServedEnvironment {
    fn root(&self) -> &Path {
        self.env.root()
    }

    fn scratch(&self) -> &Path {
        self.env.scratch()
    }
}

impl Drop for ServedEnvironment {
    fn drop(&mut self) {
        if let Some(task) = self
            .server
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            task.abort();
        }
    }
}

enum GraphSource {
    External(PathBuf),
    InProcess(GraphFactory),
}

/// A graphdriver plugin under the suite. Each case's root is the home given with
/// `GraphDriver.Init`, so everything the plugin stores or mounts lies under the case's
/// environment, which unmounts it when dropped.
pub struct GraphPluginFactory {
    name: String,
    source: GraphSource,
}

impl GraphPluginFactory {
    /// The plugin listening on `socket`, named after it (`vfs-plugin.sock`: `vfs-plugin`).
    pub fn external(socket: &Path) -> Self {
        Self {
            name: name_of_socket(socket),
            source: GraphSource::External(socket.to_path_buf()),
        }
    }

    /// A [`PluginServer`] of `factory`, started on a socket in each case's environment. The
    /// client is named `name` (rows read `NAME::CASE`).
    pub fn in_process(name: &str, factory: GraphFactory) -> Self {
        Self {
            name: name.to_string(),
            source: GraphSource::InProcess(factory),
        }
    }

    pub fn into_arc(self) -> Arc<dyn DriverFactory> {
        Arc::new(self)
    }
}

#[async_trait]
impl DriverFactory for GraphPluginFactory {
    fn name(&self) -> &str {
        &self.name
    }

    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        let env = EnvironmentSpec::TempDir.prepare(&self.name).await?;
        let GraphSource::InProcess(factory) = &self.source else {
            return Ok(env);
        };
        let server = Arc::new(ServerSlot::default());
        server.start(
            PluginServer::graph_driver(factory.clone()),
            &in_process_socket(env.root())?,
        )?;
        Ok(Box::new(ServedEnvironment { server, env }))
    }

    /// Connects and gives the plugin `root` as its home; called again on the same root, the
    /// plugin (still running) opens its driver afresh there.
    async fn open(&self, root: &Path) -> Result<Arc<dyn LayerDriver>> {
        let socket = match &self.source {
            GraphSource::External(socket) => socket.clone(),
            GraphSource::InProcess(_) => in_process_socket(root)?,
        };
        let transport = Transport::new(self.name.clone(), PluginAddr::Unix(socket));
        let plugin = GraphDriverPlugin::connect(transport, root.to_path_buf(), Vec::new()).await?;
        Ok(Arc::new(plugin))
    }
}

enum VolumeSource {
    External(PathBuf),
    /// Opens the volume driver on a case's root; each open is a restart of the plugin.
    InProcess(OpenVolumeDriver),
}

/// A volume plugin under the suite.
///
/// In process, the plugin's storage root is the case's root, so the suite's checks of the root
/// (nothing created by refused operations, nothing left mounted) see the plugin's own files.
/// A plugin on an external socket keeps one root for all cases, which the suite does not know:
/// the runner removes the volumes each case created, checks the paths `mount` returned rather
/// than the root for leftover mounts, and the plugin must start with no volumes.
pub struct VolumePluginFactory {
    name: String,
    source: VolumeSource,
    /// The server of each live in-process environment, by root.
    servers: Mutex<HashMap<PathBuf, Weak<ServerSlot>>>,
}

impl VolumePluginFactory {
    pub fn external(socket: &Path) -> Self {
        Self {
            name: name_of_socket(socket),
            source: VolumeSource::External(socket.to_path_buf()),
            servers: Mutex::default(),
        }
    }

    /// A [`PluginServer`] of the driver `open` makes on a case's root, restarted (a new driver
    /// behind a new server on the same socket) each time the suite reopens the driver.
    pub fn in_process<F, Fut>(name: &str, open: F) -> Self
    where
        F: Fn(PathBuf) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<Arc<dyn VolumeDriver>>> + Send + 'static,
    {
        Self {
            name: name.to_string(),
            source: VolumeSource::InProcess(Arc::new(move |root| Box::pin(open(root)))),
            servers: Mutex::default(),
        }
    }

    pub fn into_arc(self) -> Arc<dyn VolumeFactory> {
        Arc::new(self)
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Weak<ServerSlot>>> {
        self.servers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl VolumeFactory for VolumePluginFactory {
    fn name(&self) -> &str {
        &self.name
    }

    fn cannot_restart(&self) -> Option<String> {
        match self.source {
            VolumeSource::External(_) => Some(
                "the plugin runs outside the suite, which cannot restart it (a new connection \
                 to the same process would prove nothing about restarts)"
                    .into(),
            ),
            VolumeSource::InProcess(_) => None,
        }
    }

    async fn prepare(&self) -> Result<Box<dyn Environment>> {
        let env = EnvironmentSpec::TempDir.prepare(&self.name).await?;
        if let VolumeSource::External(_) = self.source {
            return Ok(env);
        }
        let server = Arc::new(ServerSlot::default());
        let mut servers = self.servers();
        servers.retain(|_, slot| slot.strong_count() > 0);
        servers.insert(env.root().to_path_buf(), Arc::downgrade(&server));
        Ok(Box::new(ServedEnvironment { server, env }))
    }

    async fn open(&self, root: &Path) -> Result<Arc<dyn VolumeDriver>> {
        let (socket, scope) = match &self.source {
            VolumeSource::External(socket) => (socket.clone(), None),
            VolumeSource::InProcess(open) => {
                let server = self
                    .servers()
                    .get(root)
                    .and_then(Weak::upgrade)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "{} is not an environment this factory prepared",
                            root.display()
                        ))
                    })?;
                let socket = in_process_socket(root)?;
                // The old plugin stops before the new driver opens on its root.
                if let Some(old) = server.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    old.abort();
                }
                let driver = open(root.to_path_buf()).await?;
                server.start(PluginServer::volume_driver(driver), &socket)?;
                (socket, Some(root.to_path_buf()))
            }
        };
        let transport = Transport::new(self.name.clone(), PluginAddr::Unix(socket));
        Ok(Arc::new(
            VolumeDriverPlugin::connect(transport, scope).await?,
        ))
    }
}
