//! The container's runtime state, kept as `state.json` in its directory so `inspect` and a
//! restarted daemon can read it (Docker's `State` object: Status, Running, Pid, ExitCode,
//! OOMKilled, Error, StartedAt, FinishedAt).

use std::path::Path;

use serde::{Deserialize, Serialize};
use strata_core::fsutil::atomic_write;
use strata_core::{Error, IoContext, Result};

pub const STATE_FILE: &str = "state.json";

/// Go's zero time, as Docker prints a time that has not happened.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// "running" or "exited".
    pub status: String,
    pub running: bool,
    pub pid: i32,
    pub exit_code: i32,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub error: String,
    pub started_at: String,
    pub finished_at: String,
}

impl ContainerState {
    pub fn running(pid: i32, started_at: String) -> Self {
        ContainerState {
            status: "running".into(),
            running: true,
            pid,
            exit_code: 0,
            oom_killed: false,
            error: String::new(),
            started_at,
            finished_at: ZERO_TIME.into(),
        }
    }

    pub fn save(&self, container_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Other(format!("encode state: {e}")))?;
        atomic_write(&container_dir.join(STATE_FILE), &json)
    }

    pub fn load(container_dir: &Path) -> Result<ContainerState> {
        let path = container_dir.join(STATE_FILE);
        let text = std::fs::read(&path).ctx("read", &path)?;
        serde_json::from_slice(&text)
            .map_err(|e| Error::Other(format!("{}: corrupt state: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_docker_field_names() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContainerState::running(42, "2026-11-28T00:00:00Z".into());
        s.save(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
        assert!(text.contains("\"OOMKilled\": false"));
        assert!(text.contains("\"FinishedAt\": \"0001-01-01T00:00:00Z\""));
        assert_eq!(ContainerState::load(dir.path()).unwrap(), s);
    }
}
