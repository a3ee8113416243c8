//! `/containers/...`: create, start, wait, attach, logs, stop, kill, restart, rm, ps, inspect.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use strata_api_types::container::{
    ContainerInspect, ContainerState, ContainerSummary, CreateResponse, GraphDriver, MountPoint,
    NetworkSettings, PruneReport, StrataContainerSizes, SummaryHostConfig, WaitError, WaitResponse,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::{ApiError, ApiResult};
use super::events;
use super::filters::{truthy, Filters};
use super::stream::{self, StreamKind};
use super::AppState;
use crate::container::logs::{read_logs, LogReadOptions};
use crate::container::OutputChunk;
use crate::daemon::containers::lifecycle;
use crate::daemon::containers::record::{ContainerRecord, Status, ZERO_TIME};
use crate::daemon::containers::Container;
use crate::daemon::serve::ClientSocket;
use crate::daemon::Daemon;

type Params = Query<HashMap<String, String>>;

pub(super) fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    q.get(key).map(String::as_str)
}

pub(super) fn int_param(q: &HashMap<String, String>, key: &str) -> ApiResult<Option<i64>> {
    match param(q, key).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {v:?}"))),
    }
}

pub async fn create(
    State(d): State<AppState>,
    Query(q): Params,
    body: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    if !body.is_object() {
        return Err(ApiError::bad_request(
            "container config must be a JSON object",
        ));
    }
    let req = crate::daemon::containers::create::parse_request(&body)?;
    let (id, warnings) = d
        .containers
        .create(param(&q, "name"), &req, &d.volumes)
        .await?;
    events::container(&d, "create", &id, &[]);
    Ok((StatusCode::CREATED, Json(CreateResponse { id, warnings })).into_response())
}

pub async fn start(State(d): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    Ok(if lifecycle::start(&d, &id).await? {
        events::container(&d, "start", &id, &[]);
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_MODIFIED
    })
}

