//! Our example plugins under Docker's own daemon (Debian's docker.io 20.10, the protocol's
//! other client), driven with the stock docker CLI: `strata-vfs-plugin` as dockerd's storage
//! driver (`--experimental --storage-driver NAME`) and `strata-loopvol-plugin` for volumes.
//! On HEAD 3af0184 dockerd could not start on the graphdriver plugin at all ("driver not
//! supported": the plugin refused Docker's `"Opts": null` Init).
//!
//! While dockerd uses a plugin, the conformance binary runs the suite on a second process of
//! the same plugin binary, so both clients are shown to agree on the same code at the same
//! time. It needs its own process because a graphdriver plugin serves one home, the one its
//! last `GraphDriver.Init` named, and the suite gives each case a new home.
//!
//! Docker finds v1 plugins by name in /run/docker/plugins; each test's names carry its pid so
//! runs never meet, and the sockets are removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_core::testing::dockerd::{DaemonProcess, Dockerd};

const PLUGIN_DIR: &str = "/run/docker/plugins";

fn fixtures() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    assert!(
        dir.join("bb.tar").exists(),
        "fixtures not found at {}",
        dir.display()
    );
    dir
}

fn fixture(name: &str) -> String {
    fixtures().join(name).display().to_string()
}

/// A plugin process on a socket; the socket is removed (and the process stopped) when dropped.
struct Plugin {
    socket: PathBuf,
    log: PathBuf,
    _process: DaemonProcess,
}

