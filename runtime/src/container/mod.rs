//! Running a container process: namespaces, pivot_root, mounts, user and capabilities,
//! cgroup limits, stdio (pipes or a pty), the json log, exit codes.
//!
//! # The daemon's API
//! ```ignore
//! let spec = ContainerSpec { mounts, resources, tty, .. ContainerSpec::new(id, rootfs, dir, args) };
//! let (output, _) = container::output_channel();            // created early: attach may subscribe before start
//! let mut c = container::spawn(spec, output).await?;        // Err(StartError::Exec{exit_code: 126|127, ..}) when the command cannot run
//! c.take_stdin(); c.subscribe(); c.resize(rows, cols)?;     // -i, attach, -t
//! c.kill(Signal::SIGHUP)?; c.stop(Signal::SIGTERM, 10s).await; let status = c.wait().await;   // {code, signal, oom_killed}
//! container::logs::read_logs(c.log_path().into(), opts, Some(c.exit_watch()));               // docker logs [-f] [--tail] [--since]
//! ```
//! The log is `<container_dir>/<id>-json.log`. The container's state lives in one record, the
//! daemon's `config.v2.json` (`daemon::containers::record`); this module keeps none of its own.
//!
//! # How a container starts (one process, no re-exec)
//! The daemon is a multithreaded tokio process and a library cannot re-exec its own binary,
//! so the container's PID 1 comes from a single `clone(2)` with fork semantics and
//! `CLONE_NEWPID|NEWNS|NEWUTS|NEWIPC` (+`NEWNET` for network none). The child is PID 1 at
//! once: no intermediate process, and the daemon is its real parent (it can reap it and read
//! its status). A cloned copy of a multithreaded process may only make async-signal-safe calls:
//! another thread may have held the malloc lock at clone time. So:
//!
//! 1. **Parent, everything that allocates** (`launch.rs`): spec validation; hostname/hosts/
//!    resolv.conf in the container dir; user lookup in the image's passwd/group and the
//!    working directory and mount targets created inside the rootfs with `openat2
//!    (RESOLVE_IN_ROOT)` (`scoped_path.rs`: symlinks cannot lead out); pipes or a pty; the
//!    cgroup with its limits; and the child's whole work list as a [`plan::ChildPlan`] of
//!    `CString`s and `Step`s (`plan.rs`), PATH candidates for the command included.
//! 2. **clone**, then the child (`child.rs`) closes the daemon's pipe ends and blocks on the
//!    sync pipe while the parent writes its pid into the cgroup (so every process it forks is
//!    limited) and sends "go".
//! 3. **Child, raw syscalls only**: cgroup ns (v2), loopback up, hostname; the steps: `/`
//!    rprivate, rootfs bound onto itself, /proc, /dev tmpfs with host device nodes bound in,
//!    devpts (new instance), shm, mqueue, /sys ro, /etc files, user mounts; pivot_root; masked
//!    and read-only paths; read-only root. Then setsid (+ the tty as controlling terminal),
//!    stdio, the bounding set cut to the container's capabilities (`security.rs`: Docker's 14
//!    by default), setgroups/setresgid/setresuid as raw syscalls (glibc's wrappers would signal
//!    the daemon's other threads), capset, chdir, no_new_privs, default signal dispositions,
//!    the seccomp filter (`seccomp/`: compiled in the parent, installed with one syscall; before
//!    the capability cut when no_new_privs is off, as runc), all fds above 2 close-on-exec, exec.
//!    With `init`, `init.rs` forks first: PID 1 becomes a reaper that forwards signals.
//! 4. **Error pipe**: a CLOEXEC pipe; any failing step writes (stage, step, errno) and exits.
//!    EOF means the exec happened. Exec errors become Docker's 127 (not found) and 126.
//! 5. **Running** (`running.rs`): a pidfd tells the monitor when PID 1 exits (no SIGCHLD
//!    handler, no `waitpid(-1)`); it drains output into the json log, reads the OOM counter,
//!    removes the cgroup, then publishes the [`ExitStatus`] (the daemon records it).
//!
//! `docker exec` (`exec/`): a helper cloned like PID 1 is placed in the container's cgroup,
//! joins PID 1's namespaces with `setns` on its pidfd and forks the process into the pid
//! namespace with `CLONE_PARENT` (the daemon reaps it), which then runs the same tail as PID 1
//! (`child::become_process`): terminal, stdio, seccomp, capabilities, user, cwd, exec.
//!
//! Why not youki's libcontainer: it is built around OCI bundles on disk, `config.json` and a
//! state directory per container, and it forks through three processes (main, intermediate,
//! init) with channels between them; we would convert our spec into an OCI spec and still wire
//! stdio, logs and exit codes ourselves. The part we need is a few hundred lines that we can
//! read end to end.
//!
//! Devices: Docker's allowlist (plus `--device`, `--device-cgroup-rule`) through the v1 devices
//! controller and, on v2 or a hybrid host's cgroup2 tree, an eBPF program (`cgroups/`).
//!
//! Not done here: user namespaces, AppArmor/SELinux, a /sys/fs/cgroup view
//! inside the container, log rotation, keeping containers alive across a daemon restart
//! (there is no shim: see [`recover_after_restart`]).