pub async fn stop(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<StatusCode> {
    let grace = int_param(&q, "t")?;
    Ok(
        if lifecycle::stop(&d, &id, param(&q, "signal"), grace).await? {
            events::container(&d, "stop", &id, &[]);
            StatusCode::NO_CONTENT
        } else {
            StatusCode::NOT_MODIFIED
        },
    )
}

pub async fn restart(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<StatusCode> {
    lifecycle::restart(&d, &id, int_param(&q, "t")?).await?;
    events::container(&d, "restart", &id, &[]);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn kill(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<StatusCode> {
    lifecycle::kill(&d, &id, param(&q, "signal")).await?;
    let signal = param(&q, "signal").unwrap_or("SIGKILL");
    events::container(&d, "kill", &id, &[("signal", signal)]);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<StatusCode> {
    let before = d.containers.get(&id).map(|c| c.snapshot());
    d.containers
        .remove(
            &id,
            truthy(param(&q, "force")),
            truthy(param(&q, "v")),
            &d.volumes,
        )
        .await?;
    if let Ok(rec) = before {
        events::emit_container(&d, "destroy", &rec, &[]);
    }
    Ok(StatusCode::NO_CONTENT)
}

pub async fn resize(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<StatusCode> {
    let c = d.containers.get(&id)?;
    let h = int_param(&q, "h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = int_param(&q, "w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    if let Some(r) = c.running() {
        r.resize(h, w)?;
    }
    Ok(StatusCode::OK)
}

/// `POST /containers/{id}/wait`: the 200 and its headers go out at once (the CLI calls wait
/// before start and blocks until the headers arrive); the body follows at the exit.
pub async fn wait(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let condition = param(&q, "condition").unwrap_or("not-running").to_string();
    if !matches!(condition.as_str(), "not-running" | "next-exit" | "removed") {
        return Err(ApiError::bad_request(format!(
            "invalid condition: {condition:?} (not-running, next-exit or removed)"
        )));
    }
    let start = lifecycle::exits_now(&c);
    let mut exits = c.exits.subscribe();
    let mut removed = c.removed.subscribe();
    let body = async move {
        match condition.as_str() {
            "removed" => {
                while !*removed.borrow_and_update() {
                    if removed.changed().await.is_err() {
                        break;
                    }
                }
            }
            "next-exit" => {
                while exits.borrow_and_update().count == start.count {
                    if exits.changed().await.is_err() {
                        break;
                    }
                }
            }
            _ => {
                while c.is_running() {
                    if exits.changed().await.is_err() {
                        break;
                    }
                }
            }
        }
        let rec = c.snapshot();
        let error = (!rec.state.error.is_empty()).then(|| WaitError {
            message: rec.state.error.clone(),
        });
        Ok::<Bytes, std::io::Error>(stream::json_line(&WaitResponse {
            status_code: rec.state.exit_code.into(),
            error,
        }))
    };
    let stream = futures::stream::once(body);
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `POST /containers/{id}/attach`: answers 101 and streams the container's output (framed
/// unless it has a TTY), feeding stdin from the client when asked.
pub async fn attach(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
    mut req: Request,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let tty = c.record().config.tty;
    let want_stdin = truthy(param(&q, "stdin"));
    let want_stdout = truthy(param(&q, "stdout"));
    let want_stderr = truthy(param(&q, "stderr"));
    let on_upgrade = hyper::upgrade::on(&mut req);
    let client = req.extensions().get::<ClientSocket>().copied();
    let output = c.output.subscribe();
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("attach upgrade failed: {e}");
                return;
            }
        };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let (mut reader, mut writer) = tokio::io::split(io);
        // Both pumps end when the client hangs up, so neither the tasks nor the connection
        // outlive it (a container that prints nothing would otherwise keep them forever).
        let hangup = async move {
            match client {
                Some(socket) => socket.closed().await,
                None => std::future::pending().await,
            }
        };
        let stdin = want_stdin.then(|| {
            let c2 = c.clone();
            tokio::spawn(async move { pump_stdin(&c2, &mut reader).await })
        });
        tokio::select! {
            () = pump_output(&c, output, &mut writer, tty, want_stdout, want_stderr) => {
                let _ = writer.shutdown().await;
            }
            () = hangup => tracing::debug!(container = %c.record().id, "attach client went away"),
        }
        if let Some(stdin) = stdin {
            stdin.abort();
        }
    });
    Ok(stream::upgrade_response(tty))
}

async fn pump_stdin<R: tokio::io::AsyncRead + Unpin>(c: &Arc<Container>, reader: &mut R) {
    // Attach comes before start: wait for the run that gives us a stdin.
    let mut starts = c.starts.subscribe();
    let stdin = loop {
        if let Some(s) = c.stdin.lock().unwrap_or_else(|p| p.into_inner()).take() {
            break s;
        }
        if starts.changed().await.is_err() {
            return;
        }
    };
    let mut stdin = stdin;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if stdin.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    // Dropping stdin closes it, so `cat` and friends see EOF.
}

async fn pump_output<W: tokio::io::AsyncWrite + Unpin>(
    c: &Arc<Container>,
    mut output: tokio::sync::broadcast::Receiver<OutputChunk>,
    writer: &mut W,
    tty: bool,
    want_stdout: bool,
    want_stderr: bool,
) {
    let start = lifecycle::exits_now(c);
    let mut exits = c.exits.subscribe();
    let write = |chunk: OutputChunk| -> Option<Bytes> {
        let kind = match chunk.stream {
            crate::container::StreamKind::Stdout if want_stdout => StreamKind::Stdout,
            crate::container::StreamKind::Stderr if want_stderr => StreamKind::Stderr,
            _ => return None,
        };
        Some(if tty {
            chunk.data
        } else {
            stream::frame(kind, &chunk.data)
        })
    };
    loop {
        tokio::select! {
            biased;
            msg = output.recv() => match msg {
                Ok(chunk) => {
                    if let Some(bytes) = write(chunk) {
                        if writer.write_all(&bytes).await.is_err() { return; }
                        let _ = writer.flush().await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!("attach fell behind; {n} output chunks skipped");
                }
                Err(_) => return,
            },
            changed = exits.changed() => {
                if changed.is_err() { return; }
                if exits.borrow().count != start.count {
                    // The run ended: deliver what is still queued, then close.
                    while let Ok(chunk) = output.try_recv() {
                        if let Some(bytes) = write(chunk) {
                            if writer.write_all(&bytes).await.is_err() { return; }
                        }
                    }
                    let _ = writer.flush().await;
                    return;
                }
            }
        }
    }
}

/// `GET /containers/{id}/logs`.
pub async fn logs(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Response> {
    let c = d.containers.get(&id)?;
    let rec = c.snapshot();
    let tty = rec.config.tty;
    let stdout = truthy(param(&q, "stdout"));
    let stderr = truthy(param(&q, "stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request("you must choose at least one stream"));
    }
    let timestamps = truthy(param(&q, "timestamps"));
    let tail = match param(&q, "tail") {
        None | Some("all") | Some("") => None,
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid tail: {n:?}")))?,
        ),
    };
    let since = parse_time(param(&q, "since"))?;
    let until = parse_time(param(&q, "until"))?;
    let follow = truthy(param(&q, "follow"));
    let running = c.running();
    let exit = if follow {
        running.as_ref().map(|r| r.exit_watch())
    } else {
        None
    };
    let opts = LogReadOptions {
        stdout,
        stderr,
        since,
        until,
        tail,
        follow: follow && exit.is_some(),
    };
    let dir = ContainerRecord::dir(&d.containers.root, &rec.id);
    let path = dir.join(crate::container::logs::log_file_name(&rec.id));
    let entries = read_logs(path, opts, exit);
    let body = entries.map(move |entry| match entry {
        Ok(e) => {
            let data = e.render(timestamps);
            let kind = match e.stream {
                crate::container::StreamKind::Stderr => StreamKind::Stderr,
                _ => StreamKind::Stdout,
            };
            Ok::<Bytes, std::io::Error>(if tty {
                data
            } else {
                stream::frame(kind, &data)
            })
        }
        Err(e) => Err(std::io::Error::other(e.to_string())),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, stream::stream_content_type(tty))
        .body(Body::from_stream(body))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// `since`/`until`: unix seconds (with optional fraction), as the CLI sends them.
pub(super) fn parse_time(v: Option<&str>) -> ApiResult<Option<chrono::DateTime<chrono::Utc>>> {
    let Some(v) = v.filter(|v| !v.is_empty() && *v != "0") else {
        return Ok(None);
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, "0"));
    let secs: i64 = secs
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid time {v:?}")))?;
    // The first nine characters (not bytes: a client may send any UTF-8), zero-padded.
    let nine: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = nine.parse().unwrap_or(0);
    Ok(chrono::DateTime::from_timestamp(secs, nanos))
}

fn unix_time(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn command_line(rec: &ContainerRecord) -> String {
    let quote = |s: &str| {
        if s.is_empty() || s.contains(|c: char| c.is_whitespace() || "'\"$\\".contains(c)) {
            format!("'{}'", s.replace('\'', "'\\''"))
        } else {
            s.to_string()
        }
    };
    std::iter::once(rec.path.as_str())
        .chain(rec.args.iter().map(String::as_str))
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mount_points(rec: &ContainerRecord) -> Vec<MountPoint> {
    let named = |s: &str| (!s.is_empty()).then(|| s.to_string());
    rec.mounts
        .iter()
        .map(|m| MountPoint {
            kind: m.kind.clone(),
            name: named(&m.name),
            source: m.source.clone(),
            destination: m.destination.clone(),
            driver: named(&m.driver),
            mode: m.mode.clone(),
            rw: m.rw,
            propagation: m.propagation.clone(),
        })
        .collect()
}

/// A record whose create body had no `HostConfig` object kept no `NetworkMode`: it is `none`.
fn network_mode(rec: &ContainerRecord) -> &str {
    match rec.host_config.network_mode.as_str() {
        "" => "none",
        mode => mode,
    }
}

fn network_settings(rec: &ContainerRecord) -> NetworkSettings {
    NetworkSettings::unconfigured(network_mode(rec))
}

/// `docker pause` state, kept in memory (see `daemon::containers::pause`).
fn paused(d: &Daemon, rec: &ContainerRecord) -> bool {
    d.containers
        .get(&rec.id)
        .is_ok_and(|c| crate::daemon::containers::pause::is_paused(&c))
}

fn recorded(rec: &ContainerRecord) -> Option<crate::daemon::sizes::ContainerSize> {
    rec.sizes.map(|s| crate::daemon::sizes::ContainerSize {
        size_rw: s.size_rw,
        on_disk: s.on_disk,
    })
}

/// Sizes of images already measured while answering one request: `ps -s` and `system df`
/// list many containers on few images, and an image's size walks its layerdb entries.
pub type ImageSizes = HashMap<String, u64>;

/// (allocated bytes of the container's own storage, plus its image's for `SizeRootFs`, and
/// Docker's content bytes changed) — see `daemon::accounting`.
async fn sizes(d: &Daemon, rec: &ContainerRecord) -> (i64, i64, i64) {
    sizes_with(d, rec, &mut ImageSizes::new()).await
}

async fn sizes_with(
    d: &Daemon,
    rec: &ContainerRecord,
    image_sizes: &mut ImageSizes,
) -> (i64, i64, i64) {
    let running = rec.state.status == Status::Running;
    let size = d
        .sizes
        .get(
            &rec.id,
            running,
            recorded(rec),
            &d.layers,
            crate::daemon::containers::own_dir(&d.containers.root, &rec.id),
        )
        .await
        .unwrap_or_default();
    let image_size = match image_sizes.get(&rec.image_id) {
        Some(size) => *size,
        None => {
            let size = strata_core::store::Digest::parse(&rec.image_id)
                .map(|id| super::images::on_disk(d, &id))
                .unwrap_or(0);
            image_sizes.insert(rec.image_id.clone(), size);
            size
        }
    };
    (
        size.on_disk as i64,
        image_size as i64 + size.on_disk as i64,
        size.size_rw as i64,
    )
}

/// One `ContainerSummary` (ps, system df); `image_sizes` is shared by one request's summaries.
pub async fn summary(
    d: &Daemon,
    rec: &ContainerRecord,
    with_size: bool,
    image_sizes: &mut ImageSizes,
) -> ContainerSummary {
    let paused = paused(d, rec);
    let status = rec.status_text(chrono::Utc::now());
    let mut summary = ContainerSummary {
        id: rec.id.clone(),
        names: vec![format!("/{}", rec.name)],
        image: rec.image_ref.clone(),
        image_id: rec.image_id.clone(),
        command: command_line(rec),
        created: unix_time(&rec.created),
        ports: Vec::new(),
        labels: rec.config.labels.clone().unwrap_or_default(),
        state: if paused {
            "paused"
        } else {
            rec.state.status.as_str()
        }
        .to_string(),
        status: if paused {
            format!("{status} (Paused)")
        } else {
            status
        },
        host_config: SummaryHostConfig {
            network_mode: network_mode(rec).to_string(),
        },
        network_settings: network_settings(rec),
        mounts: mount_points(rec),
        ..Default::default()
    };
    if with_size {
        let (rw, rootfs, changed) = sizes_with(d, rec, image_sizes).await;
        summary.size_rw = Some(rw);
        summary.size_root_fs = Some(rootfs);
        summary.strata = Some(StrataContainerSizes {
            on_disk: rw,
            changed_content_bytes: changed,
        });
    }
    summary
}

/// The values Docker accepts for `ps --filter status=`.
const STATUS_FILTER_VALUES: [&str; 7] = [
    "created",
    "restarting",
    "running",
    "removing",
    "paused",
    "exited",
    "dead",
];

pub async fn list(
    State(d): State<AppState>,
    Query(q): Params,
) -> ApiResult<Json<Vec<ContainerSummary>>> {
    let all = truthy(param(&q, "all"));
    let with_size = truthy(param(&q, "size"));
    let limit = int_param(&q, "limit")?.filter(|l| *l > 0);
    let filters = Filters::parse(param(&q, "filters"))?;
    let mut recs: Vec<ContainerRecord> = d.containers.all().iter().map(|c| c.snapshot()).collect();
    recs.sort_by(|a, b| b.created.cmp(&a.created));
    let mut out = Vec::new();
    let mut image_sizes = ImageSizes::new();
    if let Some(bad) = filters
        .get("status")
        .iter()
        .find(|s| !STATUS_FILTER_VALUES.contains(&s.as_str()))
    {
        return Err(ApiError::bad_request(format!(
            "invalid filter 'status={bad}'"
        )));
    }
    for rec in recs {
        let status_filter = filters.get("status");
        if !all && status_filter.is_empty() && rec.state.status != Status::Running {
            continue;
        }
        // A paused container's status is "paused", not "running", as Docker's.
        let state = if paused(&d, &rec) {
            "paused"
        } else {
            rec.state.status.as_str()
        };
        if !filters.matches("status", |s| s == state)
            || !filters.matches("name", |n| rec.name.contains(n.trim_start_matches('/')))
            || !filters.matches("id", |i| rec.id.starts_with(i))
            || !filters.matches("ancestor", |a| {
                a == rec.image_ref || rec.image_id.contains(a)
            })
        {
            continue;
        }
        out.push(summary(&d, &rec, with_size, &mut image_sizes).await);
        if limit.is_some_and(|l| out.len() as i64 >= l) {
            break;
        }
    }
    Ok(Json(out))
}

/// Inspect's `State`.
fn inspect_state(d: &Daemon, rec: &ContainerRecord) -> ContainerState {
    let s = &rec.state;
    let paused = paused(d, rec);
    ContainerState {
        status: if paused {
            "paused"
        } else if rec.restarting {
            "restarting"
        } else {
            s.status.as_str()
        }
        .to_string(),
        running: s.status == Status::Running,
        paused,
        restarting: rec.restarting,
        oom_killed: s.oom_killed,
        dead: s.status == Status::Dead,
        pid: s.pid.into(),
        exit_code: s.exit_code.into(),
        error: s.error.clone(),
        started_at: s.started_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
        finished_at: s.finished_at.clone().unwrap_or_else(|| ZERO_TIME.into()),
        health: s.health.clone(),
    }
}

pub async fn inspect(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Params,
) -> ApiResult<Json<ContainerInspect>> {
    let c = d.containers.get(&id)?;
    let rec = c.snapshot();
    let layer = strata_core::LayerId::new(rec.rw_layer.clone())?;
    let data = d.driver.metadata(&layer).await.unwrap_or_default();
    let dir = ContainerRecord::dir(&d.containers.root, &rec.id);
    let in_dir = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let mut v = ContainerInspect {
        id: rec.id.clone(),
        created: rec.created.clone(),
        path: rec.path.clone(),
        args: rec.args.clone(),
        state: inspect_state(&d, &rec),
        image: rec.image_id.clone(),
        resolv_conf_path: in_dir("resolv.conf"),
        hostname_path: in_dir("hostname"),
        hosts_path: in_dir("hosts"),
        log_path: in_dir(&crate::container::logs::log_file_name(&rec.id)),
        name: format!("/{}", rec.name),
        restart_count: rec.restart_count.into(),
        driver: d.driver.name().to_string(),
        platform: "linux".into(),
        mount_label: String::new(),
        process_label: String::new(),
        app_armor_profile: String::new(),
        exec_ids: exec_ids(&d, &rec.id),
        host_config: rec.host_config.clone(),
        graph_driver: GraphDriver {
            name: d.driver.name().to_string(),
            data: (!data.is_empty()).then_some(data),
        },
        mounts: mount_points(&rec),
        config: rec.config.clone(),
        network_settings: network_settings(&rec),
        size_rw: None,
        size_root_fs: None,
    };
    if truthy(param(&q, "size")) {
        let (rw, rootfs, _) = sizes(&d, &rec).await;
        v.size_rw = Some(rw);
        v.size_root_fs = Some(rootfs);
    }
    Ok(Json(v))
}

/// Inspect's `ExecIDs`: null when the container has none, as Docker.
fn exec_ids(d: &Daemon, id: &str) -> Option<Vec<String>> {
    let ids = d.execs.ids_of(id);
    (!ids.is_empty()).then_some(ids)
}

pub async fn prune(State(d): State<AppState>) -> ApiResult<Json<PruneReport>> {
    let mut deleted = Vec::new();
    let mut reclaimed = 0u64;
    for c in d.containers.all() {
        let rec = c.snapshot();
        if rec.state.status == Status::Running {
            continue;
        }
        let size = d
            .sizes
            .get(
                &rec.id,
                false,
                recorded(&rec),
                &d.layers,
                crate::daemon::containers::own_dir(&d.containers.root, &rec.id),
            )
            .await
            .map(|s| s.on_disk)
            .unwrap_or(0);
        if d.containers
            .remove(&rec.id, false, false, &d.volumes)
            .await
            .is_ok()
        {
            reclaimed += size;
            deleted.push(rec.id);
        }
    }
    Ok(Json(PruneReport {
        containers_deleted: deleted,
        space_reclaimed: reclaimed,
    }))
}
