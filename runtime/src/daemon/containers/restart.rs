//! Restart policies (`--restart no|always|unless-stopped|on-failure[:N]`), as Docker's
//! restart manager: after an exit the container is started again after a delay that starts at
//! 100 ms and doubles with each restart up to a minute, and drops back to 100 ms once a run
//! lasted 10 s. `docker stop` and `docker kill` mark it manually stopped, which no policy
//! overrides; `always` and `unless-stopped` containers that were not stopped by hand are
//! started when the daemon starts.

use std::sync::Arc;
use std::time::Duration;

use strata_api_types::create::RestartPolicy;
use strata_core::{Error, Result};

use super::Container;
use crate::daemon::Daemon;

const FIRST_DELAY_MS: u64 = 100;
const MAX_DELAY_MS: u64 = 60_000;
/// A run at least this long resets the delay.
const STABLE_RUN: Duration = Duration::from_secs(10);

/// Docker's refusals at create (and update).
pub fn validate(policy: &RestartPolicy, auto_remove: bool) -> Result<()> {
    let name = policy.name.as_str();
    if !matches!(name, "" | "no" | "always" | "unless-stopped" | "on-failure") {
        return Err(Error::invalid(format!("invalid restart policy '{name}'")));
    }
    if policy.maximum_retry_count < 0 {
        return Err(Error::invalid(
            "invalid restart policy: maximum retry count cannot be negative",
        ));
    }
    if policy.maximum_retry_count > 0 && name != "on-failure" {
        return Err(Error::invalid(format!(
            "invalid restart policy: maximum retry count can only be used with 'on-failure'; \
             cannot be used with '{name}'"
        )));
    }
    if auto_remove && !matches!(name, "" | "no") {
        return Err(Error::invalid(
            "can't create 'AutoRemove' container with restart policy",
        ));
    }
    Ok(())
}

/// Whether an exit with `code` restarts the container.
pub fn wants_restart(
    policy: &RestartPolicy,
    code: i32,
    manually_stopped: bool,
    restart_count: u32,
) -> bool {
    if manually_stopped {
        return false;
    }
    match policy.name.as_str() {
        "always" | "unless-stopped" => true,
        "on-failure" => {
            code != 0
                && (policy.maximum_retry_count <= 0
                    || i64::from(restart_count) < policy.maximum_retry_count)
        }
        _ => false,
    }
}

/// The delay before the next restart, given the last one and how long the run lasted.
pub fn next_delay_ms(last_ms: u64, ran: Duration) -> u64 {
    if last_ms == 0 || ran >= STABLE_RUN {
        FIRST_DELAY_MS
    } else {
        (last_ms * 2).min(MAX_DELAY_MS)
    }
}

/// Starts the container again after `delay_ms`, unless it was stopped, started or removed
/// meanwhile.
pub fn schedule(d: Arc<Daemon>, c: Arc<Container>, delay_ms: u64) {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let id = c.record().id.clone();
        let still_wanted = {
            let r = c.record();
            r.restarting && !r.manually_stopped
        };
        if !still_wanted || d.containers.get(&id).is_err() {
            return;
        }
        {
            let mut r = c.record();
            r.restarting = false;
            r.restart_count += 1;
        }
        if let Err(e) = super::lifecycle::start(&d, &id).await {
            tracing::warn!(container = %id, "restart by policy failed: {e}");
        }
    });
}

/// At daemon start: `always` and `unless-stopped` containers not stopped by hand run again.
pub fn at_daemon_start(d: &Arc<Daemon>) {
    for c in d.containers.all() {
        let r = c.snapshot();
        let policy = &r.host_config.restart_policy;
        if matches!(policy.name.as_str(), "always" | "unless-stopped") && !r.manually_stopped {
            let d = d.clone();
            tokio::spawn(async move {
                if let Err(e) = super::lifecycle::start(&d, &r.id).await {
                    tracing::warn!(container = %r.id, "restart at daemon start failed: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, max: i64) -> RestartPolicy {
        RestartPolicy {
            name: name.into(),
            maximum_retry_count: max,
        }
    }

    #[test]
    fn policies_decide_as_dockers() {
        assert!(wants_restart(&policy("always", 0), 0, false, 9));
        assert!(!wants_restart(&policy("always", 0), 1, true, 0));
        assert!(wants_restart(&policy("unless-stopped", 0), 0, false, 0));
        assert!(!wants_restart(&policy("on-failure", 0), 0, false, 0));
        assert!(wants_restart(&policy("on-failure", 2), 1, false, 1));
        assert!(!wants_restart(&policy("on-failure", 2), 1, false, 2));
        assert!(!wants_restart(&policy("no", 0), 1, false, 0));
        assert!(validate(&policy("sometimes", 0), false).is_err());
        assert!(validate(&policy("always", 3), false).is_err());
        assert!(validate(&policy("always", 0), true).is_err());
        assert!(validate(&policy("on-failure", 3), false).is_ok());
    }

    #[test]
    fn delays_double_and_reset_after_a_stable_run() {
        let quick = Duration::from_millis(5);
        assert_eq!(next_delay_ms(0, quick), 100);
        assert_eq!(next_delay_ms(100, quick), 200);
        assert_eq!(next_delay_ms(40_000, quick), 60_000);
        assert_eq!(next_delay_ms(6_400, Duration::from_secs(11)), 100);
    }
}
