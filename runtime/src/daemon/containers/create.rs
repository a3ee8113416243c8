//! A create request (Docker's `Config` + `HostConfig`, typed in `strata-api-types`) merged with
//! the image's defaults into what the container will run.
//!
//! Every field of Docker's API is typed. The ones Strata does not implement are refused
//! with a 400 naming them when they hold anything but their default
//! ([`strata_api_types::unsupported::unsupported_field`]): the stock CLI sends them all, mostly
//! as zero, empty, null or false. Fields Docker's API does not have are ignored, as Docker does.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;
use strata_api_types::unsupported::unsupported_field;
pub use strata_api_types::{Config, ContainerCreateRequest, HostConfig};
use strata_core::{Error, Result};

use super::mounts::{self, MountRequest};
use crate::cgroups::devices::{self, DeviceRule};
use crate::container::{ContainerSpec, DeviceMapping, SeccompMode, SecuritySpec};

/// Reads a create body; a field of the wrong type is a 400.
pub fn parse_request(body: &Value) -> Result<ContainerCreateRequest> {
    ContainerCreateRequest::deserialize(body)
        .map_err(|e| Error::invalid(format!("invalid container config: {e}")))
}

/// The image config's `config` section (Env, Cmd, Entrypoint, WorkingDir, User, Labels,
/// Volumes, StopSignal), the defaults of a container made from it.
pub fn image_defaults(image_config: Option<&Value>) -> Result<Config> {
    match image_config {
        None | Some(Value::Null) => Ok(Config::default()),
        Some(v) => Config::deserialize(v)
            .map_err(|e| Error::invalid(format!("the image's config is not valid: {e}"))),
    }
}

/// `key=value` or Docker's legacy `key:value`, split at whichever comes first.
fn security_opt_parts(opt: &str) -> (&str, Option<&str>) {
    match opt.find(['=', ':']) {
        Some(i) => (&opt[..i], Some(&opt[i + 1..])),
        None => (opt, None),
    }
}

/// The container's security settings and whether no_new_privs is set, from
/// `--privileged`, `--cap-add/--cap-drop`, `--security-opt`, `--device`,
/// `--device-cgroup-rule`. Anything it cannot honour is a 400.
pub fn security(host: &HostConfig) -> Result<(SecuritySpec, bool)> {
    let mut spec = SecuritySpec {
        privileged: host.privileged,
        cap_add: host.cap_add.clone().unwrap_or_default(),
        cap_drop: host.cap_drop.clone().unwrap_or_default(),
        ..SecuritySpec::default()
    };
    // Docker's default: no_new_privs only when asked, so setuid programs (su, sudo) work in
    // images that rely on them; capabilities and seccomp bound what they can reach.
    let mut no_new_privileges = false;
    for opt in host.security_opt.iter().flatten() {
        let invalid = || Error::invalid(format!("invalid --security-opt: {opt:?}"));
        match security_opt_parts(opt) {
            ("no-new-privileges", None) => no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                no_new_privileges = v.parse().map_err(|_| invalid())?;
            }
            ("seccomp", Some("unconfined")) => spec.seccomp = SeccompMode::Unconfined,
            ("seccomp", Some(json)) => spec.seccomp = SeccompMode::Profile(json.to_string()),
            ("systempaths", Some("unconfined")) => spec.unconfined_paths = true,
            // Strata has neither AppArmor nor SELinux: turning them off asks for nothing.
            ("apparmor", Some("unconfined")) | ("label", Some("disable")) => {}
            ("apparmor" | "label", _) => {
                return Err(Error::invalid(format!(
                    "invalid --security-opt {opt:?}: Strata supports neither AppArmor nor SELinux"
                )))
            }
            _ => return Err(invalid()),
        }
    }
    for d in host.devices.iter().flatten() {
        let perms = if d.cgroup_permissions.is_empty() {
            "rwm"
        } else {
            d.cgroup_permissions.as_str()
        };
        let access = devices::parse_access(perms).ok_or_else(|| {
            Error::invalid(format!(
                "invalid device permissions {perms:?} (use r, w, m)"
            ))
        })?;
        spec.devices.push(DeviceMapping {
            host_path: d.path_on_host.clone().into(),
            container_path: d.path_in_container.clone(),
            access,
        });
    }
    for rule in host.device_cgroup_rules.iter().flatten() {
        spec.device_rules.push(rule.parse::<DeviceRule>()?);
    }
    spec.validate()?;
    crate::container::seccomp::check_builds(&spec.seccomp)?;
    Ok((spec, no_new_privileges))
}

