//! Cases as data, and the runner that gives each one a fresh environment and driver.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use strata_core::fsutil::mounts;
use strata_core::Capabilities;

use crate::ctx::Ctx;
use crate::env::DriverFactory;
use crate::failure::CaseResult;

/// Longest a single case may take before it fails (a hung driver must not hang CI).
pub const CASE_TIMEOUT: Duration = Duration::from_secs(300);

/// Longest the start-up capability probe of one driver may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// What a case needs from the driver beyond the base contract, read from `capabilities()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Nothing,
    /// `capabilities().quota`: the `size=` storage option.
    Quota,
}

impl Requirement {
    /// Why a driver with `caps` cannot run the case, or `None` when it can.
    pub fn unmet(self, caps: &Capabilities) -> Option<String> {
        match self {
            Requirement::Nothing => None,
            Requirement::Quota if !caps.quota => {
                Some("the driver declares no quota support (capabilities().quota is false)".into())
            }
            _ => None,
        }
    }
}

/// One conformance case.
#[derive(Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    pub needs: Requirement,
    pub run: fn(Ctx) -> BoxFuture<'static, CaseResult>,
}

/// How a case ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    NotApplicable(String),
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Passed => "pass",
            Outcome::Failed(_) => "FAIL",
            Outcome::NotApplicable(_) => "not applicable",
        }
    }
}

/// Opens the driver once in a throwaway environment and returns its capabilities (to tell
/// not-applicable cases apart before running them).
pub async fn probe_capabilities(factory: &Arc<dyn DriverFactory>) -> Result<Capabilities, String> {
    let probe = async {
        let env = factory
            .prepare()
            .await
            .map_err(|e| format!("preparing a {} environment: {e}", factory.name()))?;
        let driver = factory.open(env.root()).await.map_err(|e| {
            format!(
                "opening {} on {}: {e}",
                factory.name(),
                env.root().display()
            )
        })?;
        let caps = driver.capabilities();
        let _ = driver.cleanup().await;
        Ok(caps)
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "opening {} took over {}s",
                factory.name(),
                PROBE_TIMEOUT.as_secs()
            ))
        })
}

/// Runs one case on a fresh environment and driver made by `factory`.
pub async fn run_layer_case(factory: Arc<dyn DriverFactory>, case: &Case) -> Outcome {
    let env = match factory.prepare().await {
        Ok(env) => Arc::from(env),
        Err(e) => {
            return Outcome::Failed(format!("preparing the {} environment: {e}", factory.name()))
        }
    };
    let env: Arc<dyn crate::env::Environment> = env;
    let root = env.root().to_path_buf();
    let driver = match factory.open(&root).await {
        Ok(d) => d,
        Err(e) => {
            return Outcome::Failed(format!(
            "opening the {} driver on {} failed (a driver that cannot open fails every case): {e}",
            factory.name(),
            root.display()
        ))
        }
    };
    if driver.name() != factory.name() {
        return Outcome::Failed(format!(
            "the driver calls itself {:?} but is registered as {:?}; they must match",
            driver.name(),
            factory.name()
        ));
    }
    if let Some(reason) = case.needs.unmet(&driver.capabilities()) {
        let _ = driver.cleanup().await;
        return Outcome::NotApplicable(reason);
    }
    let ctx = Ctx::new(factory.clone(), env.clone(), driver);
    let task = tokio::spawn((case.run)(ctx.clone()));
    let abort = task.abort_handle();
    let result = match tokio::time::timeout(CASE_TIMEOUT, task).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(failure))) => Err(failure.message),
        Ok(Err(join)) if join.is_panic() => Err(format!("the case panicked: {}", panic_text(join))),
        Ok(Err(join)) => Err(format!("the case task failed: {join}")),
        Err(_) => {
            abort.abort();
            Err(format!(
                "the case did not finish within {}s",
                CASE_TIMEOUT.as_secs()
            ))
        }
    };
    let mut problems = ctx.release_mounts().await;
    if let Err(e) = ctx.driver().cleanup().await {
        problems.push(format!("cleanup() after the case: {e}"));
    }
    match mounts::mounts_under(&root) {
        Ok(left) => {
            let left: Vec<String> = left
                .into_iter()
                .filter(|m| m.mount_point != root)
                .map(|m| format!("{} ({})", m.mount_point.display(), m.fs_type))
                .collect();
            if !left.is_empty() {
                problems.push(format!(
                    "after every mount was released and cleanup() ran, still mounted under the root: {}",
                    left.join(", ")
                ));
            }
        }
        Err(e) => problems.push(format!("reading the mount table: {e}")),
    }
    drop(ctx);
    match (result, problems.is_empty()) {
        (Ok(()), true) => Outcome::Passed,
        (Ok(()), false) => Outcome::Failed(problems.join("; ")),
        (Err(msg), true) => Outcome::Failed(msg),
        (Err(msg), false) => {
            Outcome::Failed(format!("{msg}\n  (and then: {})", problems.join("; ")))
        }
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-text panic".into()),
        Err(e) => e.to_string(),
    }
}
