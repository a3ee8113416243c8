//! `docker exec`: `POST /containers/{id}/exec`, `POST /exec/{id}/start` (detached, or a 101
//! hijack with attach's framing), `POST /exec/{id}/resize`, `GET /exec/{id}/json`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use super::containers::int_param;
use super::error::{ApiError, ApiResult};
use super::stream::{self, StreamKind};
use super::AppState;
use crate::container::exec::ExecIo;
use crate::container::io::FdStream;
use crate::daemon::containers::exec::{ExecInstance, ExecOptions, Started};

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecCreateRequest {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    /// `[rows, columns]` (API 1.42+).
    pub console_size: Option<Vec<u16>>,
    pub detach_keys: Option<String>,
    pub tty: bool,
    pub env: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub privileged: bool,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecStartRequest {
    pub detach: bool,
    pub tty: bool,
    pub console_size: Option<Vec<u16>>,
}

#[derive(Debug, Serialize)]
pub struct IdResponse {
    #[serde(rename = "Id")]
    pub id: String,
}

/// `GET /exec/{id}/json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecInspectResponse {
    #[serde(rename = "ID")]
    pub id: String,
    pub running: bool,
    /// `null` until the process has exited.
    pub exit_code: Option<i32>,
    pub process_config: ProcessConfig,
    pub open_stdin: bool,
    pub open_stderr: bool,
    pub open_stdout: bool,
    pub can_remove: bool,
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    pub detach_keys: String,
    pub pid: i32,
}

#[derive(Debug, Serialize)]
pub struct ProcessConfig {
    pub tty: bool,
    pub entrypoint: String,
    pub arguments: Vec<String>,
    pub privileged: bool,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// `[rows, columns]`; anything else (null, `[0, 0]`) is no size.
fn console_size(v: Option<Vec<u16>>) -> Option<(u16, u16)> {
    match v.as_deref() {
        Some([rows, cols]) if *rows > 0 && *cols > 0 => Some((*rows, *cols)),
        _ => None,
    }
}

pub async fn create(
    State(d): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<ExecCreateRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let Json(req) = body.map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    if let Some(keys) = &req.detach_keys {
        detach_keys(keys).map_err(ApiError::bad_request)?;
    }
    let options = ExecOptions {
        cmd: req.cmd.unwrap_or_default(),
        env: req.env.unwrap_or_default(),
        user: req.user.unwrap_or_default(),
        working_dir: req.working_dir.unwrap_or_default(),
        privileged: req.privileged,
        tty: req.tty,
        attach_stdin: req.attach_stdin,
        attach_stdout: req.attach_stdout,
        attach_stderr: req.attach_stderr,
        detach_keys: req.detach_keys.unwrap_or_default(),
        console_size: console_size(req.console_size),
    };
    let cmd = options.cmd.join(" ");
    let exec_id = d.execs.create(&d.containers, &id, options)?;
    // Docker names the command in the action, and the exec in the attributes.
    super::events::container(
        &d,
        &format!("exec_create: {cmd}"),
        &id,
        &[("execID", exec_id.as_str())],
    );
    let id = exec_id;
    Ok((StatusCode::CREATED, Json(IdResponse { id })).into_response())
}

pub async fn inspect(
    State(d): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ExecInspectResponse>> {
    let exec = d.execs.get(&id)?;
    let state = exec.state();
    let o = &exec.options;
    Ok(Json(ExecInspectResponse {
        id: exec.id.clone(),
        running: state.running,
        exit_code: state.exit_code,
        process_config: ProcessConfig {
            tty: o.tty,
            entrypoint: o.cmd.first().cloned().unwrap_or_default(),
            arguments: o.cmd.iter().skip(1).cloned().collect(),
            privileged: o.privileged,
            user: o.user.clone(),
        },
        open_stdin: o.attach_stdin,
        open_stderr: o.attach_stderr,
        open_stdout: o.attach_stdout,
        can_remove: false,
        container_id: exec.container_id.clone(),
        detach_keys: o.detach_keys.clone(),
        pid: state.pid,
    }))
}

pub async fn resize(
    State(d): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<StatusCode> {
    let exec = d.execs.get(&id)?;
    let h = int_param(&q, "h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = int_param(&q, "w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    exec.resize(h, w).await?;
    Ok(StatusCode::OK)
}

/// `POST /exec/{id}/start`: detached, a 200 once the process runs; attached, a 101 and the
/// process's stdio over the connection (framed unless the start asks for a tty). A process that cannot
/// start is reported in the stream, as Docker (the CLI then reads its 126 from inspect).
pub async fn start(
    State(d): State<AppState>,
    Path(id): Path<String>,
    mut req: Request,
) -> ApiResult<Response> {
    let exec = d.execs.get(&id)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?;
    let start: ExecStartRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ExecStartRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("bad request body: {e}")))?
    };
    let claimed = d.execs.claim(&d.containers, &id)?;
    let size = console_size(start.console_size);
    if start.detach {
        return match claimed.spawn(size).await {
            Started::Running(io) => {
                discard(io);
                Ok(StatusCode::OK.into_response())
            }
            Started::Failed(e) => Err(e.into()),
        };
    }
    // The start's Tty decides the framing, as Docker's (a client may start a tty exec
    // with `Tty: false` and get its terminal output in stdout frames).
    let raw = start.tty;
    tokio::spawn(async move {
        // The process starts once the client has the response's head, as Docker's: output
        // sent with the head can be lost in a client's header buffer (Docker's Python SDK
        // reads the stream from the socket under it).
        let upgraded = on_upgrade.await;
        let started = claimed.spawn(size).await;
        let upgraded = match upgraded {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("exec start upgrade failed: {e}");
                if let Started::Running(io) = started {
                    discard(io);
                }
                return;
            }
        };
        let conn = hyper_util::rt::TokioIo::new(upgraded);
        match started {
            Started::Running(io) => session(conn, io, exec, raw).await,
            Started::Failed(e) => {
                // On the process's stdout, as Docker: framed unless with a tty.
                let text = match e {
                    strata_core::Error::InvalidInput(m) => format!("{m}\r\n"),
                    e => format!("{e}\r\n"),
                };
                let bytes = if raw {
                    bytes::Bytes::from(text)
                } else {
                    stream::frame(StreamKind::Stdout, text.as_bytes())
                };
                let (_, mut writer) = tokio::io::split(conn);
                let _ = writer.write_all(&bytes).await;
                let _ = writer.shutdown().await;
            }
        }
    });
    Ok(stream::upgrade_response(raw))
}

