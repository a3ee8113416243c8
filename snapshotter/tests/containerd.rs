//! Our snapshotter under Debian's containerd 1.6, driven with `ctr` as a user would: import of
//! the fixtures, containers with copy-on-write checked, `ctr snapshots` tree/usage/info/
//! prepare/mounts/rm, a kill -9 and restart of the snapshotter while containerd holds
//! snapshots, and containerd's garbage collection after `ctr images rm`. One test per driver.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{scratch, wait_until, Containerd, SnapshotterProcess};
use strata_conformance::env::Environment;

const BB: &str = "docker.io/library/bb:latest";
const THREE: &str = "docker.io/library/three:latest";
const FIXTURES: &str = "/work/shared/fixtures";

/// Lines of `ctr snapshots ls` (header dropped): key, parent, kind.
fn snapshots(c: &Containerd, snapshotter: &str) -> Vec<Vec<String>> {
    c.ctr(&["snapshots", "--snapshotter", snapshotter, "ls"])
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

/// The snapshot keys our snapshotter itself lists (containerd's own list is its metadata).
fn listed_by_us(socket: &Path) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        let mut client = strata_snapshotter::client::connect(socket)
            .await
            .expect("connect");
        let req = strata_snapshotter::api::snapshots::v1::ListSnapshotsRequest {
            snapshotter: String::new(),
            filters: vec![],
        };
        let mut stream = client.list(req).await.expect("List").into_inner();
        let mut names = Vec::new();
        while let Some(batch) = stream.message().await.expect("List stream") {
            names.extend(batch.info.into_iter().map(|i| i.name));
        }
        names
    })
}

/// The key of three's top layer: the committed snapshot nothing else names as parent.
fn top_of_three(c: &Containerd, snapshotter: &str) -> String {
    let out = c.ctr(&["images", "ls"]);
    assert!(out.contains(THREE), "{out}");
    let all = snapshots(c, snapshotter);
    let parents: Vec<&String> = all.iter().filter_map(|l| l.get(1)).collect();
    // three is four layers deep: its top is the leaf with a three-deep ancestry.
    all.iter()
        .filter(|l| !parents.contains(&&l[0]))
        .map(|l| l[0].clone())
        .find(|k| depth(&all, k) == 4)
        .unwrap_or_else(|| panic!("no four-deep chain in {all:?}"))
}

fn depth(all: &[Vec<String>], key: &str) -> usize {
    match all.iter().find(|l| l[0] == key) {
        Some(l) if l.len() > 2 => 1 + depth(all, &l[1]),
        Some(_) => 1,
        None => 0,
    }
}

fn import_and_run(c: &Containerd, name: &str) {
    for fixture in ["bb.tar", "three.tar"] {
        c.ctr(&[
            "images",
            "import",
            "--snapshotter",
            name,
            &format!("{FIXTURES}/{fixture}"),
        ]);
    }
    let run = |id: &str, image: &str, script: &str| {
        c.ctr(&[
            "run",
            "--rm",
            "--snapshotter",
            name,
            image,
            id,
            "sh",
            "-c",
            script,
        ])
    };
    let first = run("cow-1", BB, "echo written > /etc/cow-probe && echo cowuser:x:9:9::/:/bin/sh >> /etc/passwd && cat /etc/cow-probe");
    assert_eq!(first.trim(), "written");
    let second = run("cow-2", BB, "test -e /etc/cow-probe && echo present || echo absent; grep -c cowuser /etc/passwd || true");
    assert_eq!(
        second.split_whitespace().collect::<Vec<_>>(),
        ["absent", "0"],
        "a write in one container reached another"
    );
    let data = run("whiteouts", THREE, "ls /data");
    assert_eq!(
        data.split_whitespace().collect::<Vec<_>>(),
        ["hello.txt", "keep.txt", "layer3.txt"],
        "whiteouts of three.tar"
    );
}

/// The mount type containerd gets for an active snapshot over a parent: overlay2 describes
/// its overlay for containerd to mount; the others are mounted by the snapshotter (or are
/// plain directories) and handed over as binds.
fn expected_mount_type(driver: &str) -> &'static str {
    match driver {
        "overlay2" => "mount -t overlay",
        _ => "mount -t bind",
    }
}

fn inspect_snapshots(c: &Containerd, driver: &str, name: &str, top: &str) {
    let tree = c.ctr(&["snapshots", "--snapshotter", name, "tree"]);
    assert!(tree.contains(top), "tree lacks {top}: {tree}");
    let usage = c.ctr(&["snapshots", "--snapshotter", name, "usage"]);
    assert!(usage.lines().count() >= 5, "usage of every layer: {usage}");
    let info = c.ctr(&["snapshots", "--snapshotter", name, "info", top]);
    assert!(info.contains("\"Kind\": \"Committed\""), "{info}");
    c.ctr(&[
        "snapshots",
        "--snapshotter",
        name,
        "prepare",
        "held-active",
        top,
    ]);
    c.ctr(&["snapshots", "--snapshotter", name, "view", "held-view", top]);
    let mounts = c.ctr(&[
        "snapshots",
        "--snapshotter",
        name,
        "mounts",
        "/mnt/x",
        "held-active",
    ]);
    assert!(mounts.contains(expected_mount_type(driver)), "{mounts}");
    c.ctr(&[
        "snapshots",
        "--snapshotter",
        name,
        "prepare",
        "scratch",
        top,
    ]);
    c.ctr(&["snapshots", "--snapshotter", name, "rm", "scratch"]);
    let (ok, _, err) = c.try_ctr(&["snapshots", "--snapshotter", name, "rm", top]);
    assert!(!ok, "a parent of held snapshots was removed");
    assert!(
        err.contains("child") || err.contains("precondition"),
        "{err}"
    );
}

