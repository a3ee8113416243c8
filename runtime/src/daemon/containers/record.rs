//! A container's persistent record, kept in `<data-root>/containers/<id>/config.v2.json` and
//! rewritten atomically on every state change, so a restarted daemon lists every container with
//! its true state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
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
    pub config: serde_json::Value,
    /// Docker's `HostConfig`, as given.
    pub host_config: serde_json::Value,
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
                    strata_core::humanize::human_duration(
                        now.signed_duration_since(t.with_timezone(&chrono::Utc))
                            .num_seconds(),
                    )
                })
                .unwrap_or_else(|| "Less than a second".into())
        };
        match self.state.status {
            Status::Created => "Created".into(),
            Status::Running => format!("Up {}", since(&self.state.started_at)),
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
pub fn random_name() -> String {
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
    strata_core::ids::fill_random(&mut b);
    format!(
        "{}_{}",
        LEFT[b[0] as usize % LEFT.len()],
        RIGHT[b[1] as usize % RIGHT.len()]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("/web-1").unwrap(), "web-1");
        assert!(validate_name("../x").is_err());
        assert!(validate_name("a").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&random_name()).is_ok());
    }
}
