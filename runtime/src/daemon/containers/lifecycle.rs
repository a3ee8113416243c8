//! Start, stop, kill and the monitor that records an exit: the steps between a container's
//! record and its process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use strata_api_types::HostConfig;
use strata_core::store::MountGuard;
use strata_core::{CallerId, Error, Result, VolumeName};

use super::mounts::MountRequest;
use super::process_identity::ProcessIdentity;
use super::record::{MountPoint, Status, ZERO_TIME};
use super::{Container, Exits};
use crate::cgroups::{CpuLimits, MemoryLimits, Resources};
use crate::container::{self, ContainerSpec, MountSpec, Network, Propagation, StartError};
use crate::daemon::Daemon;

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Kills what a daemon that died left of a container (we do not live-restore): every process
/// in its cgroup, and only if its recorded process is still that process. After a reboot, or
/// when the pid now belongs to another process (or the record predates process identities),
/// nothing is signalled.
pub fn kill_orphan(rec: &super::record::ContainerRecord) {
    let state = &rec.state;
    match &state.process {
        Some(p) if p.is_alive() => {
            let parent = Some(rec.host_config.cgroup_parent.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(crate::cgroups::DEFAULT_PARENT);
            if let Err(e) = container::kill_leftover(&rec.id, parent) {
                tracing::warn!(container = %rec.id, "killing the leftover container: {e}");
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), Signal::SIGKILL);
            }
        }
        Some(_) => tracing::info!(pid = state.pid, "recorded container process is gone"),
        None => tracing::warn!(
            pid = state.pid,
            "no identity recorded for the container's process; not signalling the pid"
        ),
    }
}

/// Parses `SIGTERM`, `TERM` or `15`.
pub fn parse_signal(s: &str) -> Result<Signal> {
    let bad = || Error::invalid(format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| bad());
    }
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<Signal>().map_err(|_| bad())
}

