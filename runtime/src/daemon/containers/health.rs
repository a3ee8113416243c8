//! Healthchecks (`HEALTHCHECK`, `--health-cmd` and the other `--health-*` flags), as Docker
//! runs them: while the container runs, its test command is executed inside it every
//! interval (default 30 s) with a timeout (default 30 s); `retries` (default 3) failures in a
//! row make it `unhealthy`, one success `healthy`; failures during the start period do not
//! count. The status and the last five probes are in inspect's `State.Health`; a change of
//! status is a `health_status: ...` event.

use std::sync::Arc;
use std::time::Duration;

use strata_api_types::container::{Health, HealthLogEntry};
use strata_api_types::HealthConfig;
use tokio::io::AsyncReadExt;

use super::exec::{ExecOptions, Started};
use super::Container;
use crate::daemon::Daemon;

const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in `State.Health.Log`, and output bytes kept per probe (Docker's figures).
const KEPT_PROBES: usize = 5;
const KEPT_OUTPUT: usize = 4096;

/// The command a healthcheck runs, or None when there is none (`NONE`, or no test).
pub fn probe_command(config: &HealthConfig) -> Option<Vec<String>> {
    let test = config.test.as_deref()?;
    match test.split_first()? {
        (kind, rest) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
        (kind, [cmd]) if kind == "CMD-SHELL" => {
            Some(vec!["/bin/sh".into(), "-c".into(), cmd.clone()])
        }
        _ => None,
    }
}

fn duration_or(ns: i64, default: Duration) -> Duration {
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        default
    }
}

/// Starts probing a container that just started, if it has a healthcheck. The loop ends when
/// this run of the container ends.
pub fn watch(d: &Arc<Daemon>, c: &Arc<Container>) {
    let config = c.snapshot().config.healthcheck.clone().unwrap_or_default();
    let Some(cmd) = probe_command(&config) else {
        return;
    };
    let run = *c.starts.borrow();
    c.record().state.health = Some(Health {
        status: "starting".into(),
        ..Health::default()
    });
    let (d, c) = (d.clone(), c.clone());
    tokio::spawn(async move {
        let interval = duration_or(config.interval, DEFAULT_INTERVAL);
        let timeout = duration_or(config.timeout, DEFAULT_TIMEOUT);
        let start_period = duration_or(config.start_period, Duration::ZERO);
        let retries = if config.retries > 0 {
            config.retries as u32
        } else {
            DEFAULT_RETRIES
        };
        let started = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(interval).await;
            if c.running().is_none() || *c.starts.borrow() != run {
                return;
            }
            let entry = probe(&d, &c, &cmd, timeout).await;
            let in_start_period = started.elapsed() < start_period;
            record(&d, &c, entry, retries, in_start_period);
        }
    });
}

/// Runs the test once inside the container; exit code 0 is healthy.
async fn probe(d: &Daemon, c: &Container, cmd: &[String], timeout: Duration) -> HealthLogEntry {
    let start = crate::daemon::containers::lifecycle::now();
    let id = c.record().id.clone();
    let options = ExecOptions {
        cmd: cmd.to_vec(),
        attach_stdout: true,
        attach_stderr: true,
        ..ExecOptions::default()
    };
    let outcome = async {
        let exec_id = d.execs.create(&d.containers, &id, options)?;
        let claimed = d.execs.claim(&d.containers, &exec_id)?;
        let exec = d.execs.get(&exec_id)?;
        let result = match claimed.spawn(None).await {
            Started::Running(io) => {
                let mut output = Vec::new();
                let mut stdout = io.stdout;
                let _ = (&mut stdout)
                    .take(KEPT_OUTPUT as u64)
                    .read_to_end(&mut output)
                    .await;
                let code = tokio::time::timeout(timeout, exec.wait()).await.ok();
                (
                    code.map_or(-1, i64::from),
                    String::from_utf8_lossy(&output).into_owned(),
                )
            }
            Started::Failed(e) => (-1, e.to_string()),
        };
        d.execs.forget(&exec_id);
        Ok::<_, strata_core::Error>(result)
    };
    let (exit_code, output) = match tokio::time::timeout(timeout, outcome).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (-1, e.to_string()),
        Err(_) => (
            -1,
            format!("Health check exceeded timeout ({}s)", timeout.as_secs()),
        ),
    };
    HealthLogEntry {
        start,
        end: crate::daemon::containers::lifecycle::now(),
        exit_code,
        output,
    }
}

fn record(d: &Daemon, c: &Container, entry: HealthLogEntry, retries: u32, grace: bool) {
    let passed = entry.exit_code == 0;
    let (changed, status, rec) = {
        let mut r = c.record();
        let mut health = r.state.health.clone().unwrap_or_default();
        let before = health.status.clone();
        health.log.push(entry);
        if health.log.len() > KEPT_PROBES {
            health.log.remove(0);
        }
        if passed {
            health.failing_streak = 0;
            health.status = "healthy".into();
        } else if !grace {
            health.failing_streak += 1;
            if health.failing_streak >= retries {
                health.status = "unhealthy".into();
            }
        }
        let changed = health.status != before;
        let status = health.status.clone();
        r.state.health = Some(health);
        (changed, status, r.clone())
    };
    if changed {
        crate::daemon::events::emit_container(d, &format!("health_status: {status}"), &rec, &[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tests_read_as_dockers() {
        let cfg = |t: &[&str]| HealthConfig {
            test: Some(t.iter().map(|s| s.to_string()).collect()),
            ..HealthConfig::default()
        };
        assert_eq!(
            probe_command(&cfg(&["CMD", "true"])),
            Some(vec!["true".to_string()])
        );
        assert_eq!(
            probe_command(&cfg(&["CMD-SHELL", "exit 1"])),
            Some(vec!["/bin/sh".into(), "-c".into(), "exit 1".into()])
        );
        assert_eq!(probe_command(&cfg(&["NONE"])), None);
        assert_eq!(probe_command(&HealthConfig::default()), None);
    }
}