/// Sets the container's security from its stored `HostConfig` (at start).
pub fn apply_security(host: &HostConfig, spec: &mut ContainerSpec) -> Result<()> {
    let (security, no_new_privileges) = security(host)?;
    spec.security = security;
    spec.no_new_privileges = no_new_privileges;
    Ok(())
}

/// What the container runs, after merging with the image.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub path: String,
    pub args: Vec<String>,
    /// Docker's `Config` as inspect shows it.
    pub config: Config,
    pub host_config: HostConfig,
    pub mounts: Vec<MountRequest>,
    pub auto_remove: bool,
}

/// [`prepare`] from the JSON of a create body and of the image config's `config` section.
pub fn prepare_json(body: &Value, image_config: Option<&Value>) -> Result<Prepared> {
    prepare(&parse_request(body)?, &image_defaults(image_config)?)
}

/// Refuses what Strata does not implement or cannot honour, before anything is merged.
fn check_request(req: &ContainerCreateRequest) -> Result<()> {
    if let Some(field) = unsupported_field(&req.config, req.host_config.as_ref()) {
        return Err(Error::invalid(format!(
            "{field} is not supported by Strata: leave it unset (see docs/security.md, \
             \"Container options\")"
        )));
    }
    // Refused here, as Docker, rather than at the first `docker stop`.
    if let Some(sig) = Some(req.config.stop_signal.as_str()).filter(|s| !s.is_empty()) {
        super::lifecycle::parse_signal(sig)?;
    }
    if let Some(host) = &req.host_config {
        security(host)?;
        check_log_config(&host.log_config)?;
        super::restart::validate(&host.restart_policy, host.auto_remove)?;
        match host.network_mode.as_str() {
            "" | "none" | "host" | "default" => {}
            other => {
                return Err(Error::invalid(format!(
                    "network {other} not found: Strata supports --network none (the default) \
                     and host"
                )))
            }
        }
    }
    Ok(())
}

/// Merges the request with the image's defaults ([`image_defaults`]).
pub fn prepare(req: &ContainerCreateRequest, img: &Config) -> Result<Prepared> {
    check_request(req)?;
    let mut config = req.config.clone();
    let env = merge_env(config.env.take().unwrap_or_default(), img.env.clone());
    // An explicit entrypoint (even `[""]`) replaces the image's and drops the image's Cmd.
    let (entrypoint, cmd) = match &config.entrypoint {
        Some(ep) => {
            let ep: Vec<String> = ep.iter().filter(|s| !s.is_empty()).cloned().collect();
            (ep, config.cmd.clone().unwrap_or_default())
        }
        None => (
            img.entrypoint.clone().unwrap_or_default(),
            config
                .cmd
                .clone()
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| img.cmd.clone().unwrap_or_default()),
        ),
    };
    let full: Vec<String> = entrypoint.iter().chain(cmd.iter()).cloned().collect();
    let Some((path, args)) = full.split_first() else {
        return Err(Error::invalid("no command specified"));
    };
    if config.working_dir.is_empty() {
        config.working_dir = img.working_dir.clone();
    }
    let working_dir = &config.working_dir;
    if !working_dir.is_empty() && !working_dir.starts_with('/') {
        return Err(Error::invalid(format!(
            "the working directory '{working_dir}' is invalid, it needs to be an absolute path"
        )));
    }
    if config.user.is_empty() {
        config.user = img.user.clone();
    }
    let mut labels: BTreeMap<String, String> = img.labels.clone().unwrap_or_default();
    labels.extend(config.labels.take().unwrap_or_default());
    let mut anon: Vec<String> = img
        .volumes
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    anon.extend(config.volumes.iter().flatten().map(|(k, _)| k.clone()));
    anon.sort();
    anon.dedup();
    let mut host = req.host_config.clone().unwrap_or_default();
    let mounts = mounts::collect(
        host.binds.as_deref().unwrap_or_default(),
        host.mounts.as_deref().unwrap_or_default(),
        &host.tmpfs.clone().unwrap_or_default(),
        &anon,
    )?;
    if host.network_mode.is_empty() || host.network_mode == "default" {
        host.network_mode = "none".into();
    }
    // The daemon's default log driver fills an unset one, as Docker records it: clients read
    // it back (Docker's Python SDK fetches `run`'s output only for json-file).
    if host.log_config.kind.is_empty() {
        host.log_config.kind = "json-file".into();
    }
    host.log_config.config.get_or_insert_with(BTreeMap::new);
    config.env = Some(env);
    config.cmd = Some(cmd);
    config.entrypoint = (!entrypoint.is_empty()).then_some(entrypoint);
    config.labels = Some(labels);
    if config.stop_signal.is_empty() {
        config.stop_signal = img.stop_signal.clone();
    }
    // The image's HEALTHCHECK, unless the request sets its own; `--health-*` flags given
    // without a test keep the image's test (as Docker merges them).
    config.healthcheck = match (config.healthcheck.take(), img.healthcheck.clone()) {
        (None, image) => image,
        (Some(mut own), Some(image)) if own.test.as_ref().is_none_or(|t| t.is_empty()) => {
            own.test = image.test;
            Some(own)
        }
        (own, _) => own,
    };
    Ok(Prepared {
        path: path.clone(),
        args: args.to_vec(),
        config,
        auto_remove: host.auto_remove,
        host_config: host,
        mounts,
    })
}

