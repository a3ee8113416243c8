//! A container's persistent record, kept in `<data-root>/containers/<id>/config.v2.json` and
//! rewritten atomically on every state change, so a restarted daemon lists every container with
//! its true state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strata_api_types::serde_util::null_as_default;
use strata_api_types::{Config, HostConfig};
use strata_core::fsutil::{atomic_write, create_dir_durable};
use strata_core::{Error, IoContext, Result};

use super::mounts::MountRequest;

pub const RECORD_FILE: &str = "config.v2.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Exited,
    Removing,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Removing => "removing",
            Status::Dead => "dead",
        }
    }
}

/// Docker's `State` object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub exit_code: i32,
    pub oom_killed: bool,
    pub error: String,
    /// RFC 3339 with nanoseconds; Docker's zero time until set.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Who `pid` was, so recovery never signals a process that merely has the same number.
    #[serde(default)]
    pub process: Option<super::process_identity::ProcessIdentity>,
    /// The healthcheck's findings while the container runs with one.
    #[serde(default)]
    pub health: Option<strata_api_types::container::Health>,
}

pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A mount as resolved at start (volume created, path known): Docker's `MountPoint`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountPoint {
    pub kind: String,
    pub name: String,
    pub source: String,
    pub destination: String,
    pub driver: String,
    pub mode: String,
    pub rw: bool,
    pub propagation: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// Without the leading `/` that the API shows.
    pub name: String,
    pub created: String,
    pub path: String,
    pub args: Vec<String>,
    /// Docker's `Config`, with the image's defaults merged in, as inspect shows it.
    #[serde(deserialize_with = "null_as_default")]
    pub config: Config,
    /// Docker's `HostConfig`, as given (`NetworkMode` filled in).
    #[serde(deserialize_with = "null_as_default")]
    pub host_config: HostConfig,
    /// `sha256:...` of the image.
    pub image_id: String,
    /// The image as the user named it (shown by `ps`).
    pub image_ref: String,
    /// The driver's id of the container's read-write layer.
    pub rw_layer: String,
    pub mount_requests: Vec<MountRequest>,
    pub mounts: Vec<MountPoint>,
    pub state: State,
    pub restart_count: u32,
    pub auto_remove: bool,
    /// Stopped by `docker stop` or `kill`: no restart policy starts it again.
    #[serde(default)]
    pub manually_stopped: bool,
    /// Waiting for a restart by policy (inspect's `Restarting`).
    #[serde(default)]
    pub restarting: bool,
    /// The last delay before a restart by policy, in ms (0: none yet).
    #[serde(default)]
    pub restart_delay_ms: u64,
    /// Sizes of the read-write layer measured when the container last stopped (or was
    /// created): a stopped container cannot change, so `system df` reads these.
    #[serde(default)]
    pub sizes: Option<RecordedSizes>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedSizes {
    pub size_rw: u64,
    pub on_disk: u64,
}

impl ContainerRecord {
    pub fn dir(containers_root: &Path, id: &str) -> PathBuf {
        containers_root.join(id)
    }

    /// Writes the record atomically (unique temporary file, fsync, rename, fsync of the
    /// directory). Callers hold the container's record lock, which serialises the writes of
    /// one record.
    pub fn save(&self, containers_root: &Path) -> Result<()> {
        let dir = Self::dir(containers_root, &self.id);
        create_dir_durable(&dir)?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Other(format!("encode container {}: {e}", self.id)))?;
        atomic_write(&dir.join(RECORD_FILE), &bytes)
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(RECORD_FILE);
        let bytes = std::fs::read(&path).ctx("read", &path)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Other(format!("{}: corrupt container record: {e}", path.display())))
    }

    /// Docker's `Status` column: "Up 3 minutes", "Exited (0) 2 seconds ago", "Created".
    pub fn status_text(&self, now: chrono::DateTime<chrono::Utc>) -> String {
        let since = |t: &Option<String>| {
            t.as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| {
                    strata_api_types::humanize::human_duration(
                        now.signed_duration_since(t.with_timezone(&chrono::Utc))
                            .num_seconds(),
                    )
                })
                .unwrap_or_else(|| "Less than a second".into())
        };
        match self.state.status {
            Status::Created => "Created".into(),
            Status::Running => {
                let up = format!("Up {}", since(&self.state.started_at));
                match &self.state.health {
                    // As Docker: "Up 3 minutes (healthy)", "(health: starting)".
                    Some(h) if h.status == "starting" => format!("{up} (health: starting)"),
                    Some(h) => format!("{up} ({})", h.status),
                    None => up,
                }
            }
            Status::Exited => format!(
                "Exited ({}) {} ago",
                self.state.exit_code,
                since(&self.state.finished_at)
            ),
            Status::Removing => "Removal In Progress".into(),
            Status::Dead => "Dead".into(),
        }
    }
}

