//! `stratad`'s command line.

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "stratad",
    version,
    about = "The Strata container engine daemon"
)]
pub struct DaemonConfig {
    /// Root of persistent state (layers, images, containers, volumes).
    #[arg(long, default_value = "/var/lib/strata")]
    pub data_root: PathBuf,

    /// Root of runtime state (mount points of running containers, pid files).
    #[arg(long, default_value = "/run/strata")]
    pub exec_root: PathBuf,

    /// Storage driver: overlay2, btrfs, vfs, fuse-overlay, or a plugin's name. Default: the one
    /// the data root already holds, otherwise the first that works in that order.
    #[arg(short = 's', long = "storage-driver")]
    pub storage_driver: Option<String>,

    /// Storage driver options (key=value), e.g. size=10G.
    #[arg(long = "storage-opt")]
    pub storage_opts: Vec<String>,

    /// Where to listen: unix:///path or tcp://127.0.0.1:PORT (repeatable).
    #[arg(short = 'H', long = "host")]
    pub hosts: Vec<String>,

    /// File to write the daemon's pid to.
    #[arg(short = 'p', long, default_value = "/run/strata/stratad.pid")]
    pub pidfile: PathBuf,

    /// Log level: error, warn, info, debug, trace.
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,

    /// Where plugin sockets are looked for (NAME.sock or NAME/NAME.sock).
    #[arg(long, default_value = "/run/strata/plugins")]
    pub plugin_socket_dir: PathBuf,

    /// Where plugin specs are looked for (NAME.spec, NAME.json); repeatable.
    #[arg(long, default_values = ["/etc/strata/plugins", "/usr/lib/strata/plugins"])]
    pub plugin_spec_dir: Vec<PathBuf>,

    /// Registries reached without TLS verification, over plain HTTP if HTTPS fails:
    /// `host[:port]` or a CIDR range (repeatable). 127.0.0.0/8 and localhost always are.
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,

    /// Layers a pull downloads at once.
    #[arg(long, default_value_t = 3)]
    pub max_concurrent_downloads: usize,

    /// Per-registry CA certificates: DIR/<host[:port]>/*.crt (Docker's certs.d layout).
    #[arg(long, default_value = "/etc/strata/certs.d")]
    pub registry_certs_dir: PathBuf,

    /// Require TLS client certificates on TCP listeners.
    #[arg(long)]
    pub tlsverify: bool,
    #[arg(long)]
    pub tlscacert: Option<PathBuf>,
    #[arg(long)]
    pub tlscert: Option<PathBuf>,
    #[arg(long)]
    pub tlskey: Option<PathBuf>,
}

pub const DEFAULT_SOCKET: &str = "unix:///run/strata.sock";

impl DaemonConfig {
    pub fn plugin_dirs(&self) -> strata_plugin::PluginDirs {
        strata_plugin::PluginDirs {
            sockets: vec![self.plugin_socket_dir.clone()],
            specs: self.plugin_spec_dir.clone(),
        }
    }

    /// How the registry client reaches registries.
    pub fn registry_client(&self) -> strata_distribution::ClientConfig {
        strata_distribution::ClientConfig {
            insecure_registries: self.insecure_registries.clone(),
            certs_dir: self.registry_certs_dir.clone(),
            loopback_insecure: true,
        }
    }

    /// The listen addresses, with the default socket when none is given.
    pub fn listen_addresses(&self) -> Vec<String> {
        if self.hosts.is_empty() {
            vec![DEFAULT_SOCKET.to_string()]
        } else {
            self.hosts.clone()
        }
    }
}
