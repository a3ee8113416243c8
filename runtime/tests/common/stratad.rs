//! A `stratad` of a test's own, driven with the stock docker CLI: fresh data root and socket,
//! stopped (and everything it mounted unmounted) on drop, also when the test fails. The same
//! shape as the daemon in docker_cli.rs, shared here for new CLI tests.

#![allow(dead_code)]

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

pub struct Stratad {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    /// None: the daemon picks its default driver.
    pub driver: Option<&'static str>,
    /// btrfs needs its data root on btrfs: a loop-mounted image made for the test.
    fs: Option<strata_btrfs::testing::LoopBtrfs>,
}

impl Stratad {
    pub fn start(driver: Option<&'static str>) -> Stratad {
        let dir = tempfile::Builder::new()
            .prefix("strata-engine-test-")
            .tempdir()
            .expect("temp dir");
        let fs = (driver == Some("btrfs"))
            .then(|| strata_btrfs::testing::LoopBtrfs::new().expect("a loop-mounted btrfs"));
        let mut d = Stratad {
            child: None,
            dir,
            driver,
            fs,
        };
        d.spawn();
        d
    }

    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("s.sock")
    }

    pub fn data_root(&self) -> PathBuf {
        match &self.fs {
            Some(fs) => fs.path().join("root"),
            None => self.dir.path().join("root"),
        }
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("stratad.log")).expect("log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stratad"));
        cmd.arg("--data-root")
            .arg(self.data_root())
            .arg("--exec-root")
            .arg(self.dir.path().join("exec"))
            .arg("--pidfile")
            .arg(self.dir.path().join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.sock().display()));
        if let Some(driver) = self.driver {
            cmd.arg("--storage-driver").arg(driver);
        }
        let child = cmd
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

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
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
        cmd.arg("-H")
            .arg(format!("unix://{}", self.sock().display()))
            .args(args)
            .stdin(Stdio::null());
        cmd
    }

    /// Runs docker, killed after 60 s (a hang is a failure, not a stuck test run).
    pub fn docker(&self, args: &[&str]) -> Output {
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the docker CLI must be installed (scripts/setup.sh installs it)");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (tx, rx) = std::sync::mpsc::channel();
        // Output is read while waiting, so a big stdout cannot block the CLI.
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.expect("docker output"),
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                panic!(
                    "docker {args:?} hung for 60 s\n--- daemon log ---\n{}",
                    self.log()
                );
            }
        }
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

    pub fn load_busybox(&self) {
        let tar = fixtures().join("bb.tar");
        let out = self.ok(&["load", "-i", tar.to_str().unwrap()]);
        assert!(out.contains("Loaded image: bb:latest"), "{out}");
    }
}

impl Drop for Stratad {
    fn drop(&mut self) {
        self.stop();
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.dir.path());
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.data_root());
    }
}
