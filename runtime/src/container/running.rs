//! A started container: its output pumps, the monitor that waits for its exit (through a
//! pidfd, so no SIGCHLD handler is needed and no other child is touched), and the verbs the
//! daemon calls (wait, kill, stop, resize, stdin).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use nix::sys::signal::Signal;
use strata_core::{Error, Result};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::io::{FdStream, OutputChunk, ParentIo, StreamKind};
use super::launch::Launched;
use super::logs::{JsonLogWriter, LogOptions};
use crate::cgroups::Cgroup;

/// How a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitStatus {
    /// Docker's exit code: the process's own, or 128+n when signal n killed it.
    pub code: i32,
    /// The signal that killed PID 1, if one did.
    pub signal: Option<i32>,
    /// The OOM killer killed a process of the container.
    pub oom_killed: bool,
    pub finished_at: DateTime<Utc>,
}

impl ExitStatus {
    pub fn exited(code: i32) -> ExitStatus {
        ExitStatus {
            code,
            signal: None,
            oom_killed: false,
            finished_at: Utc::now(),
        }
    }

    fn from_wait_status(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            ExitStatus {
                signal: Some(sig),
                ..ExitStatus::exited(128 + sig)
            }
        } else {
            ExitStatus::exited(libc::WEXITSTATUS(status))
        }
    }
}

/// What the caller writes to the container's stdin (`-i`); dropping it closes stdin.
pub type ContainerStdin = FdStream;

/// A running (or just exited) container.
pub struct RunningContainer {
    id: String,
    pid: i32,
    pidfd: Arc<OwnedFd>,
    cgroup: Cgroup,
    started_at: DateTime<Utc>,
    exit: watch::Receiver<Option<ExitStatus>>,
    stdin: Option<ContainerStdin>,
    pty: Option<Arc<OwnedFd>>,
    output: broadcast::Sender<OutputChunk>,
    log_path: PathBuf,
}

impl std::fmt::Debug for RunningContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningContainer")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl RunningContainer {
    /// Sets up output pumps, the log writer and the exit monitor for a launched child. If
    /// that fails the child is killed, reaped and its cgroup removed.
    pub(crate) fn start(
        launched: Launched,
        id: String,
        log: (PathBuf, LogOptions),
        output: broadcast::Sender<OutputChunk>,
    ) -> Result<RunningContainer> {
        let pid = launched.pid;
        let cgroup = launched.cgroup.clone();
        Self::start_inner(launched, id, log, output).inspect_err(|_| {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            if let Err(e) = cgroup.remove() {
                tracing::warn!("removing cgroup of a failed start: {e}");
            }
        })
    }

    fn start_inner(
        launched: Launched,
        id: String,
        (log_path, log_opts): (PathBuf, LogOptions),
        output: broadcast::Sender<OutputChunk>,
    ) -> Result<RunningContainer> {
        let Launched {
            pid,
            pidfd,
            cgroup,
            io,
        } = launched;
        let started_at = Utc::now();
        let writer = JsonLogWriter::open_with(&log_path, log_opts)?;
        let (log_tx, log_rx) = mpsc::unbounded_channel();
        let log_task = tokio::task::spawn_blocking(move || write_log(writer, log_rx));
        let mut pumps = Vec::new();
        let (stdin, pty) = match io {
            ParentIo::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                for (fd, kind) in [(stdout, StreamKind::Stdout), (stderr, StreamKind::Stderr)] {
                    pumps.push(pump(
                        FdStream::new(fd).map_err(io_err)?,
                        kind,
                        output.clone(),
                        log_tx.clone(),
                    ));
                }
                (stdin.map(FdStream::new).transpose().map_err(io_err)?, None)
            }
            ParentIo::PtyPending { .. } => {
                return Err(Error::Other("container terminal was never received".into()))
            }
            ParentIo::Pty { master } => {
                let reader = master.try_clone().map_err(io_err)?;
                let writer = master.try_clone().map_err(io_err)?;
                pumps.push(pump(
                    FdStream::new(reader).map_err(io_err)?,
                    StreamKind::Stdout,
                    output.clone(),
                    log_tx.clone(),
                ));
                (
                    Some(FdStream::new(writer).map_err(io_err)?),
                    Some(Arc::new(master)),
                )
            }
        };
        drop(log_tx);
        let pidfd = Arc::new(pidfd);
        let (exit_tx, exit_rx) = watch::channel(None);
        tokio::spawn(monitor(Monitor {
            pid,
            pidfd: pidfd.clone(),
            cgroup: cgroup.clone(),
            pumps,
            log_task,
            exit_tx,
        }));
        Ok(RunningContainer {
            id,
            pid,
            pidfd,
            cgroup,
            started_at,
            exit: exit_rx,
            stdin,
            pty,
            output,
            log_path,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// PID 1 of the container, as the host sees it.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// The pidfd of PID 1: names this process for as long as we hold it (no pid reuse).
    pub(super) fn pidfd(&self) -> &Arc<OwnedFd> {
        &self.pidfd
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The stdin writer (`-i`, or the pty with `-t`); `None` after the first call.
    pub fn take_stdin(&mut self) -> Option<ContainerStdin> {
        self.stdin.take()
    }

    /// Live output from now on (attach).
    pub fn subscribe(&self) -> broadcast::Receiver<OutputChunk> {
        self.output.subscribe()
    }

    /// Becomes `Some` when the container has exited and is cleaned up (for `logs --follow`
    /// and `wait`).
    pub fn exit_watch(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// The exit status if the container has exited.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }

    /// Waits until the container has exited, its output is in the log and its cgroup is gone.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        loop {
            if let Some(status) = rx.borrow_and_update().clone() {
                return status;
            }
            if rx.changed().await.is_err() {
                // The monitor is gone without a status: only when the runtime shuts down.
                return rx
                    .borrow()
                    .clone()
                    .unwrap_or_else(|| ExitStatus::exited(128 + 9));
            }
        }
    }

    /// Sends a signal to PID 1 (`docker kill -s`). Refused once the container has exited.
    pub fn kill(&self, signal: Signal) -> Result<()> {
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0u32,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Err(Error::busy(format!("container {} is not running", self.id)));
            }
            return Err(Error::io("kill", format!("container {}", self.id), e));
        }
        Ok(())
    }

    /// `docker stop`: `signal` (SIGTERM by default in Docker), then SIGKILL after `grace`.
    pub async fn stop(&self, signal: Signal, grace: Duration) -> ExitStatus {
        if self.kill(signal).is_ok() {
            if let Ok(status) = tokio::time::timeout(grace, self.wait()).await {
                return status;
            }
            tracing::info!(container = %self.id, "did not stop within {grace:?}, killing");
        }
        let _ = self.kill(Signal::SIGKILL);
        self.wait().await
    }

    /// Sets the terminal size (`docker resize`); only with a tty.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let Some(master) = &self.pty else {
            return Err(Error::invalid(format!(
                "container {} has no tty to resize",
                self.id
            )));
        };
        super::console::set_window_size(master, rows, cols)
            .map_err(|e| Error::io("resize tty", format!("container {}", self.id), e))
    }
}

