//! A create request (Docker's `Config` + `HostConfig`) merged with the image's defaults into
//! what the container will run.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use strata_core::{Error, Result};

use super::mounts::{self, ApiMount, MountRequest};

/// The `Config` fields the engine acts on; the whole body is also kept as given for inspect.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateConfig {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub tty: bool,
    #[serde(default)]
    pub open_stdin: bool,
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub working_dir: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub stop_timeout: Option<i64>,
    #[serde(default)]
    pub host_config: Option<HostConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    #[serde(default)]
    pub binds: Option<Vec<String>>,
    #[serde(default)]
    pub mounts: Option<Vec<ApiMount>>,
    #[serde(default)]
    pub tmpfs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub network_mode: String,
    #[serde(default)]
    pub auto_remove: bool,
    #[serde(default)]
    pub readonly_rootfs: bool,
    #[serde(default)]
    pub init: Option<bool>,
    #[serde(default)]
    pub memory: i64,
    #[serde(default)]
    pub memory_swap: i64,
    #[serde(default)]
    pub nano_cpus: i64,
    #[serde(default)]
    pub cpu_quota: i64,
    #[serde(default)]
    pub cpu_period: i64,
    #[serde(default)]
    pub cpu_shares: i64,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    #[serde(default)]
    pub extra_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub cgroup_parent: String,
}

/// What the container runs, after merging with the image.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: String,
    pub args: Vec<String>,
    /// Docker's `Config` as inspect shows it.
    pub config: Value,
    pub host_config: Value,
    pub mounts: Vec<MountRequest>,
    pub auto_remove: bool,
}

/// Merges the request with the image config's `config` section (Env, Cmd, Entrypoint,
/// WorkingDir, User, Labels, Volumes, StopSignal).
pub fn prepare(body: &Value, image_config: Option<&Value>) -> Result<Prepared> {
    let req: CreateConfig = serde_json::from_value(body.clone())
        .map_err(|e| Error::invalid(format!("invalid container config: {e}")))?;
    let host = req.host_config.clone().unwrap_or_default();
    let img = image_config.cloned().unwrap_or(Value::Null);
    let img_strings = |key: &str| -> Option<Vec<String>> {
        img.get(key).and_then(Value::as_array).map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
    };
    let img_str = |key: &str| {
        img.get(key)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };

    let mut env: Vec<String> = img_strings("Env").unwrap_or_default();
    for e in req.env.clone().unwrap_or_default() {
        let key = e.split('=').next().unwrap_or("").to_string();
        env.retain(|x| x.split('=').next() != Some(key.as_str()));
        env.push(e);
    }
    // An explicit entrypoint (even `[""]`) replaces the image's and drops the image's Cmd.
    let (entrypoint, cmd) = match &req.entrypoint {
        Some(ep) => {
            let ep: Vec<String> = ep.iter().filter(|s| !s.is_empty()).cloned().collect();
            (ep, req.cmd.clone().unwrap_or_default())
        }
        None => (
            img_strings("Entrypoint").unwrap_or_default(),
            req.cmd
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| img_strings("Cmd").unwrap_or_default()),
        ),
    };
    let full: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    let Some((path, args)) = full.split_first() else {
        return Err(Error::invalid("no command specified"));
    };
    let working_dir = if req.working_dir.is_empty() {
        img_str("WorkingDir")
    } else {
        req.working_dir.clone()
    };
    if !working_dir.is_empty() && !working_dir.starts_with('/') {
        return Err(Error::invalid(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    let user = if req.user.is_empty() {
        img_str("User")
    } else {
        req.user.clone()
    };
    let mut labels: BTreeMap<String, String> = img
        .get("Labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    labels.extend(req.labels.clone().unwrap_or_default());
    let mut anon: Vec<String> = img
        .get("Volumes")
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    anon.extend(req.volumes.clone().unwrap_or_default().into_keys());
    anon.sort();
    anon.dedup();
    let mounts = mounts::collect(
        &host.binds.clone().unwrap_or_default(),
        &host.mounts.clone().unwrap_or_default(),
        &host.tmpfs.clone().unwrap_or_default(),
        &anon,
    )?;
    match host.network_mode.as_str() {
        "" | "none" | "host" | "default" => {}
        other => {
            return Err(Error::invalid(format!(
                "network {other} not found: Strata supports --network none (the default) and host"
            )))
        }
    }

    let mut config = body.clone();
    if let Some(obj) = config.as_object_mut() {
        obj.remove("HostConfig");
        obj.remove("NetworkingConfig");
        obj.insert("Env".into(), json!(env));
        obj.insert("Cmd".into(), json!(cmd));
        obj.insert(
            "Entrypoint".into(),
            if entrypoint.is_empty() {
                Value::Null
            } else {
                json!(entrypoint)
            },
        );
        obj.insert("WorkingDir".into(), json!(working_dir));
        obj.insert("User".into(), json!(user));
        obj.insert("Labels".into(), json!(labels));
        if req.stop_signal.is_none() {
            if let Some(sig) = img.get("StopSignal") {
                obj.insert("StopSignal".into(), sig.clone());
            }
        }
    }
    let mut host_config = body.get("HostConfig").cloned().unwrap_or_else(|| json!({}));
    if let Some(obj) = host_config.as_object_mut() {
        if host.network_mode.is_empty() || host.network_mode == "default" {
            obj.insert("NetworkMode".into(), json!("none"));
        }
    }
    Ok(Prepared {
        path: path.clone(),
        args: args.to_vec(),
        config,
        host_config,
        mounts,
        auto_remove: host.auto_remove,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_defaults_fill_the_gaps() {
        let img = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "Volumes": {"/data": {}}});
        let p = prepare(&json!({"Image": "bb", "Env": ["A=2"]}), Some(&img)).unwrap();
        assert_eq!(p.path, "sh");
        assert_eq!(p.config["Env"], json!(["PATH=/bin", "A=2"]));
        assert_eq!(p.config["WorkingDir"], "/w");
        assert_eq!(
            p.mounts.len(),
            1,
            "the image's VOLUME becomes an anonymous volume"
        );
        let p = prepare(&json!({"Image": "bb", "Cmd": ["echo", "hi"]}), Some(&img)).unwrap();
        assert_eq!(
            (p.path.as_str(), p.args.as_slice()),
            ("echo", &["hi".to_string()][..])
        );
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(
            prepare(&json!({"Image": "bb"}), None).is_err(),
            "no command"
        );
        assert!(prepare(
            &json!({"Image": "bb", "Cmd": ["x"], "WorkingDir": "rel"}),
            None
        )
        .is_err());
        assert!(prepare(
            &json!({"Image": "bb", "Cmd": ["x"], "HostConfig": {"NetworkMode": "bridge"}}),
            None
        )
        .is_err());
        assert!(prepare(&json!({"Image": 5}), None).is_err());
    }
}
