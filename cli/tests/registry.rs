//! `strata login`, `push`, `pull` and `logout` against a `stratad` and a `docker-registry`
//! (HTTPS with a test CA, htpasswd auth) this test starts on 127.0.0.1 and stops at its end,
//! also on failure. Never names an image without a registry host.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A binary: `env` if set (helpers sharing one target directory overwrite each other's
/// binaries), else the one beside `strata`.
fn bin(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_strata")).with_file_name(name)
}

/// Kills and reaps a child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_registry(dir: &Path) -> (Proc, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    strata_core::testing::make_test_certs(dir);
    let htpasswd = Command::new("htpasswd")
        .args(["-Bbn", "cli", "pw"])
        .output()
        .expect("htpasswd (apache2-utils) must be installed: scripts/setup.sh");
    std::fs::write(dir.join("htpasswd"), htpasswd.stdout).unwrap();
    let d = |f: &str| dir.join(f).display().to_string();
    let config = format!(
        "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: \
         127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    \
         realm: t\n    path: {}\n",
        d("data"),
        d("server.pem"),
        d("server-key.pem"),
        d("htpasswd")
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .expect("docker-registry must be installed (scripts/setup.sh installs it)");
    let p = Proc(child);
    wait_for("docker-registry", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (p, format!("127.0.0.1:{port}"))
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn strata(&self, args: &[&str]) -> Output {
        Command::new(bin("STRATA_CLI", "strata"))
            .env(
                "STRATA_HOST",
                format!("unix://{}", self.dir.path().join("s.sock").display()),
            )
            .env("STRATA_CONFIG", self.dir.path().join("config"))
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

    fn fails(&self, args: &[&str]) -> String {
        let out = self.strata(args);
        assert!(!out.status.success(), "strata {args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

#[test]
fn login_push_pull_logout() {
    let dir = tempfile::tempdir().unwrap();
    let (_registry, host) = start_registry(dir.path());
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    let p = |s: &str| env.dir.path().join(s).display().to_string();
    let daemon = Command::new(bin("STRATA_STRATAD", "stratad"))
        .args(["--data-root", &p("root"), "--exec-root", &p("exec")])
        .args(["--pidfile", &p("pid"), "--storage-driver", "vfs"])
        .args(["-H", &format!("unix://{}", p("s.sock"))])
        .stderr(std::fs::File::create(env.dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    let _daemon = Proc(daemon);
    wait_for("stratad", || env.strata(&["version"]).status.success());
    let fixtures = std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    env.ok(&["load", "-i", &fixtures.join("bb.tar").display().to_string()]);
    let id = |name: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&env.ok(&["image", "inspect", name])).unwrap();
        v[0]["Id"].as_str().unwrap().to_string()
    };
    let bb = id("bb");
    let name = format!("{host}/cli/bb:v1");
    env.ok(&["tag", "bb", &name]);

    let err = env.fails(&["push", &name]);
    assert!(err.contains("no basic auth credentials"), "{err}");
    let err = env.fails(&["login", "-u", "cli", "-p", "nope", &host]);
    assert!(err.contains("401 Unauthorized"), "{err}");
    assert!(env
        .ok(&["login", "-u", "cli", "-p", "pw", &host])
        .contains("Login Succeeded"));
    let config = std::fs::read_to_string(env.dir.path().join("config/config.json")).unwrap();
    assert!(config.contains(&host), "{config}");

    env.ok(&["push", &name]);
    env.ok(&["rmi", &name, "bb"]);
    let out = env.ok(&["pull", &name]);
    assert!(out.contains("Downloaded newer image"), "{out}");
    assert_eq!(id(&name), bb);

    // `run` pulls a missing image itself.
    env.ok(&["rmi", &name]);
    let out = env.strata(&["run", "--rm", &name, "echo", "pulled"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("pulled\n"));

    assert!(env
        .ok(&["logout", &host])
        .contains("Removing login credentials"));
    env.ok(&["rmi", &name]);
    let err = env.fails(&["pull", &name]);
    assert!(err.contains("no basic auth credentials"), "{err}");
}
