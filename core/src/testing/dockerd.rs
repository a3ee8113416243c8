//! Docker's own daemon (Debian's docker.io, which scripts/setup.sh installs) for tests that
//! compare with it or run our plugins under it. It runs inside `unshare --net` with its own data
//! root, exec root, socket, pid file and containerd namespace, no bridge and no iptables, so it
//! reaches nothing and shares nothing with a system daemon; it is stopped when dropped, also
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A daemon process stopped (TERM, then KILL) when dropped; mounts left under `root` go too.
pub struct DaemonProcess {
    child: Child,
    root: PathBuf,
}

impl DaemonProcess {
    pub fn new(child: Child, root: PathBuf) -> Self {
        Self { child, root }
    }

    /// The daemon's exit status if it has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = crate::fsutil::mounts::unmount_all_under(&self.root);
    }
}

/// Runs the docker CLI against `sock`; (success, stdout, stderr).
pub fn docker_cli(sock: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("the docker CLI");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the docker CLI against `sock` and returns its stdout; panics with stderr on failure.
pub fn docker(sock: &Path, args: &[&str]) -> String {
    let (ok, out, err) = docker_cli(sock, args);
    assert!(ok, "docker {args:?}: {err}");
    out
}

/// Waits until a daemon on `sock` answers `docker version`; panics with its log otherwise.
pub fn wait_for(sock: &Path, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let ok = Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "{what} did not answer: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Docker's daemon under `dir` (data root `dir/docker`, socket `dir/docker.sock`, log
/// `dir/dockerd.log`), with `extra` flags such as `--storage-driver`.
pub struct Dockerd {
    pub sock: PathBuf,
    pub log: PathBuf,
    pub data_root: PathBuf,
    process: DaemonProcess,
}

impl Dockerd {
    pub fn start(dir: &Path, namespace: &str, extra: &[&str]) -> Dockerd {
        let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dockerd is not installed: scripts/setup.sh installs Debian's docker.io");
        let sock = dir.join("docker.sock");
        let log = dir.join("dockerd.log");
        let data_root = dir.join("docker");
        let child = Command::new("unshare")
            .arg("--net")
            .arg(dockerd)
            .arg("--data-root")
            .arg(&data_root)
            .arg("--exec-root")
            .arg(dir.join("docker-exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--bridge=none", "--iptables=false", "--ip6tables=false"])
            .args(["--containerd-namespace", namespace])
            .args([
                "--containerd-plugins-namespace",
                &format!("{namespace}-plugins"),
            ])
            .args(extra)
            .stderr(std::fs::File::create(&log).expect("create the dockerd log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start dockerd");
        let daemon = Dockerd {
            sock,
            log,
            process: DaemonProcess::new(child, data_root.clone()),
            data_root,
        };
        wait_for(&daemon.sock, "dockerd", &daemon.log);
        daemon
    }

    /// The docker CLI against this daemon; stdout, or a panic with stderr and the daemon's log.
    pub fn docker(&self, args: &[&str]) -> String {
        let (ok, out, err) = docker_cli(&self.sock, args);
        assert!(
            ok,
            "docker {args:?}: {err}\n--- dockerd log (tail) ---\n{}",
            self.log_tail()
        );
        out
    }

    /// The docker CLI against this daemon; (success, stdout, stderr) for calls meant to fail.
    pub fn try_docker(&self, args: &[&str]) -> (bool, String, String) {
        docker_cli(&self.sock, args)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Stops the daemon now (as dropping does).
    pub fn stop(self) {
        drop(self.process);
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.process.exited()
    }
}