/// Waits until the monitor has recorded the end of the current run.
pub async fn wait_until_stopped(c: &Container) {
    let mut rx = c.exits.subscribe();
    while c.is_running() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Starts a container. Ok(false) when it was already running (the API answers 304). A
/// `--rm` container whose start fails is removed, as Docker does (its CLI waits for that).
pub async fn start(d: &Arc<Daemon>, key: &str) -> Result<bool> {
    let c = d.containers.get(key)?;
    let result = start_locked(d, &c).await;
    if result.is_err() && c.record().auto_remove {
        let id = c.record().id.clone();
        if let Err(e) = d.containers.remove(&id, true, true, &d.volumes).await {
            tracing::warn!(container = %id, "auto-remove after a failed start: {e}");
        }
    }
    result
}

async fn start_locked(d: &Arc<Daemon>, c: &Arc<Container>) -> Result<bool> {
    let _op = c.op_lock.lock().await;
    let rec = c.snapshot();
    if rec.state.status == Status::Running {
        return Ok(false);
    }
    let rootfs = d.layers.mount_rw(&rec.id).await?;
    let caller = CallerId::new(rec.id.clone())?;
    let mut mounted_volumes = Vec::new();
    let prepared = prepare_run(d, c, &rootfs, &caller, &mut mounted_volumes).await;
    let (spec, points, log) = match prepared {
        Ok(p) => p,
        Err(e) => {
            release(d, rootfs, &caller, &mounted_volumes).await;
            return Err(e);
        }
    };
    match container::spawn_with_log(spec, c.output.clone(), log).await {
        Ok(mut running) => {
            let stdin = running.take_stdin();
            *c.stdin.lock().unwrap_or_else(|p| p.into_inner()) = stdin;
            let running = Arc::new(running);
            *c.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(running.clone());
            let recorded = record_start(d, c, &running, points);
            c.starts.send_modify(|n| *n += 1);
            if let Err(e) = recorded {
                // A start its record cannot show is undone, so no container runs unrecorded:
                // the process is killed, the monitor records the exit with this error, and
                // no restart policy starts it again.
                let _ = running.kill(Signal::SIGKILL);
                {
                    let mut r = c.record();
                    r.state.error = format!("the start could not be recorded: {e}");
                    r.manually_stopped = true;
                }
                tokio::spawn(monitor(
                    d.clone(),
                    c.clone(),
                    running,
                    rootfs,
                    caller,
                    mounted_volumes,
                ));
                return Err(e);
            }
            super::health::watch(d, c);
            tokio::spawn(monitor(
                d.clone(),
                c.clone(),
                running,
                rootfs,
                caller,
                mounted_volumes,
            ));
            Ok(true)
        }
        Err(e) => {
            release(d, rootfs, &caller, &mounted_volumes).await;
            let (code, message) = match &e {
                StartError::Exec { exit_code, message } => (*exit_code, message.clone()),
                StartError::Setup(err) => (128, err.to_string()),
            };
            {
                let mut r = c.record();
                r.state.status = Status::Exited;
                r.state.exit_code = code;
                r.state.error = message.clone();
                r.state.finished_at = Some(now());
                r.save(&d.containers.root)?;
            }
            c.exits.send_modify(|x| {
                x.count += 1;
                x.last_code = code as i64;
            });
            Err(match e {
                StartError::Exec { .. } => Error::invalid(format!(
                    "failed to create task for container: exec failed: {message}"
                )),
                StartError::Setup(err) => err,
            })
        }
    }
}

/// Volumes and mounts, the runtime spec and the log options of a run.
async fn prepare_run(
    d: &Daemon,
    c: &Container,
    rootfs: &MountGuard,
    caller: &CallerId,
    mounted_volumes: &mut Vec<VolumeName>,
) -> Result<(ContainerSpec, Vec<MountPoint>, container::logs::LogOptions)> {
    let (specs, points) = prepare_mounts(d, c, rootfs.path(), caller, mounted_volumes).await?;
    let spec = build_spec(d, c, rootfs.path().to_path_buf(), specs)?;
    let log = log_options(&c.record().host_config)?;
    Ok((spec, points, log))
}

/// Records a run that began. The process runs whatever happens here, so a record that cannot
/// be saved is logged (the exit saves it again) rather than failing the start, which would
/// leave a running process with no monitor.
fn record_start(
    d: &Daemon,
    c: &Container,
    running: &container::RunningContainer,
    points: Vec<MountPoint>,
) -> Result<()> {
    let mut r = c.record();
    r.mounts = points;
    r.sizes = None;
    r.state.status = Status::Running;
    r.state.pid = running.pid();
    r.state.process = ProcessIdentity::of(running.pid());
    r.state.exit_code = 0;
    r.state.oom_killed = false;
    r.state.error.clear();
    r.manually_stopped = false;
    r.restarting = false;
    r.state.started_at = Some(
        running
            .started_at()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    );
    r.state.finished_at = Some(ZERO_TIME.into());
    r.save(&d.containers.root).inspect_err(|e| {
        tracing::error!(container = %r.id, "cannot record the start: {e}");
    })
}

/// `HostConfig.LogConfig`'s rotation (`--log-opt max-size/max-file`), or our default.
fn log_options(host_config: &HostConfig) -> Result<container::logs::LogOptions> {
    container::logs::LogOptions::from_config(&host_config.log_config)
}

/// Waits for the run to end, records how, and undoes what start mounted.
async fn monitor(
    d: Arc<Daemon>,
    c: Arc<Container>,
    running: Arc<container::RunningContainer>,
    rootfs: MountGuard,
    caller: CallerId,
    volumes: Vec<VolumeName>,
) {
    let status = running.wait().await;
    *c.stdin.lock().unwrap_or_else(|p| p.into_inner()) = None;
    release(&d, rootfs, &caller, &volumes).await;
    let auto_remove = {
        let mut r = c.record();
        r.state.status = Status::Exited;
        r.state.pid = 0;
        r.state.process = None;
        r.state.exit_code = status.code;
        r.state.oom_killed = status.oom_killed;
        r.state.finished_at = Some(
            status
                .finished_at
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        );
        if let Err(e) = r.save(&d.containers.root) {
            tracing::error!(container = %r.id, "cannot record the exit: {e}");
        }
        r.auto_remove
    };
    *c.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
    // Docker forgets a container's exec instances when it stops.
    d.execs.forget_container(&c.record().id);
    let rec = c.snapshot();
    if status.oom_killed {
        crate::daemon::events::emit_container(&d, "oom", &rec, &[]);
    }
    let code = status.code.to_string();
    crate::daemon::events::emit_container(&d, "die", &rec, &[("exitCode", code.as_str())]);
    c.exits.send_modify(|x| {
        x.count += 1;
        x.last_code = status.code as i64;
    });
    d.sizes.invalidate(&c.record().id);
    if !auto_remove {
        super::record_sizes(d.containers.root.clone(), d.layers.clone(), &c).await;
        restart_by_policy(&d, &c, status.code, running.started_at());
    }
    if auto_remove {
        let id = c.record().id.clone();
        if let Err(e) = d.containers.remove(&id, true, true, &d.volumes).await {
            tracing::warn!(container = %id, "auto-remove failed: {e}");
        }
    }
}

/// Schedules the restart the container's policy asks for after this exit, if any.
fn restart_by_policy(
    d: &Arc<Daemon>,
    c: &Arc<Container>,
    code: i32,
    started_at: chrono::DateTime<chrono::Utc>,
) {
    if d.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let delay = {
        let mut r = c.record();
        let policy = r.host_config.restart_policy.clone();
        if !super::restart::wants_restart(&policy, code, r.manually_stopped, r.restart_count) {
            return;
        }
        let ran = (chrono::Utc::now() - started_at)
            .to_std()
            .unwrap_or_default();
        r.restart_delay_ms = super::restart::next_delay_ms(r.restart_delay_ms, ran);
        r.restarting = true;
        r.restart_delay_ms
    };
    super::restart::schedule(d.clone(), c.clone(), delay);
}

/// Unmounts what a run mounted: its volumes, then its root (the guard logs a failure).
async fn release(d: &Daemon, rootfs: MountGuard, caller: &CallerId, volumes: &[VolumeName]) {
    for v in volumes {
        if let Err(e) = d.volumes.unmount(v, caller).await {
            tracing::warn!(volume = %v, "unmount failed: {e}");
        }
    }
    let _ = rootfs.release().await;
}

/// Creates and mounts volumes, checks bind sources, and gives the runtime's mount list and
/// inspect's `Mounts`.
async fn prepare_mounts(
    d: &Daemon,
    c: &Container,
    rootfs: &Path,
    caller: &CallerId,
    mounted: &mut Vec<VolumeName>,
) -> Result<(Vec<MountSpec>, Vec<MountPoint>)> {
    let requests = c.record().mount_requests.clone();
    let mut specs = Vec::new();
    let mut points = Vec::new();
    let mut resolved_requests = Vec::new();
    for req in requests {
        match &req {
            MountRequest::Bind {
                source,
                target,
                read_only,
                create_source,
                propagation,
            } => {
                let src = PathBuf::from(source);
                if !src.exists() {
                    if *create_source {
                        std::fs::create_dir_all(&src)
                            .map_err(|e| Error::io("create bind source", &src, e))?;
                    } else {
                        return Err(Error::invalid(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {source}"
                        )));
                    }
                }
                let mut spec = MountSpec::bind(&src, target.clone(), *read_only);
                spec.propagation = parse_propagation(propagation);
                specs.push(spec);
                points.push(MountPoint {
                    kind: "bind".into(),
                    name: String::new(),
                    source: source.clone(),
                    destination: target.clone(),
                    driver: String::new(),
                    mode: if *read_only {
                        "ro".into()
                    } else {
                        String::new()
                    },
                    rw: !read_only,
                    propagation: if propagation.is_empty() {
                        "rprivate".into()
                    } else {
                        propagation.clone()
                    },
                });
                resolved_requests.push(req.clone());
            }
            MountRequest::Volume {
                name,
                target,
                read_only,
                driver,
                driver_opts,
                nocopy,
            } => {
                let name = match name {
                    Some(n) => VolumeName::new(n.as_str())?,
                    None => {
                        let v = d
                            .volumes
                            .create(None, driver.as_deref(), driver_opts, Default::default())
                            .await?;
                        VolumeName::new(v.name)?
                    }
                };
                let existed = d.volumes.inspect(&name).await.is_ok();
                let view = if existed {
                    d.volumes.inspect(&name).await?
                } else {
                    d.volumes
                        .create(
                            Some(name.clone()),
                            driver.as_deref(),
                            driver_opts,
                            Default::default(),
                        )
                        .await?
                };
                let path = d.volumes.mount(&name, caller).await?;
                mounted.push(name.clone());
                d.volumes.add_user(&name, caller.as_str());
                if !nocopy {
                    copy_image_content(rootfs, target, &path)?;
                }
                specs.push(MountSpec::volume(&path, target.clone(), *read_only));
                points.push(MountPoint {
                    kind: "volume".into(),
                    name: name.to_string(),
                    source: path.display().to_string(),
                    destination: target.clone(),
                    driver: view.driver.clone(),
                    mode: if *read_only { "ro".into() } else { "z".into() },
                    rw: !read_only,
                    propagation: String::new(),
                });
                // Remember the anonymous volume's name so a restart reuses it.
                resolved_requests.push(MountRequest::Volume {
                    name: Some(name.to_string()),
                    target: target.clone(),
                    read_only: *read_only,
                    driver: driver.clone(),
                    driver_opts: driver_opts.clone(),
                    nocopy: *nocopy,
                });
            }
            MountRequest::Tmpfs {
                target,
                size_bytes,
                mode,
                read_only,
            } => {
                let mut spec = MountSpec::tmpfs(target.clone(), *size_bytes, *mode);
                spec.read_only = *read_only;
                specs.push(spec);
                points.push(MountPoint {
                    kind: "tmpfs".into(),
                    name: String::new(),
                    source: String::new(),
                    destination: target.clone(),
                    driver: String::new(),
                    mode: String::new(),
                    rw: !read_only,
                    propagation: String::new(),
                });
                resolved_requests.push(req.clone());
            }
        }
    }
    c.record().mount_requests = resolved_requests;
    Ok((specs, points))
}

