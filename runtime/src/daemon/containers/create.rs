//! A create request (Docker's `Config` + `HostConfig`) merged with the image's defaults into
//! what the container will run.
//!
//! Every field of Docker's API is typed here. The ones Strata does not implement are refused
//! with a 400 naming them when they hold anything but their default ([`unsupported_field`]):
//! the stock CLI sends them all, mostly as zero, empty, null or false. Fields Docker's API does
//! not have are ignored, as Docker does.

use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{json, Value};
use strata_core::{Error, Result};

use super::mounts::{self, ApiMount, MountRequest};
use crate::cgroups::devices::{self, DeviceRule};
use crate::container::{ContainerSpec, DeviceMapping, SeccompMode, SecuritySpec};

/// A field whose content we only check for emptiness.
type AnyList = Option<Vec<IgnoredAny>>;
type AnyMap = Option<BTreeMap<String, IgnoredAny>>;

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
    // Not implemented: refused unless default.
    #[serde(default)]
    pub domainname: String,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Healthcheck {
    pub test: Option<Vec<String>>,
}

/// `HostConfig.Devices` entries (`--device`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ApiDevice {
    pub path_on_host: String,
    pub path_in_container: String,
    pub cgroup_permissions: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    pub name: String,
    pub maximum_retry_count: i64,
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
    // Security.
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub cap_add: Option<Vec<String>>,
    #[serde(default)]
    pub cap_drop: Option<Vec<String>>,
    #[serde(default)]
    pub security_opt: Option<Vec<String>>,
    #[serde(default)]
    pub devices: Option<Vec<ApiDevice>>,
    #[serde(default)]
    pub device_cgroup_rules: Option<Vec<String>>,
    #[serde(flatten)]
    pub unsupported: UnsupportedHostConfig,
}

/// The `HostConfig` fields Strata does not implement (see [`unsupported_field`]).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UnsupportedHostConfig {
    pub restart_policy: Option<RestartPolicy>,
    pub log_config: Option<crate::container::logs::LogConfig>,
    pub port_bindings: AnyMap,
    pub publish_all_ports: bool,
    pub volume_driver: String,
    pub volumes_from: AnyList,
    pub links: AnyList,
    pub dns: AnyList,
    pub dns_options: AnyList,
    pub dns_search: AnyList,
    pub group_add: AnyList,
    pub annotations: AnyMap,
    pub storage_opt: AnyMap,
    pub sysctls: AnyMap,
    pub cgroupns_mode: String,
    pub ipc_mode: String,
    pub cgroup: String,
    pub pid_mode: String,
    #[serde(rename = "UTSMode")]
    pub uts_mode: String,
    pub userns_mode: String,
    pub runtime: String,
    pub isolation: String,
    pub oom_score_adj: i64,
    pub oom_kill_disable: Option<bool>,
    pub shm_size: i64,
    pub blkio_weight: i64,
    pub blkio_weight_device: AnyList,
    pub blkio_device_read_bps: AnyList,
    pub blkio_device_write_bps: AnyList,
    #[serde(rename = "BlkioDeviceReadIOps")]
    pub blkio_device_read_iops: AnyList,
    #[serde(rename = "BlkioDeviceWriteIOps")]
    pub blkio_device_write_iops: AnyList,
    pub cpu_realtime_period: i64,
    pub cpu_realtime_runtime: i64,
    pub cpuset_cpus: String,
    pub cpuset_mems: String,
    pub cpu_count: i64,
    pub cpu_percent: i64,
    #[serde(rename = "IOMaximumIOps")]
    pub io_maximum_iops: i64,
    #[serde(rename = "IOMaximumBandwidth")]
    pub io_maximum_bandwidth: i64,
    pub device_requests: AnyList,
    pub kernel_memory: i64,
    #[serde(rename = "KernelMemoryTCP")]
    pub kernel_memory_tcp: i64,
    pub memory_reservation: i64,
    pub memory_swappiness: Option<i64>,
    pub ulimits: AnyList,
    pub masked_paths: AnyList,
    pub readonly_paths: AnyList,
}

