//! What Strata saves, Docker's own daemon loads: `docker save` from stratad, `docker load` into
//! dockerd (from Debian's docker.io, which scripts/setup.sh installs), same image ids. dockerd
//! runs inside `unshare --net` on its own data root and socket, with no bridge and no iptables,
//! so it can reach nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    let dir = std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("bb.tar").exists(),
        "fixtures not found at {}",
        dir.display()
    );
    dir
}

fn docker(sock: &Path, args: &[&str]) -> String {
    let out = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", sock.display()))
        .args(args)
        .output()
        .expect("the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_for(sock: &Path, what: &str, log: &Path) {
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

/// A daemon process; killed (TERM, then KILL) and its mounts dropped when the test ends.
struct Proc {
    child: Child,
    root: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.root);
    }
}

#[test]
fn images_saved_by_strata_load_into_dockers_daemon() {
    let dockerd = ["/usr/sbin/dockerd", "/usr/bin/dockerd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("dockerd is not installed: scripts/setup.sh installs Debian's docker.io");
    let t = tempfile::tempdir().unwrap();
    let root = t.path();

    let strata_sock = root.join("strata.sock");
    let strata_log = root.join("stratad.log");
    let _strata = Proc {
        child: Command::new(env!("CARGO_BIN_EXE_stratad"))
            .args(["--data-root", root.join("strata").to_str().unwrap()])
            .args(["--exec-root", root.join("strata-exec").to_str().unwrap()])
            .args(["--pidfile", root.join("strata.pid").to_str().unwrap()])
            .args(["--storage-driver", "vfs"])
            .args(["-H", &format!("unix://{}", strata_sock.display())])
            .stderr(std::fs::File::create(&strata_log).unwrap())
            .spawn()
            .unwrap(),
        root: root.join("strata"),
    };
    wait_for(&strata_sock, "stratad", &strata_log);
    let f = fixtures();
    for name in ["bb", "three"] {
        docker(
            &strata_sock,
            &[
                "load",
                "-i",
                f.join(format!("{name}.tar")).to_str().unwrap(),
            ],
        );
    }
    let saved = root.join("saved.tar");
    docker(
        &strata_sock,
        &[
            "save",
            "-o",
            saved.to_str().unwrap(),
            "three:latest",
            "bb:latest",
        ],
    );

    let docker_sock = root.join("docker.sock");
    let docker_log = root.join("dockerd.log");
    let _dockerd = Proc {
        child: Command::new("unshare")
            .arg("--net")
            .arg(dockerd)
            .args(["--data-root", root.join("docker").to_str().unwrap()])
            .args(["--exec-root", root.join("docker-exec").to_str().unwrap()])
            .args(["--pidfile", root.join("docker.pid").to_str().unwrap()])
            .args(["-H", &format!("unix://{}", docker_sock.display())])
            .args([
                "--storage-driver",
                "vfs",
                "--bridge=none",
                "--iptables=false",
            ])
            .args(["--containerd-namespace", "strata-interop"])
            .stderr(std::fs::File::create(&docker_log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        root: root.join("docker"),
    };
    wait_for(&docker_sock, "dockerd", &docker_log);
    let out = docker(&docker_sock, &["load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("three:latest"), "{out}");
    for name in ["bb", "three"] {
        let want = std::fs::read_to_string(f.join(format!("{name}.id"))).unwrap();
        let got = docker(&docker_sock, &["image", "inspect", "-f", "{{.Id}}", name]);
        assert_eq!(
            got.trim(),
            want.trim(),
            "{name}: Docker gives the image Docker gave it"
        );
    }
    let strata_layers = docker(
        &strata_sock,
        &["image", "inspect", "-f", "{{json .RootFS.Layers}}", "three"],
    );
    let docker_layers = docker(
        &docker_sock,
        &["image", "inspect", "-f", "{{json .RootFS.Layers}}", "three"],
    );
    assert_eq!(strata_layers, docker_layers, "same diffIDs");
}