/// Docker fills a new, empty volume with what the image has at the mount target.
fn copy_image_content(rootfs: &Path, target: &str, volume: &Path) -> Result<()> {
    let is_empty = std::fs::read_dir(volume)
        .map(|mut e| e.next().is_none())
        .unwrap_or(false);
    if !is_empty {
        return Ok(());
    }
    let Ok(root) = rootfs.canonicalize() else {
        return Ok(());
    };
    let Ok(src) = root.join(target.trim_start_matches('/')).canonicalize() else {
        return Ok(());
    };
    // A symlink in the image must not lead the copy outside the container's root.
    if !src.starts_with(&root) || !src.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(&src).map_err(|e| Error::io("read directory", &src, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", &src, e))?;
        let from = entry.path();
        let to = volume.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).map_err(|e| Error::io("stat", &from, e))?;
        if meta.is_dir() {
            strata_core::fsutil::copy::copy_tree(&from, &to)?;
        } else {
            copy_entry(&from, &to, &meta)?;
        }
    }
    Ok(())
}

fn copy_entry(from: &Path, to: &Path, meta: &std::fs::Metadata) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(|e| Error::io("readlink", from, e))?;
        std::os::unix::fs::symlink(&target, to).map_err(|e| Error::io("symlink", to, e))?;
    } else if meta.is_file() {
        std::fs::copy(from, to).map_err(|e| Error::io("copy", from, e))?;
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(|e| Error::io("chmod", to, e))?;
    } else {
        return Ok(());
    }
    let _ = std::os::unix::fs::lchown(to, Some(meta.uid()), Some(meta.gid()));
    Ok(())
}

