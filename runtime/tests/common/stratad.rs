//! A `stratad` of a test's own, driven with the stock docker CLI: fresh data root and socket,
//! stopped (and everything it mounted unmounted) on drop, also when the test fails. Every
//! test target that runs the daemon uses this one helper.
//!
//! `STRATAD_BIN` runs another `stratad` build instead of this crate's, to check that a test
//! fails on an older commit; `STRATA_FIXTURES` points at the fixtures when the repository is
//! not beside `shared/`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("bb.tar").exists(),
        "fixtures not found at {} (set STRATA_FIXTURES)",
        dir.display()
    );
    dir
}

/// The daemon binary under test.
pub fn binary() -> PathBuf {
    std::env::var_os("STRATAD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stratad")))
}

/// How long one docker CLI call may take before the test fails instead of hanging.
const CLI_LIMIT: Duration = Duration::from_secs(60);

pub struct Stratad {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// None: the daemon picks its default driver.
    pub driver: Option<String>,
    /// Flags added to every start (TLS, limits, plugin directories...).
    pub extra_args: Vec<String>,
    /// btrfs needs its data root on btrfs: a loop-mounted image made for the test.
    fs: Option<strata_btrfs::testing::LoopBtrfs>,
    /// A data root the test made itself (on a filesystem of its own), instead of one in `dir`.
    root: Option<PathBuf>,
}

impl Stratad {
    pub fn start(driver: Option<&str>) -> Stratad {
        Self::start_with::<&str>(driver, &[])
    }

    pub fn start_with<S: AsRef<str>>(driver: Option<&str>, extra_args: &[S]) -> Stratad {
        let mut d = Self::new(driver, extra_args);
        d.spawn();
        d
    }

    /// A daemon whose data root is `root` (the test owns and cleans that filesystem).
    pub fn start_on(root: &Path, driver: Option<&str>) -> Stratad {
        let mut d = Self::new::<&str>(driver, &[]);
        d.root = Some(root.to_path_buf());
        d.spawn();
        d
    }

    fn new<S: AsRef<str>>(driver: Option<&str>, extra_args: &[S]) -> Stratad {
        let dir = tempfile::Builder::new()
            .prefix("strata-test-")
            .tempdir()
            .expect("temp dir");
        let fs = (driver == Some("btrfs"))
            .then(|| strata_btrfs::testing::LoopBtrfs::new().expect("a loop-mounted btrfs"));
        Stratad {
            child: None,
            dir,
            driver: driver.map(str::to_string),
            extra_args: extra_args.iter().map(|a| a.as_ref().to_string()).collect(),
            fs,
            root: None,
        }
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    pub fn data_root(&self) -> PathBuf {
        match (&self.root, &self.fs) {
            (Some(root), _) => root.clone(),
            (None, Some(fs)) => fs.path().join("root"),
            (None, None) => self.dir.path().join("root"),
        }
    }

    /// Starts the daemon (again, after `stop` or `kill`) and waits until it answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stratad.log"))
            .expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.dir.path().join("exec"))
            .arg("--pidfile")
            .arg(self.dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()));
        if let Some(driver) = &self.driver {
            cmd.arg("--storage-driver").arg(driver);
        }
        let child = cmd
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stratad");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.docker(&["version"]).status.success() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("stratad did not answer: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stratad.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("the daemon is running").id() as i32
    }

    /// The daemon's process, for a test that signals and waits for it itself.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }

    /// SIGTERM and wait (SIGKILL after 30 s), as an operator stops it.
    pub fn stop(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGTERM);
    }

    /// SIGKILL and wait: a crash.
    pub fn kill(&mut self) {
        self.signal_and_wait(nix::sys::signal::Signal::SIGKILL);
    }

    fn signal_and_wait(&mut self, signal: nix::sys::signal::Signal) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), signal);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("docker");
        // The CLI's own config (logins, detach keys) is the test's, never the host user's.
        cmd.env("DOCKER_CONFIG", self.dir.path().join("docker-config"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs docker, killed after 60 s (a hang is a failure, not a stuck test run).
    pub fn docker(&self, args: &[&str]) -> Output {
        self.docker_within(CLI_LIMIT, args)
    }

    /// Runs docker, failing the test if it has not finished within `limit`.
    pub fn docker_within(&self, limit: Duration, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the docker CLI must be installed (scripts/setup.sh installs it)");
        wait_within(child, limit).unwrap_or_else(|| {
            panic!(
                "docker {args:?} still running after {limit:?}\n--- daemon log ---\n{}",
                self.log()
            )
        })
    }

    /// Runs docker and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed ({:?}): {}\n--- daemon log ---\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs docker and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            !out.status.success(),
            "docker {args:?} succeeded but should not: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Loads a fixture archive (`bb`, `three`) and checks it has the id Docker gave it.
    pub fn load_fixture(&self, name: &str) {
        let f = fixtures();
        let archive = f.join(format!("{name}.tar"));
        let out = self.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            out.contains(&format!("Loaded image: {name}:latest")),
            "{out}"
        );
        let want = std::fs::read_to_string(f.join(format!("{name}.id"))).unwrap();
        let got = self.ok(&["image", "inspect", "-f", "{{.Id}}", name]);
        assert_eq!(
            got.trim(),
            want.trim(),
            "{name} loads with Docker's image id"
        );
    }

    pub fn load_busybox(&self) {
        self.load_fixture("bb");
    }

    /// `docker import` of a tar made by the test; returns the image name.
    pub fn import(&self, name: &str, tar: &[u8]) -> String {
        let mut child = self
            .command(&["import", "-", name])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("docker import");
        child.stdin.take().unwrap().write_all(tar).unwrap();
        let out = wait_within(child, Duration::from_secs(30)).expect("import finishes");
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        name.to_string()
    }
}

impl Drop for Stratad {
    fn drop(&mut self) {
        self.stop();
        // Whatever the daemon left mounted under its root goes before the directory does.
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.dir.path());
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.data_root());
    }
}

/// Waits for `child`, reading its output meanwhile (a big stdout cannot block it); kills it
/// and answers None after `limit`.
pub fn wait_within(child: Child, limit: Duration) -> Option<Output> {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Some(out.expect("child output")),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            None
        }
    }
}