impl Plugin {
    fn start(binary: &str, socket: PathBuf, log: PathBuf, extra: &[&str], root: &Path) -> Plugin {
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(binary)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stderr(std::fs::File::create(&log).expect("create the plugin log"))
            .spawn()
            .expect("start the plugin");
        let plugin = Plugin {
            socket,
            log,
            _process: DaemonProcess::new(child, root.to_path_buf()),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !plugin.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "the plugin never bound {}: {}",
                plugin.socket.display(),
                std::fs::read_to_string(&plugin.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plugin
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// The conformance binary, built beside the plugin binaries (`cargo nextest run --workspace`
/// and scripts/test.sh build it).
fn conformance(args: &[&str], log: &Path) -> Child {
    let bin =
        Path::new(env!("CARGO_BIN_EXE_strata-vfs-plugin")).with_file_name("strata-conformance");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p strata-conformance`",
        bin.display()
    );
    Command::new(bin)
        .args(args)
        .stdout(std::fs::File::create(log).expect("create the conformance log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the conformance binary")
}

fn assert_conformance_passed(mut child: Child, log: &Path) {
    let status = child.wait().expect("wait for the conformance binary");
    assert!(
        status.success(),
        "the conformance suite failed on the plugin:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn plugin_name(kind: &str) -> String {
    format!("strata-{kind}-t{}", std::process::id())
}

/// A plugin binary twice: one process for dockerd on `/run/docker/plugins/NAME.sock`, and a
/// second with the conformance binary already running the suite (`suite_flag SOCKET`) on it.
/// With `rooted`, each process gets its own `--root` under the test's directory.
struct PluginUnderTest {
    name: String,
    /// The dockerd-facing process's `--root`, when `rooted`.
    root: PathBuf,
    _for_dockerd: Plugin,
    _for_suite: Plugin,
    suite: Child,
    suite_log: PathBuf,
}

impl PluginUnderTest {
    fn start(t: &Path, kind: &str, binary: &str, suite_flag: &str, rooted: bool) -> Self {
        std::fs::create_dir_all(PLUGIN_DIR).unwrap();
        let name = plugin_name(kind);
        let root = t.join(kind);
        let suite_root = t.join(format!("{kind}-conformance"));
        let root_args = |dir: &Path| -> Vec<String> {
            if rooted {
                vec!["--root".into(), dir.display().to_string()]
            } else {
                Vec::new()
            }
        };
        let (dockerd_args, suite_args) = (root_args(&root), root_args(&suite_root));
        let for_dockerd = Plugin::start(
            binary,
            Path::new(PLUGIN_DIR).join(format!("{name}.sock")),
            t.join("plugin.log"),
            &dockerd_args.iter().map(String::as_str).collect::<Vec<_>>(),
            // A graphdriver plugin's mounts live under dockerd's data root.
            if rooted { &root } else { t },
        );
        let for_suite = Plugin::start(
            binary,
            t.join(format!("conformance-{kind}.sock")),
            t.join("plugin-conformance.log"),
            &suite_args.iter().map(String::as_str).collect::<Vec<_>>(),
            if rooted { &suite_root } else { t },
        );
        let suite_log = t.join("conformance.log");
        let suite = conformance(
            &[suite_flag, for_suite.socket.to_str().unwrap()],
            &suite_log,
        );
        PluginUnderTest {
            name,
            root,
            _for_dockerd: for_dockerd,
            _for_suite: for_suite,
            suite,
            suite_log,
        }
    }

    /// Waits for the suite that ran beside dockerd and insists it passed.
    fn assert_suite_passed(self) {
        assert_conformance_passed(self.suite, &self.suite_log);
    }
}

fn run(d: &Dockerd, image: &str, script: &str) -> String {
    d.docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        image,
        "sh",
        "-c",
        script,
    ])
}

#[test]
fn dockerd_runs_on_the_graphdriver_plugin() {
    let t = tempfile::Builder::new()
        .prefix("strata-dockerd-graph-")
        .tempdir()
        .unwrap();
    let plugin = PluginUnderTest::start(
        t.path(),
        "vfs",
        env!("CARGO_BIN_EXE_strata-vfs-plugin"),
        "--graphdriver-plugin",
        false,
    );
    let name = plugin.name.clone();
    let d = Dockerd::start(
        t.path(),
        &format!("{name}-ns"),
        &["--experimental", "--storage-driver", &name],
    );
    assert_eq!(d.docker(&["info", "-f", "{{.Driver}}"]).trim(), name);

    // Docker's own archives load, with the ids Docker gave them.
    for image in ["bb", "three"] {
        d.docker(&["load", "-i", &fixture(&format!("{image}.tar"))]);
        let want = std::fs::read_to_string(fixtures().join(format!("{image}.id"))).unwrap();
        let got = d.docker(&["image", "inspect", "-f", "{{.Id}}", image]);
        assert_eq!(got.trim(), want.trim(), "{image}'s id under the plugin");
    }
    // The whiteout fixture: its last layer deletes /data/gone.txt and /data/sub.
    assert_eq!(
        run(
            &d,
            "three",
            "cat /data/keep.txt /data/hello.txt /data/layer3.txt; \
             test ! -e /data/gone.txt && test ! -e /data/sub && echo whited-out"
        ),
        "layer1 keep\nhello from COPY layer\nlayer3\nwhited-out\n"
    );

    // Copy-on-write: one container's writes are its own.
    d.docker(&[
        "run",
        "--name",
        "writer",
        "--pull",
        "never",
        "--network",
        "none",
        "three",
        "sh",
        "-c",
        "echo changed > /data/keep.txt && echo new > /data/new.txt && rm /data/layer3.txt",
    ]);
    assert_eq!(
        run(&d, "three", "cat /data/keep.txt /data/layer3.txt"),
        "layer1 keep\nlayer3\n"
    );
    let diff = d.docker(&["diff", "writer"]);
    let mut lines: Vec<&str> = diff.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "A /data/new.txt",
            "C /data",
            "C /data/keep.txt",
            "D /data/layer3.txt"
        ],
        "docker diff through the plugin's Changes"
    );

    // Commit, save, remove, load back: the layer made by the plugin's Diff round-trips.
    d.docker(&["commit", "writer", "committed:1"]);
    let expected = "changed\nnew\ngone\n";
    let check = "cat /data/keep.txt /data/new.txt; test ! -e /data/layer3.txt && echo gone";
    assert_eq!(run(&d, "committed:1", check), expected);
    let saved = t.path().join("committed.tar");
    d.docker(&["save", "-o", saved.to_str().unwrap(), "committed:1"]);
    d.docker(&["rm", "-f", "writer"]);
    d.docker(&["rmi", "committed:1"]);
    d.docker(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(run(&d, "committed:1", check), expected);

    // Everything removed: the plugin's home holds no layer.
    d.docker(&["rmi", "committed:1", "three", "bb"]);
    let layers = d.data_root.join(&name).join("dir");
    let left: Vec<_> = std::fs::read_dir(&layers)
        .unwrap_or_else(|e| panic!("{}: {e}", layers.display()))
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "layers left in the plugin's home: {left:?}"
    );
    d.stop();
    plugin.assert_suite_passed();
}

#[test]
fn dockerd_uses_the_volume_plugin() {
    let t = tempfile::Builder::new()
        .prefix("strata-dockerd-vol-")
        .tempdir()
        .unwrap();
    let plugin = PluginUnderTest::start(
        t.path(),
        "loopvol",
        env!("CARGO_BIN_EXE_strata-loopvol-plugin"),
        "--volume-plugin",
        true,
    );
    let (name, root) = (plugin.name.clone(), plugin.root.clone());
    let d = Dockerd::start(
        t.path(),
        &format!("{name}-ns"),
        &["--storage-driver", "vfs"],
    );
    d.docker(&["load", "-i", &fixture("bb.tar")]);
    d.docker(&["volume", "create", "-d", &name, "-o", "size=20M", "data"]);
    assert_eq!(
        d.docker(&["volume", "inspect", "-f", "{{.Driver}}", "data"])
            .trim(),
        name
    );
    let with_volume = |script: &str| {
        d.try_docker(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "-v",
            "data:/data",
            "bb",
            "sh",
            "-c",
            script,
        ])
    };
    let (ok, _, err) = with_volume("echo kept > /data/file");
    assert!(ok, "{err}");
    let (ok, out, err) = with_volume("cat /data/file");
    assert!(ok, "{err}");
    assert_eq!(
        out, "kept\n",
        "the volume's data outlives its first container"
    );
    // The size is a hard limit: 40 MB do not fit in a 20 MB volume.
    let (ok, _, err) = with_volume("dd if=/dev/zero of=/data/big bs=1M count=40");
    assert!(!ok, "a write past the volume's size succeeded");
    assert!(err.contains("No space left"), "{err}");

    d.docker(&["volume", "rm", "data"]);
    let listed = d.docker(&["volume", "ls", "-q"]);
    assert!(!listed.lines().any(|l| l == "data"), "{listed}");
    let left: Vec<_> = std::fs::read_dir(&root)
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        !left.iter().any(|n| n.to_string_lossy().contains("data")),
        "the volume's files are left in the plugin's root: {left:?}"
    );
    d.stop();
    plugin.assert_suite_passed();
}
