//! Exec instances, as Docker keeps them: created for a running container, started once,
//! their exit recorded; all of a container's are dropped when it stops. The process itself
//! is `crate::container::exec`'s business.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use strata_core::{Error, Result};
use tokio::sync::watch;

use super::{pause, Container, Containers};
use crate::container::exec::{self as runtime_exec, ExecIo, ExecProcess, ExecSpec};
use crate::container::StartError;

/// What the client asked for (`POST /containers/{id}/exec`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOptions {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    /// Empty: the container's user.
    pub user: String,
    /// Empty: the container's working directory.
    pub working_dir: String,
    pub privileged: bool,
    pub tty: bool,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub detach_keys: String,
    /// `(rows, columns)`.
    pub console_size: Option<(u16, u16)>,
}

/// Where an exec instance is in its life.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecState {
    pub running: bool,
    /// `None` until the process has exited (or failed to start: 126).
    pub exit_code: Option<i32>,
    /// The process as the host sees it; 0 before the start.
    pub pid: i32,
    started: bool,
}

/// One exec instance.
pub struct ExecInstance {
    pub id: String,
    pub container_id: String,
    pub options: ExecOptions,
    state: Mutex<ExecState>,
    /// Set once the process runs (resize waits for it).
    process: watch::Sender<Option<Arc<ExecProcess>>>,
    /// The exit code, once recorded.
    exit: watch::Sender<Option<i32>>,
}

impl ExecInstance {
    pub fn state(&self) -> ExecState {
        *self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the exit is recorded; its code.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.subscribe();
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return code;
            }
            if rx.changed().await.is_err() {
                return 126;
            }
        }
    }

    /// Sets the terminal size (`POST /exec/{id}/resize`). Waits a little for a start that is
    /// under way, as Docker: the CLI resizes right after it sent the start.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        let mut rx = self.process.subscribe();
        let wait = rx.wait_for(|p| p.is_some());
        let process = match tokio::time::timeout(Duration::from_secs(10), wait).await {
            Ok(Ok(p)) => p.clone().expect("waited for Some"),
            _ => {
                return Err(Error::busy(format!(
                    "exec {} is not running: cannot resize it",
                    self.id
                )))
            }
        };
        process.resize(rows, cols)
    }
}

/// What a start gave: the process's stdio, or why it could not run (recorded with exit code
/// 126; the API writes it into the attached stream, as Docker).
pub enum Started {
    Running(ExecIo),
    Failed(Error),
}

/// All exec instances of the daemon, by id.
#[derive(Default)]
pub struct Execs {
    table: Mutex<HashMap<String, Arc<ExecInstance>>>,
}

impl Execs {
    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<ExecInstance>>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new exec instance in the running container `key`.
    pub fn create(
        &self,
        containers: &Containers,
        key: &str,
        options: ExecOptions,
    ) -> Result<String> {
        let c = containers.get(key)?;
        let container_id = c.record().id.clone();
        check_active(&c, &container_id, "container")?;
        if options.cmd.first().is_none_or(|c| c.is_empty()) {
            return Err(Error::invalid("No exec command specified"));
        }
        let id = strata_core::LayerId::random()?.to_string();
        let instance = Arc::new(ExecInstance {
            id: id.clone(),
            container_id,
            options,
            state: Mutex::new(ExecState::default()),
            process: watch::channel(None).0,
            exit: watch::channel(None).0,
        });
        self.table().insert(id.clone(), instance);
        Ok(id)
    }

    /// Drops one instance (a healthcheck's probe, once read).
    pub fn forget(&self, id: &str) {
        self.table().remove(id);
    }