/// `--log-driver` and `--log-opt`, refused at create as Docker does: json-file is the one
/// driver, and of its options Strata keeps `max-size` and `max-file`.
fn check_log_config(log: &strata_api_types::LogConfig) -> Result<()> {
    if !matches!(log.kind.as_str(), "" | "json-file") {
        return Err(Error::invalid(format!(
            "LogConfig: logger: no log driver named '{}' is registered (Strata has json-file)",
            log.kind
        )));
    }
    let opts = log.config.clone().unwrap_or_default();
    if let Some(key) = opts
        .keys()
        .find(|k| !matches!(k.as_str(), "max-size" | "max-file"))
    {
        return Err(Error::invalid(format!(
            "LogConfig: unknown log opt '{key}' for json-file log driver (Strata takes max-size \
             and max-file)"
        )));
    }
    crate::container::logs::LogOptions::from_config(log).map(|_| ())
}

/// Docker's merge of the image's environment into the request's: the request's entries first,
/// then each image entry whose name the request does not set. Linear in the entries, so a
/// request with a huge `Env` cannot hold a core for minutes.
fn merge_env(requested: Vec<String>, image: Option<Vec<String>>) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or("").to_string();
    let set: std::collections::HashSet<String> = requested.iter().map(|e| key(e)).collect();
    let mut env = requested;
    env.extend(
        image
            .unwrap_or_default()
            .into_iter()
            .filter(|e| !set.contains(&key(e))),
    );
    env
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prepare_json(body: Value, image: Option<Value>) -> Result<Prepared> {
        super::prepare_json(&body, image.as_ref())
    }

    #[test]
    fn image_defaults_fill_the_gaps() {
        let img = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "Volumes": {"/data": {}}});
        let p = prepare_json(json!({"Image": "bb", "Env": ["A=2"]}), Some(img.clone())).unwrap();
        assert_eq!(p.path, "sh");
        assert_eq!(p.config.env.unwrap(), ["A=2", "PATH=/bin"]);
        assert_eq!(p.config.working_dir, "/w");
        assert_eq!(
            p.mounts.len(),
            1,
            "the image's VOLUME becomes an anonymous volume"
        );
        let p = prepare_json(json!({"Image": "bb", "Cmd": ["echo", "hi"]}), Some(img)).unwrap();
        assert_eq!(
            (p.path.as_str(), p.args.as_slice()),
            ("echo", &["hi".to_string()][..])
        );
    }

    /// Guards inspect's `HostConfig.LogConfig` for a create body without one (the Python SDK
    /// sends none): it read `{"Type": ""}`, so the SDK's `containers.run` returned no output.
    #[test]
    fn an_unset_log_driver_is_recorded_as_json_file() {
        let p = prepare_json(json!({"Image": "bb", "Cmd": ["true"]}), None).unwrap();
        let v = serde_json::to_value(&p.host_config.log_config).unwrap();
        assert_eq!(v, json!({"Type": "json-file", "Config": {}}));
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(
            prepare_json(json!({"Image": "bb"}), None).is_err(),
            "no command"
        );
        assert!(prepare_json(
            json!({"Image": "bb", "Cmd": ["x"], "WorkingDir": "rel"}),
            None
        )
        .is_err());
        assert!(prepare_json(
            json!({"Image": "bb", "Cmd": ["x"], "HostConfig": {"NetworkMode": "bridge"}}),
            None
        )
        .is_err());
        assert!(prepare_json(json!({"Image": 5}), None).is_err());
    }

    /// Guards the nested `--mount` options Strata does not implement: they were dropped
    /// (the mount was made without them) and are now a 400 naming them. Failed before.
    #[test]
    fn unimplemented_mount_options_are_named() {
        let body = json!({"Image": "bb", "Cmd": ["x"], "HostConfig": {"Mounts": [
            {"Type": "bind", "Source": "/tmp", "Target": "/t",
             "BindOptions": {"NonRecursive": true}}]}});
        let err = prepare_json(body, None).unwrap_err().to_string();
        assert!(
            err.contains("Mounts.BindOptions.NonRecursive is not supported"),
            "{err}"
        );
        let body = json!({"Image": "bb", "Cmd": ["x"], "NetworkDisabled": true});
        let err = prepare_json(body, None).unwrap_err().to_string();
        assert!(err.contains("NetworkDisabled is not supported"), "{err}");
    }

    /// Every unimplemented field, set to a non-default value, is refused by its name; its
    /// default (as the docker CLI sends it) is accepted.
    #[test]
    fn unimplemented_fields_are_named() {
        let cases = [
            ("Domainname", json!({"Domainname": "example.com"})),
            (
                "PortBindings",
                json!({"HostConfig": {"PortBindings": {"80/tcp": [{"HostPort": "8080"}]}}}),
            ),
            ("Dns", json!({"HostConfig": {"Dns": ["1.1.1.1"]}})),
            (
                "Ulimits",
                json!({"HostConfig": {"Ulimits": [{"Name": "nofile", "Soft": 1, "Hard": 2}]}}),
            ),
            ("ShmSize", json!({"HostConfig": {"ShmSize": 1}})),
            ("MaskedPaths", json!({"HostConfig": {"MaskedPaths": []}})),
        ];
        for (name, mut body) in cases {
            body["Image"] = json!("bb");
            body["Cmd"] = json!(["x"]);
            let err = prepare_json(body, None).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{name} is not supported")),
                "{name}: {err}"
            );
        }
        let defaults = json!({"Image": "bb", "Cmd": ["x"], "Healthcheck": {"Test": ["NONE"]},
            "HostConfig": {"RestartPolicy": {"Name": "no"}, "PortBindings": {}, "Dns": [],
            "Ulimits": null, "ShmSize": 0, "OomKillDisable": false, "MemorySwappiness": null,
            "LogConfig": {"Type": "", "Config": {}}, "ConsoleSize": [0, 0]}});
        prepare_json(defaults, None).unwrap();
    }

    /// Guards the merge's cost: it was one `retain` over the list per entry, so 40,000
    /// entries (a 430 KB body) took 141 s in a debug build; now it is linear.
    #[test]
    fn env_merge_is_dockers_and_linear() {
        let merged = merge_env(
            vec!["B=2".into(), "C=3".into()],
            Some(vec!["A=1".into(), "B=image".into()]),
        );
        assert_eq!(merged, ["B=2", "C=3", "A=1"]);
        let many: Vec<String> = (0..200_000).map(|i| format!("K{i}=v")).collect();
        let started = std::time::Instant::now();
        assert_eq!(merge_env(many.clone(), Some(many)).len(), 200_000);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}