/// kill -9 of the snapshotter while containerd holds snapshots, then a new one on the same
/// root: everything containerd holds is still there and usable.
fn restart(c: &Containerd, snap: &mut SnapshotterProcess, driver: &str, root: &Path, name: &str) {
    // containerd's GC removes dropped snapshots (`scratch`, the leased view) from us at its own
    // pace: compare what it holds, the image chains and the active snapshot.
    let held = |socket: &Path| -> Vec<String> {
        let all = listed_by_us(socket);
        all.into_iter()
            .filter(|k| k.contains("sha256:") || k.ends_with("/held-active"))
            .collect()
    };
    let before = held(&snap.socket);
    assert_eq!(before.len(), 5, "{before:?}");
    snap.kill();
    let (socket, log) = (snap.socket.clone(), snap.log.clone());
    *snap = SnapshotterProcess::start(driver, root, &socket, &log);
    assert_eq!(held(&snap.socket), before);
    let mounts = wait_until(Duration::from_secs(60), || {
        c.try_ctr(&[
            "snapshots",
            "--snapshotter",
            name,
            "mounts",
            "/mnt/x",
            "held-active",
        ])
        .0
    });
    mounts.unwrap_or_else(|| panic!("containerd did not reach the restarted snapshotter"));
    let out = c.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        name,
        THREE,
        "after-restart",
        "cat",
        "/data/layer3.txt",
    ]);
    assert!(!out.trim().is_empty());
}

fn garbage_collected(c: &Containerd, snap: &SnapshotterProcess, name: &str) {
    // ctr takes a short lease for `snapshots view`: containerd may have collected it already.
    let _ = c.try_ctr(&["snapshots", "--snapshotter", name, "rm", "held-view"]);
    c.ctr(&["snapshots", "--snapshotter", name, "rm", "held-active"]);
    // --sync: a collection now, not when the GC scheduler's pause threshold allows.
    c.ctr(&["images", "rm", "--sync", BB, THREE]);
    let gone = wait_until(Duration::from_secs(60), || {
        listed_by_us(&snap.socket).is_empty()
    });
    assert!(
        gone.is_some(),
        "left after GC: {:?}",
        listed_by_us(&snap.socket)
    );
    assert!(snapshots(c, name).is_empty());
}

fn scenario(driver: &str) {
    let env = scratch(driver);
    let dir = env.scratch();
    let name = format!("strata-{driver}");
    let socket = dir.join("snapshotter.sock");
    let mut snap =
        SnapshotterProcess::start(driver, env.root(), &socket, &dir.join("snapshotter.log"));
    let c = Containerd::start(dir, &name, &socket);
    let plugins = c.ctr(&["plugins", "ls"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.contains(&name) && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    import_and_run(&c, &name);
    let top = top_of_three(&c, &name);
    inspect_snapshots(&c, driver, &name, &top);
    restart(&c, &mut snap, driver, env.root(), &name);
    garbage_collected(&c, &snap, &name);
}

#[test]
fn vfs_under_containerd() {
    scenario("vfs");
}

#[test]
fn overlay2_under_containerd() {
    scenario("overlay2");
}

#[test]
fn btrfs_under_containerd() {
    scenario("btrfs");
}

#[test]
fn fuse_overlay_under_containerd() {
    scenario("fuse-overlay");
}

/// One process serving overlay2 and vfs on `--socket-dir`, both proxy snapshotters of one
/// containerd, the same image imported on each, and `df` comparing them: three.tar's four
/// layers are four full copies on vfs and one copy plus small diffs on overlay2.
#[test]
fn one_process_serves_two_drivers_and_df_compares_them() {
    let env = scratch("two-drivers");
    let dir = env.scratch();
    let sockets = dir.join("sockets");
    let args: Vec<String> = ["--driver", "overlay2", "--driver", "vfs", "--socket-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([sockets.display().to_string()])
        .collect();
    let (overlay2, vfs) = (
        sockets.join("strata-overlay2.sock"),
        sockets.join("strata-vfs.sock"),
    );
    let log = dir.join("snapshotter.log");
    let _snap = SnapshotterProcess::start_with(&args, env.root(), env.root(), &vfs, &log);
    let c = Containerd::start_with(dir, &[("strata-overlay2", &overlay2), ("strata-vfs", &vfs)]);
    for name in ["strata-overlay2", "strata-vfs"] {
        c.ctr(&[
            "images",
            "import",
            "--snapshotter",
            name,
            &format!("{FIXTURES}/three.tar"),
        ]);
        let out = c.ctr(&[
            "run",
            "--rm",
            "--snapshotter",
            name,
            THREE,
            "t",
            "cat",
            "/data/hello.txt",
        ]);
        assert!(!out.trim().is_empty(), "{name}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_strata-snapshotter"))
        .args(["df", "--socket-dir"])
        .arg(&sockets)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    let chain_bytes = |driver: &str| -> i64 {
        let row = table
            .lines()
            .find(|l| l.starts_with(driver) && l.contains(" chain ") && l.contains(" 4 "))
            .unwrap_or_else(|| panic!("no four-layer chain of {driver} in\n{table}"));
        row.split_whitespace().nth(3).unwrap().parse().unwrap()
    };
    let (o, v) = (chain_bytes("overlay2"), chain_bytes("vfs"));
    assert!(
        o > 1 << 20 && v > 3 * o,
        "overlay2 {o} bytes, vfs {v} bytes:\n{table}"
    );
}