/// A detached exec's output goes nowhere; it is read so the process never blocks on it.
fn discard(io: ExecIo) {
    drop(io.stdin);
    tokio::spawn(drain(io.stdout));
    if let Some(stderr) = io.stderr {
        tokio::spawn(drain(stderr));
    }
}

async fn drain(mut s: FdStream) {
    let mut buf = vec![0u8; 32 * 1024];
    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// The attached session: stdin from the client (until it closes its side, or types the
/// detach keys on a tty), stdout and stderr to it; once both end, the exit is recorded
/// before the connection closes, so the client's inspect that follows sees the exit code. A
/// detached client's connection closes at once; the process runs on, its output drained.
async fn session<C>(conn: C, io: ExecIo, exec: Arc<ExecInstance>, raw: bool)
where
    C: AsyncRead + AsyncWrite + Send + 'static,
{
    let (reader, writer) = tokio::io::split(conn);
    let writer = Arc::new(Mutex::new(writer));
    let o = &exec.options;
    let (detached_tx, detached) = tokio::sync::oneshot::channel::<()>();
    let stdin = match (o.attach_stdin, io.stdin) {
        (true, Some(stdin)) => {
            // As Docker: the detach keys are looked for only with a terminal.
            // (Checked at create, so they parse.)
            let keys = o.tty.then(|| detach_keys(&o.detach_keys).ok()).flatten();
            Some(tokio::spawn(async move {
                if copy_stdin(reader, stdin, keys).await {
                    let _ = detached_tx.send(());
                }
            }))
        }
        _ => None,
    };
    let out = tokio::spawn(pump(
        io.stdout,
        StreamKind::Stdout,
        o.attach_stdout,
        raw,
        writer.clone(),
    ));
    let err = io.stderr.map(|stderr| {
        tokio::spawn(pump(
            stderr,
            StreamKind::Stderr,
            o.attach_stderr,
            raw,
            writer.clone(),
        ))
    });
    let ended = async {
        let _ = out.await;
        if let Some(err) = err {
            let _ = err.await;
        }
        exec.wait().await;
    };
    tokio::select! {
        () = ended => {}
        Ok(()) = detached => tracing::debug!(exec = %exec.id, "client detached"),
    }
    let _ = writer.lock().await.shutdown().await;
    if let Some(stdin) = stdin {
        stdin.abort();
    }
}

/// Copies the client's input to the process until EOF, or until `keys` are typed (true:
/// the client detached; the keys themselves are not passed on). Dropping `stdin` closes
/// the pipe: `cat` and friends see EOF.
async fn copy_stdin<R: AsyncRead + Unpin>(
    mut reader: R,
    mut stdin: FdStream,
    keys: Option<Vec<u8>>,
) -> bool {
    let mut buf = vec![0u8; 32 * 1024];
    let mut matched = 0;
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        let (forward, detached) = match &keys {
            Some(keys) => scan_detach(keys, &mut matched, &buf[..n]),
            None => (buf[..n].to_vec(), false),
        };
        if stdin.write_all(&forward).await.is_err() {
            return false;
        }
        if detached {
            return true;
        }
    }
}