fn parse_propagation(p: &str) -> Propagation {
    match p {
        "private" => Propagation::Private,
        "rshared" => Propagation::RShared,
        "shared" => Propagation::Shared,
        "rslave" => Propagation::RSlave,
        "slave" => Propagation::Slave,
        _ => Propagation::RPrivate,
    }
}

fn build_spec(
    d: &Daemon,
    c: &Container,
    rootfs: PathBuf,
    mounts: Vec<MountSpec>,
) -> Result<ContainerSpec> {
    let rec = c.snapshot();
    let cfg = &rec.config;
    let hc = &rec.host_config;
    let mut args = vec![rec.path.clone()];
    args.extend(rec.args.iter().cloned());
    let dir = super::record::ContainerRecord::dir(&d.containers.root, &rec.id);
    let mut spec = ContainerSpec::new(rec.id.clone(), rootfs, dir, args);
    if !cfg.hostname.is_empty() {
        spec.hostname = cfg.hostname.clone();
    }
    spec.env = cfg.env.clone().unwrap_or_default();
    spec.cwd = cfg.working_dir.clone();
    spec.user = cfg.user.clone();
    spec.group_add = hc.group_add.clone().unwrap_or_default();
    spec.tty = cfg.tty;
    spec.stdin = cfg.open_stdin;
    spec.read_only_rootfs = hc.readonly_rootfs;
    spec.network = match hc.network_mode.as_str() {
        "host" => Network::Host,
        _ => Network::None,
    };
    spec.extra_hosts = hc
        .extra_hosts
        .iter()
        .flatten()
        .filter_map(|h| h.split_once(':').map(|(n, ip)| format!("{ip}\t{n}")))
        .collect();
    spec.init = hc.init.unwrap_or(false);
    // Capabilities, seccomp, devices, no_new_privs (on unless `no-new-privileges=false`).
    super::create::apply_security(hc, &mut spec)?;
    spec.mounts = mounts;
    spec.resources = resources(hc);
    if !hc.cgroup_parent.is_empty() {
        spec.cgroup_parent = hc.cgroup_parent.clone();
    }
    Ok(spec)
}

