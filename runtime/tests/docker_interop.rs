//! What Strata saves, Docker's own daemon loads: `docker save` from stratad, `docker load` into
//! dockerd (from Debian's docker.io, which scripts/setup.sh installs), same image ids. dockerd
//! runs inside `unshare --net` on its own data root and socket, with no bridge and no iptables,
//! so it can reach nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_core::testing::dockerd::{docker, wait_for, DaemonProcess, Dockerd};

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

#[test]
fn images_saved_by_strata_load_into_dockers_daemon() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();

    let strata_sock = root.join("strata.sock");
    let strata_log = root.join("stratad.log");
    let _strata = DaemonProcess::new(
        Command::new(env!("CARGO_BIN_EXE_stratad"))
            .args(["--data-root", root.join("strata").to_str().unwrap()])
            .args(["--exec-root", root.join("strata-exec").to_str().unwrap()])
            .args(["--pidfile", root.join("strata.pid").to_str().unwrap()])
            .args(["--storage-driver", "vfs"])
            .args(["-H", &format!("unix://{}", strata_sock.display())])
            .stderr(std::fs::File::create(&strata_log).unwrap())
            .spawn()
            .unwrap(),
        root.join("strata"),
    );
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

    let dockerd = Dockerd::start(root, "strata-interop", &["--storage-driver", "vfs"]);
    let docker_sock = dockerd.sock.clone();
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