mod caps;
mod child;
mod console;
mod etc_files;
pub mod exec;
mod init;
pub mod io;
mod launch;
pub mod logs;
pub(crate) mod plan;
pub mod running;
pub(crate) mod scoped_path;
pub mod seccomp;
pub mod security;
pub mod spec;
pub(crate) mod user;

use std::sync::OnceLock;

use tokio::sync::broadcast;

use crate::cgroups::Layout;
pub use io::{OutputChunk, StreamKind};
pub use launch::StartError;
pub use running::{ContainerStdin, ExitStatus, RunningContainer};
pub use seccomp::SeccompMode;
pub use security::{DeviceMapping, SecuritySpec};
pub use spec::{ContainerSpec, MountKind, MountSpec, Network, Propagation, DEFAULT_PATH};
pub use user::ResolvedUser;

/// The capability names every container keeps (for `inspect`'s effective set and docs).
pub fn default_capabilities() -> Vec<&'static str> {
    caps::DOCKER_DEFAULT_CAPS
        .iter()
        .map(|(_, name)| *name)
        .collect()
}

/// A broadcast channel for live output; chunks sent while no one listens are dropped.
pub fn output_channel() -> (
    broadcast::Sender<OutputChunk>,
    broadcast::Receiver<OutputChunk>,
) {
    broadcast::channel(1024)
}

fn host_layout() -> Result<Layout, strata_core::Error> {
    static LAYOUT: OnceLock<Layout> = OnceLock::new();
    if let Some(l) = LAYOUT.get() {
        return Ok(l.clone());
    }
    let layout = Layout::detect()?;
    Ok(LAYOUT.get_or_init(|| layout).clone())
}

/// Kills every process left in a container's cgroup and removes it: what a restarted daemon
/// does with a container whose recorded process is still the one it started (we do not
/// live-restore; the container lost its monitor and its log pipes).
pub fn kill_leftover(id: &str, cgroup_parent: &str) -> Result<(), strata_core::Error> {
    crate::cgroups::Cgroup::open(&host_layout()?, cgroup_parent, id)?.remove()
}

/// Starts a container. Returns when its command has been exec'd (or failed to be). Its log
/// has the default limits (see `logs::LogOptions`).
pub async fn spawn(
    spec: ContainerSpec,
    output: broadcast::Sender<OutputChunk>,
) -> Result<RunningContainer, StartError> {
    spawn_with_log(spec, output, logs::LogOptions::default()).await
}

/// `spawn`, with the log rotated as `log` says (`--log-opt max-size/max-file`).
pub async fn spawn_with_log(
    spec: ContainerSpec,
    output: broadcast::Sender<OutputChunk>,
    log: logs::LogOptions,
) -> Result<RunningContainer, StartError> {
    let layout = host_layout()?;
    let id = spec.id.clone();
    let dir = spec.container_dir.clone();
    let log_path = dir.join(logs::log_file_name(&id));
    let launched = tokio::task::spawn_blocking(move || launch::launch(&spec, &layout))
        .await
        .map_err(strata_core::Error::from)??;
    tracing::debug!(container = %id, pid = launched.pid, "container started");
    Ok(RunningContainer::start(
        launched,
        id,
        (log_path, log),
        output,
    )?)
}
