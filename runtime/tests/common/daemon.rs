//! A `stratad` of the test's own for driving it with the stock docker CLI: fresh data root and
//! socket in a temp dir; dropped, it is stopped and everything it mounted is unmounted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct StrataDaemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl StrataDaemon {
    /// Starts the daemon on `driver` and waits until the CLI gets an answer.
    pub fn start(driver: &str) -> StrataDaemon {
        let dir = tempfile::Builder::new()
            .prefix("strata-sec-test-")
            .tempdir()
            .unwrap();
        let log = std::fs::File::create(dir.path().join("stratad.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_stratad"))
            .arg("--data-root")
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("pid"))
            .arg("--storage-driver")
            .arg(driver)
            .arg("-H")
            .arg(format!("unix://{}", dir.path().join("s.sock").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stratad");
        let d = StrataDaemon {
            child: Some(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("stratad did not answer: {}", d.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stratad.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("s.sock").display()
            ))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("the docker CLI must be installed (scripts/setup.sh installs it)")
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

    /// Loads an image archive from the shared fixtures (`bb` for busybox).
    pub fn load_fixture(&self, name: &str) {
        // Beside the rootfs archive the other container tests use.
        let dir = std::env::var_os("STRATA_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(super::FIXTURE).parent().unwrap().to_path_buf());
        let archive = dir.join(format!("{name}.tar"));
        let out = self.ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            out.contains(&format!("Loaded image: {name}:latest")),
            "{out}"
        );
    }
}

impl Drop for StrataDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && !matches!(c.try_wait(), Ok(Some(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.dir.path());
    }
}
