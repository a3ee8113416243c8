//! containerd 1.6 (Debian's, which scripts/setup.sh installs) and our snapshotter as processes
//! for the tests. containerd runs inside `unshare --net` with its own config, root, state and
//! socket, the CRI plugin disabled; both are stopped when dropped, also when a test fails.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_conformance::env::{LoopFs, TempEnvironment};
use strata_core::testing::dockerd::DaemonProcess;

/// Our snapshotter process on `root`, serving `socket`.
pub struct SnapshotterProcess {
    pub socket: PathBuf,
    pub log: PathBuf,
    pid: i32,
    process: Option<DaemonProcess>,
}

impl SnapshotterProcess {
    pub fn start(driver: &str, root: &Path, socket: &Path, log: &Path) -> Self {
        let mut args = vec![
            "--driver".to_string(),
            driver.to_string(),
            "--socket".into(),
        ];
        args.push(socket.display().to_string());
        // Its own mounts lie under ROOT/DRIVER; ROOT itself may be the test's loop mount.
        Self::start_with(&args, root, &root.join(driver), socket, log)
    }

    /// `strata-snapshotter ARGS --root ROOT`, ready once `socket` answers; mounts left under
    /// `mounts` are taken down when it is stopped.
    pub fn start_with(
        args: &[String],
        root: &Path,
        mounts: &Path,
        socket: &Path,
        log: &Path,
    ) -> Self {
        let logfile = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the snapshotter log");
        let child = Command::new(env!("CARGO_BIN_EXE_strata-snapshotter"))
            .args(args)
            .arg("--root")
            .arg(root)
            .env("RUST_LOG", "info")
            .stderr(logfile)
            .stdout(Stdio::null())
            .spawn()
            .expect("start strata-snapshotter");
        let pid = child.id() as i32;
        let p = Self {
            socket: socket.to_path_buf(),
            log: log.to_path_buf(),
            pid,
            process: Some(DaemonProcess::new(child, mounts.to_path_buf())),
        };
        wait_until(Duration::from_secs(30), || {
            std::os::unix::net::UnixStream::connect(socket).is_ok()
        })
        .unwrap_or_else(|| panic!("snapshotter did not listen: {}", read(log)));
        p
    }

    /// kill -9, as a crash would: nothing is released, nothing is flushed.
    pub fn kill(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
        self.process.take();
    }
}

/// A containerd process with a proxy plugin `strata-DRIVER` on `snapshotter_socket`.
pub struct Containerd {
    pub socket: PathBuf,
    /// Our namespace inside containerd: one per test, as runc keeps its state per namespace
    /// under /run/containerd/runc whatever containerd's own state directory.
    pub namespace: String,
    pub log: PathBuf,
    process: DaemonProcess,
}

impl Containerd {
    pub fn start(dir: &Path, name: &str, snapshotter_socket: &Path) -> Self {
        Self::start_with(dir, &[(name, snapshotter_socket)])
    }

    /// containerd with one proxy snapshotter per `(name, socket)`.
    pub fn start_with(dir: &Path, snapshotters: &[(&str, &Path)]) -> Self {
        let name = snapshotters[0].0;
        let socket = dir.join("containerd.sock");
        let config = config_toml(dir, &socket, snapshotters);
        Self::start_with_config(dir, &config, &format!("strata-test-{name}"))
    }

    /// containerd with the config `config` (its socket `dir/containerd.sock`); `ctr` runs in
    /// `namespace`.
    pub fn start_with_config(dir: &Path, config_text: &str, namespace: &str) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("containerd.toml");
        std::fs::write(&config, config_text).expect("write the containerd config");
        let log = dir.join("containerd.log");
        let child = Command::new("unshare")
            .arg("--net")
            .arg("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(&log).expect("create the containerd log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("start containerd (scripts/setup.sh installs Debian's containerd)");
        let c = Self {
            socket,
            namespace: namespace.to_string(),
            log,
            process: DaemonProcess::new(child, dir.join("state")),
        };
        let answered = wait_until(Duration::from_secs(60), || c.try_ctr(&["version"]).0);
        answered.unwrap_or_else(|| panic!("containerd did not answer: {}", read(&c.log)));
        c
    }

    /// `ctr` against this containerd in our namespace: (success, stdout, stderr).
    pub fn try_ctr(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new("/usr/bin/ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", &self.namespace])
            .args(args)
            .output()
            .expect("run ctr");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ctr` that must succeed; its stdout.
    pub fn ctr(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.try_ctr(args);
        assert!(
            ok,
            "ctr {args:?}: {err}\n--- containerd log ---\n{}",
            tail(&self.log)
        );
        out
    }
}

/// The config the tests (and docs/kubernetes.md) use: everything under `dir`, CRI disabled.
pub fn config_toml(dir: &Path, socket: &Path, snapshotters: &[(&str, &Path)]) -> String {
    let mut config = format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[proxy_plugins]
"#,
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = socket.display(),
    );
    for (name, snap) in snapshotters {
        config.push_str(&format!(
            "  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = \"{}\"\n",
            snap.display()
        ));
    }
    config
}

/// A scratch directory for one test; on btrfs for the btrfs driver.
pub fn scratch(driver: &str) -> TempEnvironment {
    let env = match driver {
        "btrfs" => TempEnvironment::with_loop_fs("snapshotter-btrfs", &LoopFs::btrfs()),
        _ => TempEnvironment::new(&format!("snapshotter-{driver}")),
    };
    env.expect("a scratch directory for the test")
}

pub fn wait_until(timeout: Duration, mut ok: impl FnMut() -> bool) -> Option<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub fn tail(path: &Path) -> String {
    let text = read(path);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