/// Docker's detach-key syntax: comma-separated `ctrl-<a-z @ [ \\ ] ^ _>` or single
/// characters. Empty: the default, ctrl-p ctrl-q.
fn detach_keys(spec: &str) -> Result<Vec<u8>, String> {
    if spec.is_empty() {
        return Ok(vec![16, 17]);
    }
    let bad = || format!("Invalid detach keys ({spec}) provided");
    spec.split(',')
        .map(|key| {
            let key = key.trim();
            match (key.len(), key.strip_prefix("ctrl-")) {
                (1, _) => Ok(key.as_bytes()[0]),
                (_, Some(c)) if c.len() == 1 => match c.as_bytes()[0] {
                    b @ b'a'..=b'z' => Ok(b - b'a' + 1),
                    b @ (b'@' | b'[' | b'\\' | b']' | b'^' | b'_') => Ok(b - b'@'),
                    _ => Err(bad()),
                },
                _ => Err(bad()),
            }
        })
        .collect()
}

/// Feeds `input` through the detach-key matcher (`matched` keys seen so far, across reads):
/// the bytes to pass on, and whether the whole sequence was typed. A partial sequence that
/// breaks off is passed on, as Docker's escape proxy does.
fn scan_detach(keys: &[u8], matched: &mut usize, input: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(input.len());
    for &b in input {
        if b == keys[*matched] {
            *matched += 1;
            if *matched == keys.len() {
                return (out, true);
            }
            continue;
        }
        out.extend_from_slice(&keys[..*matched]);
        *matched = usize::from(b == keys[0]);
        if *matched == 0 {
            out.push(b);
        }
    }
    (out, false)
}

/// Copies one output stream to the client (framed unless `raw`), or only drains it when the
/// client did not ask for it or has gone.
async fn pump<W: AsyncWrite + Unpin>(
    mut from: FdStream,
    kind: StreamKind,
    wanted: bool,
    raw: bool,
    to: Arc<Mutex<W>>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut client_gone = !wanted;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if client_gone {
            continue;
        }
        let bytes = if raw {
            bytes::Bytes::copy_from_slice(&buf[..n])
        } else {
            stream::frame(kind, &buf[..n])
        };
        let mut w = to.lock().await;
        if w.write_all(&bytes).await.is_err() || w.flush().await.is_err() {
            client_gone = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_as_dockers() {
        assert_eq!(detach_keys("").unwrap(), [16, 17]);
        assert_eq!(
            detach_keys("ctrl-a,x,ctrl-@,ctrl-_").unwrap(),
            [1, b'x', 0, 31]
        );
        assert!(detach_keys("ctrl-1").is_err());
        assert!(detach_keys("ab").is_err());
    }

    #[test]
    fn the_detach_sequence_is_found_across_reads_and_broken_ones_pass_on() {
        let keys = [16, 17];
        let mut m = 0;
        assert_eq!(
            scan_detach(&keys, &mut m, b"ab\x10"),
            (b"ab".to_vec(), false)
        );
        assert_eq!(scan_detach(&keys, &mut m, b"\x11rest"), (Vec::new(), true));
        let mut m = 0;
        assert_eq!(
            scan_detach(&keys, &mut m, b"\x10x\x10\x10"),
            (b"\x10x\x10".to_vec(), false)
        );
        assert_eq!(m, 1);
    }
}