    pub fn get(&self, id: &str) -> Result<Arc<ExecInstance>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No such exec instance: {id}")))
    }

    /// Inspect's `ExecIDs`: a container's exec instances that have not exited (Docker drops
    /// an exited one from the container's list; it stays inspectable until the stop). Sorted.
    pub fn ids_of(&self, container_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .table()
            .values()
            .filter(|e| e.container_id == container_id && e.state().exit_code.is_none())
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Drops a container's exec instances: it stopped (Docker forgets them then).
    pub fn forget_container(&self, container_id: &str) {
        self.table().retain(|_, e| e.container_id != container_id);
    }

    /// Starts an exec instance. Err: refused (unknown, started before, container not running
    /// or paused). `console_size` overrides the one given at creation.
    pub async fn start(
        &self,
        containers: &Containers,
        id: &str,
        console_size: Option<(u16, u16)>,
    ) -> Result<Started> {
        Ok(self.claim(containers, id)?.spawn(console_size).await)
    }

    /// The refusals of a start, and the instance marked started: an attached start answers
    /// them as HTTP errors, then spawns the process once its connection is upgraded (as
    /// Docker, so output cannot reach the client before it has read the response's head).
    pub fn claim(&self, containers: &Containers, id: &str) -> Result<Claimed> {
        let exec = self.get(id)?;
        let c = containers.get(&exec.container_id)?;
        {
            let mut state = exec.lock();
            if state.exit_code.is_some() {
                return Err(Error::busy(format!(
                    "Error: Exec command {id} has already run"
                )));
            }
            if state.started {
                return Err(Error::busy(format!(
                    "Error: Exec command {id} is already running"
                )));
            }
            check_active(&c, &exec.container_id, "Container")?;
            state.started = true;
        }
        Ok(Claimed { exec, container: c })
    }
}

/// An exec instance claimed for starting ([`Execs::claim`]).
pub struct Claimed {
    exec: Arc<ExecInstance>,
    container: Arc<Container>,
}

impl Claimed {
    /// Starts the process; a process that cannot start is a [`Started::Failed`].
    pub async fn spawn(self, console_size: Option<(u16, u16)>) -> Started {
        let Claimed { exec, container: c } = self;
        let Some(running) = c.running() else {
            let why = format!("Container {} is not running", exec.container_id);
            return Started::Failed(record_failure(&exec, Error::busy(why)));
        };
        let mut spec = match exec_spec(&c, &exec.options) {
            Ok(s) => s,
            Err(e) => return Started::Failed(record_failure(&exec, e)),
        };
        if console_size.is_some() {
            spec.console_size = console_size;
        }
        match runtime_exec::spawn(&running, spec).await {
            Ok((process, io)) => {
                let process = Arc::new(process);
                {
                    let mut state = exec.lock();
                    state.running = true;
                    state.pid = process.pid();
                }
                exec.process.send_replace(Some(process.clone()));
                tokio::spawn(record_exit(exec.clone(), process));
                Started::Running(io)
            }
            Err(StartError::Exec { message, .. }) => {
                Started::Failed(record_failure(&exec, Error::Other(message)))
            }
            Err(StartError::Setup(e)) => Started::Failed(record_failure(&exec, e)),
        }
    }
}

/// Docker's refusals: a container that is not running, or paused.
fn check_active(c: &Container, id: &str, noun: &str) -> Result<()> {
    if !c.is_running() {
        return Err(Error::busy(format!("{noun} {id} is not running")));
    }
    if pause::is_paused(c) {
        return Err(Error::busy(format!(
            "{noun} {id} is paused, unpause the container before exec"
        )));
    }
    Ok(())
}

fn record_failure(exec: &ExecInstance, e: Error) -> Error {
    {
        let mut state = exec.lock();
        state.running = false;
        state.exit_code = Some(126);
    }
    exec.exit.send_replace(Some(126));
    e
}

async fn record_exit(exec: Arc<ExecInstance>, process: Arc<ExecProcess>) {
    let status = process.wait().await;
    {
        let mut state = exec.lock();
        state.running = false;
        state.exit_code = Some(status.code);
    }
    exec.exit.send_replace(Some(status.code));
}

/// The process to start: the exec's settings over the container's (user, working directory,
/// environment), with the container's security.
fn exec_spec(c: &Container, o: &ExecOptions) -> Result<ExecSpec> {
    let rec = c.snapshot();
    let container_env = rec.config.env.clone().unwrap_or_default();
    let mut hostname = rec.config.hostname.clone();
    if hostname.is_empty() {
        hostname = rec.id.chars().take(12).collect();
    }
    let (security, no_new_privileges) = super::create::security(&rec.host_config)?;
    let pick = |own: &str, container: String| {
        if own.is_empty() {
            container
        } else {
            own.to_string()
        }
    };
    Ok(ExecSpec {
        args: o.cmd.clone(),
        env: runtime_exec::exec_env(&container_env, &o.env, &hostname, o.tty),
        cwd: pick(&o.working_dir, rec.config.working_dir.clone()),
        user: pick(&o.user, rec.config.user.clone()),
        group_add: rec.host_config.group_add.clone().unwrap_or_default(),
        tty: o.tty,
        stdin: o.attach_stdin,
        console_size: o.console_size,
        privileged: o.privileged,
        security,
        no_new_privileges,
    })
}
