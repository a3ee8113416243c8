//! `docker update`: new memory, CPU and pids limits and a new restart policy, kept in the
//! record and, for a running container, written to its cgroup at once. Only the fields a
//! request sets (non-zero) change, as Docker's.

use serde::{Deserialize, Serialize};
use strata_api_types::create::RestartPolicy;
use strata_core::{Error, Result};

use super::Containers;

/// The fields of `POST /containers/{id}/update` Strata applies. Anything else the request
/// sets to a non-default value is refused by name (see [`UpdateRequest::unsupported`]).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateRequest {
    pub memory: i64,
    pub memory_swap: i64,
    pub nano_cpus: i64,
    pub cpu_shares: i64,
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub pids_limit: Option<i64>,
    pub restart_policy: Option<RestartPolicy>,
    #[serde(flatten)]
    pub rest: std::collections::BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateResponse {
    pub warnings: Vec<String>,
}

impl UpdateRequest {
    /// The first field set to something other than its default that Strata cannot update.
    fn unsupported(&self) -> Option<&str> {
        self.rest.iter().find_map(|(k, v)| {
            let default = match v {
                serde_json::Value::Null => true,
                serde_json::Value::Bool(b) => !b,
                serde_json::Value::Number(n) => n.as_f64() == Some(0.0),
                serde_json::Value::String(s) => s.is_empty(),
                serde_json::Value::Array(a) => a.is_empty(),
                serde_json::Value::Object(o) => o.is_empty(),
            };
            (!default).then_some(k.as_str())
        })
    }
}

pub async fn update(
    containers: &Containers,
    key: &str,
    req: &UpdateRequest,
) -> Result<UpdateResponse> {
    if let Some(field) = req.unsupported() {
        return Err(Error::invalid(format!(
            "{field} cannot be updated by Strata: leave it unset"
        )));
    }
    let c = containers.get(key)?;
    let _op = c.op_lock.lock().await;
    let mut host = c.snapshot().host_config;
    let set = |value: i64, field: &mut i64| {
        if value != 0 {
            *field = value;
        }
    };
    set(req.memory, &mut host.memory);
    set(req.memory_swap, &mut host.memory_swap);
    set(req.nano_cpus, &mut host.nano_cpus);
    set(req.cpu_shares, &mut host.cpu_shares);
    set(req.cpu_period, &mut host.cpu_period);
    set(req.cpu_quota, &mut host.cpu_quota);
    if req.pids_limit.is_some() {
        host.pids_limit = req.pids_limit;
    }
    if let Some(policy) = &req.restart_policy {
        super::restart::validate(policy, host.auto_remove)?;
        host.restart_policy = policy.clone();
    }
    if let Some(running) = c.running() {
        running
            .cgroup()
            .update(&super::lifecycle::resources(&host))?;
    }
    let mut r = c.record();
    r.host_config = host;
    r.save(&containers.root)?;
    Ok(UpdateResponse::default())
}