fn some_nonempty<T>(v: &Option<Vec<T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

fn map_nonempty<T>(v: &Option<BTreeMap<String, T>>) -> bool {
    v.as_ref().is_some_and(|v| !v.is_empty())
}

/// The first field the request sets that Strata does not implement, by its API name.
pub fn unsupported_field(req: &CreateConfig) -> Option<&'static str> {
    let health = req.healthcheck.as_ref().and_then(|h| h.test.as_deref());
    let config = [
        ("Domainname", !req.domainname.is_empty()),
        ("MacAddress", !req.mac_address.is_empty()),
        (
            "Healthcheck",
            health.is_some_and(|t| !t.is_empty() && t != ["NONE"]),
        ),
    ];
    let none = UnsupportedHostConfig::default();
    let h = req.host_config.as_ref().map_or(&none, |h| &h.unsupported);
    let restart = h.restart_policy.as_ref();
    let host = [
        (
            "RestartPolicy",
            restart.is_some_and(|r| !matches!(r.name.as_str(), "" | "no")),
        ),
        ("PortBindings", map_nonempty(&h.port_bindings)),
        ("PublishAllPorts", h.publish_all_ports),
        (
            "VolumeDriver",
            !matches!(h.volume_driver.as_str(), "" | "local"),
        ),
        ("VolumesFrom", some_nonempty(&h.volumes_from)),
        ("Links", some_nonempty(&h.links)),
        ("Dns", some_nonempty(&h.dns)),
        ("DnsOptions", some_nonempty(&h.dns_options)),
        ("DnsSearch", some_nonempty(&h.dns_search)),
        ("GroupAdd", some_nonempty(&h.group_add)),
        ("Annotations", map_nonempty(&h.annotations)),
        ("StorageOpt", map_nonempty(&h.storage_opt)),
        ("Sysctls", map_nonempty(&h.sysctls)),
        ("CgroupnsMode", !h.cgroupns_mode.is_empty()),
        (
            "IpcMode",
            !matches!(h.ipc_mode.as_str(), "" | "private" | "shareable"),
        ),
        ("Cgroup", !h.cgroup.is_empty()),
        ("PidMode", !h.pid_mode.is_empty()),
        ("UTSMode", !h.uts_mode.is_empty()),
        ("UsernsMode", !h.userns_mode.is_empty()),
        ("Runtime", !matches!(h.runtime.as_str(), "" | "runc")),
        ("Isolation", !matches!(h.isolation.as_str(), "" | "default")),
        ("OomScoreAdj", h.oom_score_adj != 0),
        ("OomKillDisable", h.oom_kill_disable == Some(true)),
        ("ShmSize", h.shm_size != 0),
        ("BlkioWeight", h.blkio_weight != 0),
        ("BlkioWeightDevice", some_nonempty(&h.blkio_weight_device)),
        (
            "BlkioDeviceReadBps",
            some_nonempty(&h.blkio_device_read_bps),
        ),
        (
            "BlkioDeviceWriteBps",
            some_nonempty(&h.blkio_device_write_bps),
        ),
        (
            "BlkioDeviceReadIOps",
            some_nonempty(&h.blkio_device_read_iops),
        ),
        (
            "BlkioDeviceWriteIOps",
            some_nonempty(&h.blkio_device_write_iops),
        ),
        ("CpuRealtimePeriod", h.cpu_realtime_period != 0),
        ("CpuRealtimeRuntime", h.cpu_realtime_runtime != 0),
        ("CpusetCpus", !h.cpuset_cpus.is_empty()),
        ("CpusetMems", !h.cpuset_mems.is_empty()),
        ("CpuCount", h.cpu_count != 0),
        ("CpuPercent", h.cpu_percent != 0),
        ("IOMaximumIOps", h.io_maximum_iops != 0),
        ("IOMaximumBandwidth", h.io_maximum_bandwidth != 0),
        ("DeviceRequests", some_nonempty(&h.device_requests)),
        ("KernelMemory", h.kernel_memory != 0),
        ("KernelMemoryTCP", h.kernel_memory_tcp != 0),
        ("MemoryReservation", h.memory_reservation != 0),
        (
            "MemorySwappiness",
            h.memory_swappiness.is_some_and(|s| s != -1),
        ),
        ("Ulimits", some_nonempty(&h.ulimits)),
        ("MaskedPaths", h.masked_paths.is_some()),
        ("ReadonlyPaths", h.readonly_paths.is_some()),
    ];
    config
        .into_iter()
        .chain(host)
        .find(|(_, set)| *set)
        .map(|(name, _)| name)
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
pub fn apply_security(host_config: &Value, spec: &mut ContainerSpec) -> Result<()> {
    let host: HostConfig = serde_json::from_value(host_config.clone())
        .map_err(|e| Error::invalid(format!("invalid HostConfig: {e}")))?;
    let (security, no_new_privileges) = security(&host)?;
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
    if let Some(field) = unsupported_field(&req) {
        return Err(Error::invalid(format!(
            "{field} is not supported by Strata: leave it unset (see docs/security.md, \
             \"Container options\")"
        )));
    }
    let host = req.host_config.clone().unwrap_or_default();
    // Refused here, as Docker, rather than at the first `docker stop`.
    if let Some(sig) = req.stop_signal.as_deref().filter(|s| !s.is_empty()) {
        super::lifecycle::parse_signal(sig)?;
    }
    security(&host)?;
    if let Some(log) = req
        .host_config
        .as_ref()
        .and_then(|h| h.unsupported.log_config.as_ref())
    {
        check_log_config(log)?;
    }
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

    let env = merge_env(req.env.clone().unwrap_or_default(), img_strings("Env"));
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

/// `--log-driver` and `--log-opt`, refused at create as Docker does: json-file is the one
/// driver, and of its options Strata keeps `max-size` and `max-file`.
fn check_log_config(log: &crate::container::logs::LogConfig) -> Result<()> {
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
    use super::*;

    #[test]
    fn image_defaults_fill_the_gaps() {
        let img = json!({"Env": ["PATH=/bin", "A=1"], "Cmd": ["sh"], "WorkingDir": "/w", "Volumes": {"/data": {}}});
        let p = prepare(&json!({"Image": "bb", "Env": ["A=2"]}), Some(&img)).unwrap();
        assert_eq!(p.path, "sh");
        assert_eq!(p.config["Env"], json!(["A=2", "PATH=/bin"]));
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