fn io_err(e: std::io::Error) -> Error {
    Error::io("container stdio", "pipe", e)
}

/// Reads one output stream to its end; every chunk goes to attach subscribers and the log.
fn pump(
    mut stream: FdStream,
    kind: StreamKind,
    output: broadcast::Sender<OutputChunk>,
    log: mpsc::UnboundedSender<(StreamKind, Bytes, DateTime<Utc>)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    let data = Bytes::copy_from_slice(&buf[..n]);
                    // No subscriber is fine: nobody is attached.
                    let _ = output.send(OutputChunk {
                        stream: kind,
                        data: data.clone(),
                    });
                    let _ = log.send((kind, data, Utc::now()));
                }
                Err(e) => {
                    tracing::warn!("reading container {}: {e}", kind.as_str());
                    break;
                }
            }
        }
    })
}

fn write_log(
    mut writer: JsonLogWriter,
    mut rx: mpsc::UnboundedReceiver<(StreamKind, Bytes, DateTime<Utc>)>,
) {
    while let Some((kind, data, time)) = rx.blocking_recv() {
        if let Err(e) = writer.write(kind, &data, time) {
            tracing::warn!("container log: {e}");
        }
    }
    if let Err(e) = writer.finish() {
        tracing::warn!("container log: {e}");
    }
}

struct Monitor {
    pid: i32,
    pidfd: Arc<OwnedFd>,
    cgroup: Cgroup,
    pumps: Vec<JoinHandle<()>>,
    log_task: JoinHandle<()>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
}

/// How long output may keep flowing after PID 1 died (the kernel kills the rest of the pid
/// namespace, so the pipes close right after).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

async fn monitor(m: Monitor) {
    let mut status = wait_exit(m.pid, &m.pidfd).await;
    for pump in m.pumps {
        if tokio::time::timeout(DRAIN_TIMEOUT, pump).await.is_err() {
            tracing::warn!(pid = m.pid, "container output did not end after exit");
        }
    }
    let _ = m.log_task.await;
    let cgroup = m.cgroup.clone();
    let oom = tokio::task::spawn_blocking(move || {
        let oom = cgroup.oom_killed();
        if let Err(e) = cgroup.remove() {
            tracing::warn!("removing container cgroup: {e}");
        }
        oom
    })
    .await;
    status.oom_killed = matches!(oom, Ok(Ok(true)));
    let _ = m.exit_tx.send(Some(status));
}

/// Waits for a child of the daemon (PID 1, or an `exec`'d process) through its pidfd
/// (readable once it exits), then reaps it.
pub(super) async fn wait_exit(pid: i32, pidfd: &Arc<OwnedFd>) -> ExitStatus {
    let registered = pidfd.try_clone().and_then(|fd| {
        // SAFETY: an OwnedFd stays open and the same fd for the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(std::io::Error::from)
    });
    match registered {
        Ok(fd) => {
            if let Err(e) = fd.readable().await {
                tracing::warn!(pid, "polling container pidfd: {e}");
            }
        }
        Err(e) => tracing::warn!(pid, "watching container pidfd: {e}"),
    }
    let result = tokio::task::spawn_blocking(move || loop {
        let mut status = 0;
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Some(status);
        }
        if r < 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    })
    .await;
    match result {
        Ok(Some(status)) => ExitStatus::from_wait_status(status),
        _ => {
            tracing::warn!(
                pid,
                "container process was reaped elsewhere; exit code unknown"
            );
            ExitStatus::exited(255)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_deaths_are_128_plus_n() {
        // A wait status for "killed by SIGKILL" is the signal number in the low bits.
        let killed = ExitStatus::from_wait_status(libc::SIGKILL);
        assert_eq!((killed.code, killed.signal), (137, Some(9)));
        let exited = ExitStatus::from_wait_status(3 << 8);
        assert_eq!((exited.code, exited.signal), (3, None));
    }
}