/// `--memory`, `--memory-swap`, `--cpus` (or `--cpu-quota`/`--cpu-period`), `--cpu-shares`,
/// `--pids-limit`; zero (or less) means no limit, as Docker.
pub(super) fn resources(hc: &HostConfig) -> Resources {
    let mut cpu = if hc.nano_cpus > 0 {
        CpuLimits::from_nano_cpus(hc.nano_cpus)
    } else {
        CpuLimits {
            quota_us: (hc.cpu_quota > 0).then_some(hc.cpu_quota),
            period_us: (hc.cpu_period > 0).then_some(hc.cpu_period as u64),
            shares: None,
        }
    };
    cpu.shares = (hc.cpu_shares > 0).then_some(hc.cpu_shares as u64);
    Resources {
        memory: MemoryLimits {
            memory: (hc.memory > 0).then_some(hc.memory),
            memory_swap: (hc.memory_swap != 0).then_some(hc.memory_swap),
        },
        cpu,
        pids_limit: hc.pids_limit.filter(|p| *p > 0),
    }
}

/// Stops a running container: its stop signal, then SIGKILL after `grace`. Ok(false) when it
/// was not running (304).
pub async fn stop(
    d: &Arc<Daemon>,
    key: &str,
    signal: Option<&str>,
    grace: Option<i64>,
) -> Result<bool> {
    let c = d.containers.get(key)?;
    let _op = c.op_lock.lock().await;
    // Also when it is not running: a restart waiting for its delay is called off.
    mark_stopped_by_hand(d, &c);
    let Some(running) = c.running() else {
        return Ok(false);
    };
    super::pause::thaw_for_signal(&c).await;
    let rec = c.snapshot();
    let sig_name = signal
        .map(str::to_string)
        .or_else(|| Some(rec.config.stop_signal.clone()).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "SIGTERM".into());
    let sig = parse_signal(&sig_name)?;
    let grace = grace.or(rec.config.stop_timeout).unwrap_or(10).max(0) as u64;
    running.stop(sig, Duration::from_secs(grace)).await;
    drop(running);
    wait_until_stopped(&c).await;
    Ok(true)
}

pub async fn kill(d: &Arc<Daemon>, key: &str, signal: Option<&str>) -> Result<()> {
    let c = d.containers.get(key)?;
    let sig = parse_signal(signal.filter(|s| !s.is_empty()).unwrap_or("SIGKILL"))?;
    let Some(running) = c.running() else {
        return Err(Error::busy(format!(
            "Cannot kill container: {}: container {} is not running",
            key,
            c.record().id
        )));
    };
    super::pause::thaw_for_signal(&c).await;
    mark_stopped_by_hand(d, &c);
    running.kill(sig)?;
    if sig == Signal::SIGKILL {
        drop(running);
        wait_until_stopped(&c).await;
    }
    Ok(())
}

/// `docker stop`/`kill`: no restart policy starts the container again until it is started.
fn mark_stopped_by_hand(d: &Daemon, c: &Container) {
    if d.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let mut r = c.record();
    r.manually_stopped = true;
    r.restarting = false;
}

pub async fn restart(d: &Arc<Daemon>, key: &str, grace: Option<i64>) -> Result<()> {
    stop(d, key, None, grace).await?;
    start(d, key).await.map(|_| ())
}

/// The exit events a waiter starts from.
pub fn exits_now(c: &Container) -> Exits {
    *c.exits.borrow()
}