/// Docker's container name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, leading `/` allowed.
pub fn validate_name(name: &str) -> Result<String> {
    let n = name.strip_prefix('/').unwrap_or(name);
    let ok = n.len() >= 2
        && n.len() <= 255
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(n.to_string())
    } else {
        Err(Error::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}

/// A Docker-style random name (`adjective_name`), for containers created without `--name`.
pub fn random_name() -> Result<String> {
    const LEFT: &[&str] = &[
        "agile", "bold", "brave", "calm", "clever", "eager", "fervent", "gentle", "happy", "jolly",
        "keen", "lucid", "merry", "nifty", "quirky", "serene", "sharp", "stoic", "sweet", "witty",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermi", "galois", "hopper", "kepler", "lovelace",
        "noether", "pascal", "ritchie", "shannon", "tesla", "thompson", "turing", "wozniak",
        "yalow", "zuse", "hamilton",
    ];
    let mut b = [0u8; 2];
    strata_core::ids::fill_random(&mut b)?;
    Ok(format!(
        "{}_{}",
        LEFT[b[0] as usize % LEFT.len()],
        RIGHT[b[1] as usize % RIGHT.len()]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as HEAD a89d5c7 wrote it (`Config` and `HostConfig` kept as untyped JSON: the
    /// docker CLI 28's `run -v /data --memory 64m --cap-drop ALL --log-opt max-size=1m` body
    /// with the image's defaults merged in, keys sorted), plus a field Docker's API does not
    /// have, which the old code kept and the typed record drops.
    const HEAD_RECORD: &str = r#"{
  "id": "4f1c0e",
  "name": "brave_turing",
  "created": "2026-12-07T20:00:00.123456789Z",
  "path": "sh",
  "args": ["-c", "sleep 1"],
  "config": {
    "AttachStderr": true, "AttachStdin": false, "AttachStdout": true,
    "Cmd": ["sh", "-c", "sleep 1"], "Domainname": "", "Entrypoint": null,
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
    "Hostname": "", "Image": "bb", "Labels": {"a": "b"}, "OnBuild": null,
    "OpenStdin": false, "StdinOnce": false, "StopSignal": "SIGQUIT", "Tty": false,
    "User": "", "Volumes": {"/data": {}}, "WorkingDir": "", "XNotDocker": 1
  },
  "host_config": {
    "AutoRemove": false, "Binds": null, "BlkioDeviceReadBps": [],
    "BlkioDeviceReadIOps": [], "BlkioDeviceWriteBps": [], "BlkioDeviceWriteIOps": [],
    "BlkioWeight": 0, "BlkioWeightDevice": [], "CapAdd": null, "CapDrop": ["ALL"],
    "Cgroup": "", "CgroupParent": "", "CgroupnsMode": "", "ConsoleSize": [0, 0],
    "ContainerIDFile": "", "CpuCount": 0, "CpuPercent": 0, "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpuShares": 0, "CpusetCpus": "",
    "CpusetMems": "", "DeviceCgroupRules": null, "DeviceRequests": null, "Devices": [],
    "Dns": [], "DnsOptions": [], "DnsSearch": [], "ExtraHosts": null, "GroupAdd": null,
    "IOMaximumBandwidth": 0, "IOMaximumIOps": 0, "IpcMode": "", "Isolation": "",
    "Links": null, "LogConfig": {"Config": {"max-size": "1m"}, "Type": ""},
    "MaskedPaths": null, "Memory": 67108864, "MemoryReservation": 0, "MemorySwap": -1,
    "MemorySwappiness": -1, "NanoCpus": 0, "NetworkMode": "none", "OomKillDisable": false,
    "OomScoreAdj": 0, "PidMode": "", "PidsLimit": 0, "PortBindings": {},
    "Privileged": false, "PublishAllPorts": false, "ReadonlyPaths": null,
    "ReadonlyRootfs": false, "RestartPolicy": {"MaximumRetryCount": 0, "Name": "no"},
    "SecurityOpt": null, "ShmSize": 0, "UTSMode": "", "Ulimits": [], "UsernsMode": "",
    "VolumeDriver": "", "VolumesFrom": null
  },
  "image_id": "sha256:aa",
  "image_ref": "bb",
  "rw_layer": "4f1c0e",
  "mount_requests": [{"Type": "volume", "name": null, "target": "/data", "read_only": false,
    "driver": null, "driver_opts": {}, "nocopy": false}],
  "mounts": [],
  "state": {"status": "exited", "pid": 0, "exit_code": 0, "oom_killed": false, "error": "",
    "started_at": "2026-12-07T20:00:01Z", "finished_at": "2026-12-07T20:00:02Z",
    "process": null},
  "restart_count": 0,
  "auto_remove": false
}"#;

    /// Guards the move to a typed record: a record written by HEAD loads, and the fields
    /// start reads come out typed.
    #[test]
    fn record_written_by_head_loads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), HEAD_RECORD).unwrap();
        let rec = ContainerRecord::load(dir.path()).unwrap();
        assert_eq!(rec.config.cmd.as_deref().unwrap(), ["sh", "-c", "sleep 1"]);
        assert_eq!(rec.config.stop_signal, "SIGQUIT");
        assert!(rec.config.volumes.as_ref().unwrap().contains_key("/data"));
        assert_eq!(rec.config.labels.as_ref().unwrap()["a"], "b");
        let hc = &rec.host_config;
        assert_eq!((hc.memory, hc.memory_swap), (64 << 20, -1));
        assert_eq!(hc.cap_drop.as_deref().unwrap(), ["ALL"]);
        assert_eq!(hc.network_mode, "none");
        assert_eq!(hc.log_config.config.as_ref().unwrap()["max-size"], "1m");
        assert_eq!(rec.state.status, Status::Exited);
        // Saved again, it loads to the same record.
        let again: ContainerRecord =
            serde_json::from_slice(&serde_json::to_vec(&rec).unwrap()).unwrap();
        assert_eq!(again.config, rec.config);
        assert_eq!(again.host_config, rec.host_config);
    }

    /// A record whose create body had `"HostConfig": null` kept `null`.
    #[test]
    fn record_with_null_host_config_loads() {
        let mut v: serde_json::Value = serde_json::from_str(HEAD_RECORD).unwrap();
        v["host_config"] = serde_json::Value::Null;
        let rec: ContainerRecord = serde_json::from_value(v).unwrap();
        assert_eq!(rec.host_config, HostConfig::default());
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("/web-1").unwrap(), "web-1");
        assert!(validate_name("../x").is_err());
        assert!(validate_name("a").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&random_name().unwrap()).is_ok());
    }
}
