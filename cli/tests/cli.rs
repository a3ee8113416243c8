//! `strata` against a `stratad` this test starts (vfs, its own data root and socket).
//! stratad is the workspace's sibling binary: `cargo nextest run --workspace` builds it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let strata = PathBuf::from(env!("CARGO_BIN_EXE_strata"));
    let path = strata.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace (cargo build --workspace) first",
        path.display()
    );
    path
}

struct Daemon {
    child: Child,
    dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("s.sock").display())
    }

    fn strata(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .env("STRATA_HOST", self.host())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let p = |s: &str| dir.path().join(s).display().to_string();
    let child = Command::new(bin("stratad"))
        .args([
            "--data-root",
            &p("root"),
            "--exec-root",
            &p("exec"),
            "--pidfile",
            &p("pid"),
        ])
        .args([
            "--storage-driver",
            "vfs",
            "-H",
            &format!("unix://{}", p("s.sock")),
        ])
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let d = Daemon { child, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !d.strata(&["version"]).status.success() {
        assert!(Instant::now() < deadline, "stratad did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    d
}

fn fixture(name: &str) -> String {
    let dir = std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    dir.join(name).display().to_string()
}

#[test]
fn docker_style_commands_work() {
    let d = start();
    assert!(d
        .ok(&["load", "-i", &fixture("three.tar")])
        .contains("three:latest"));
    let images = d.ok(&["images"]);
    assert!(images.starts_with("REPOSITORY"), "{images}");
    assert!(
        images.contains("three") && images.contains("6d072c140900"),
        "{images}"
    );
    let out = d.ok(&["run", "--rm", "three", "cat", "/data/layer3.txt"]);
    assert_eq!(out, "layer3\n");
    let out = d.strata(&["run", "--rm", "three", "sh", "-c", "exit 5"]);
    assert_eq!(out.status.code(), Some(5));
    d.ok(&["volume", "create", "vol1"]);
    d.ok(&[
        "run",
        "--name",
        "w1",
        "-v",
        "vol1:/d",
        "three",
        "sh",
        "-c",
        "echo hi > /d/f; echo out",
    ]);
    assert_eq!(d.ok(&["logs", "w1"]), "out\n");
    let ps = d.ok(&["ps", "-a"]);
    assert!(ps.contains("w1") && ps.contains("Exited (0)"), "{ps}");
    let json = d.ok(&["ps", "-a", "--format", "json"]);
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(first["Names"][0], "/w1");
    let df = d.ok(&["system", "df", "-v"]);
    for needle in ["Images space usage", "three", "w1", "vol1", "ON DISK"] {
        assert!(df.contains(needle), "system df -v lacks {needle:?}:\n{df}");
    }
    assert!(d.ok(&["info"]).contains("Storage Driver: vfs"));
    d.ok(&["rm", "w1"]);
    d.ok(&["volume", "rm", "vol1"]);
    assert!(d.ok(&["completion", "bash"]).contains("strata"));
}

#[test]
fn a_daemon_that_is_not_running_gets_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["-H", "unix:///nonexistent/strata.sock", "ps"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Is stratad running?"), "{err}");
}
