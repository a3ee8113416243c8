//! The stock docker CLI against `stratad`, on overlay2 and vfs: each test starts its own daemon
//! on a fresh data root and socket, and kills it (and everything it mounted) at the end, also
//! when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/stratad.rs"]
mod stratad;

use stratad::{fixtures, Stratad as Daemon};

fn load_fixtures(d: &Daemon) {
    d.load_fixture("bb");
    d.load_fixture("three");
}

fn run_lifecycle(driver: &'static str) {
    let mut d = Daemon::start(Some(driver));
    load_fixtures(&d);
    let info = d.ok(&["info", "--format", "{{.Driver}}"]);
    assert_eq!(info.trim(), driver);

    // Content of a multi-layer image with whiteouts.
    let out = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "three",
        "sh",
        "-c",
        "cat /data/keep.txt /data/hello.txt /data/layer3.txt; ls /data",
    ]);
    assert_eq!(
        out,
        "layer1 keep\nhello from COPY layer\nlayer3\nhello.txt\nkeep.txt\nlayer3.txt\n"
    );

    // Isolation: PID 1, own hostname, only loopback.
    let out = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--hostname",
        "box",
        "bb",
        "sh",
        "-c",
        "echo $$; hostname; ls /sys/class/net",
    ]);
    assert_eq!(out, "1\nbox\nlo\n");

    // Exit codes as Docker's.
    assert_eq!(
        d.docker(&["run", "--rm", "--pull", "never", "bb", "sh", "-c", "exit 3"])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        d.docker(&["run", "--rm", "--pull", "never", "bb", "nosuchcmd"])
            .status
            .code(),
        Some(127)
    );

    // cgroup limits take effect on this driver too: a memory hog is OOM-killed (137, recorded),
    // a fork loop stops at the pids limit.
    let hog = d.docker(&[
        "run",
        "--name",
        "hog",
        "--pull",
        "never",
        "--memory",
        "32m",
        "bb",
        "sh",
        "-c",
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived",
    ]);
    assert_eq!(hog.status.code(), Some(137), "{hog:?}");
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.OOMKilled}}", "hog"])
            .trim(),
        "true"
    );
    d.ok(&["rm", "hog"]);
    // The count comes from a shell glob, which needs no fork once the limit is reached.
    let procs = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--pids-limit",
        "10",
        "bb",
        "sh",
        "-c",
        "(for i in $(seq 1 30); do sleep 5 & done) 2>/dev/null; set -- /proc/[0-9]*; echo $#",
    ]);
    let procs: u32 = procs.trim().parse().expect("a process count");
    assert!(
        (2..=10).contains(&procs),
        "{procs} processes under --pids-limit 10"
    );

    // A named volume outlives its container and is seen by the next.
    d.ok(&[
        "run",
        "--name",
        "writer",
        "--pull",
        "never",
        "-v",
        "vol1:/data",
        "bb",
        "sh",
        "-c",
        "echo kept > /data/f; echo rw > /rwfile",
    ]);
    let out = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "-v",
        "vol1:/data:ro",
        "bb",
        "sh",
        "-c",
        "cat /data/f; touch /data/g 2>&1 || true",
    ]);
    assert!(
        out.starts_with("kept\n") && out.contains("Read-only file system"),
        "{out}"
    );

    // system df -v shows the images, the container and the volume.
    let df = d.ok(&["system", "df", "-v"]);
    for needle in ["bb ", "three", "writer", "vol1"] {
        assert!(df.contains(needle), "system df -v lacks {needle:?}:\n{df}");
    }

    // A detached container stops with SIGTERM; logs keep its output.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "svc",
        "--pull",
        "never",
        "bb",
        "sh",
        "-c",
        "trap 'echo bye; exit 7' TERM; echo up; while true; do sleep 0.1; done",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.ok(&["logs", "svc"]).contains("up") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    d.ok(&["stop", "svc"]);
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.ExitCode}}", "svc"])
            .trim(),
        "7"
    );
    assert_eq!(d.ok(&["logs", "svc"]), "up\nbye\n");

    // A restarted daemon lists every container with its true state.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "long",
        "--stop-timeout",
        "1",
        "--pull",
        "never",
        "bb",
        "sleep",
        "1000",
    ]);
    d.stop();
    d.spawn();
    let ps = d.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    for line in ["writer exited", "svc exited", "long exited"] {
        assert!(ps.contains(line), "after restart, ps lacks {line:?}:\n{ps}");
    }
    assert_eq!(d.ok(&["start", "-a", "writer"]), "");
    d.ok(&["rm", "writer", "svc", "long"]);
    d.ok(&["volume", "rm", "vol1"]);
    d.ok(&["rmi", "three"]);
    let images = d.ok(&["images", "--format", "{{.Repository}}"]);
    assert_eq!(images.trim(), "bb");
}

#[test]
fn overlay2_docker_cli_lifecycle() {
    run_lifecycle("overlay2");
}

#[test]
fn vfs_docker_cli_lifecycle() {
    run_lifecycle("vfs");
}

#[test]
fn btrfs_docker_cli_lifecycle() {
    run_lifecycle("btrfs");
}

#[test]
fn fuse_overlay_docker_cli_lifecycle() {
    run_lifecycle("fuse-overlay");
}

#[test]
fn bad_requests_get_docker_errors() {
    let d = Daemon::start(Some("vfs"));
    d.ok(&["load", "-i", fixtures().join("bb.tar").to_str().unwrap()]);
    let out = d.docker(&["run", "--rm", "--pull", "never", "nosuchimage"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such image"));
    let out = d.docker(&["volume", "create", "../x"]);
    assert!(!out.status.success());
    let out = d.docker(&["rm", "nosuchcontainer"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such container"));
    let out = d.docker(&["run", "--pull", "never", "--name", "../x", "bb", "true"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid container name"));
    let out = d.docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "-v",
        "relative:dir",
        "bb",
        "true",
    ]);
    assert!(!out.status.success());
    // Nothing half-made is left behind by the refused requests.
    assert_eq!(d.ok(&["ps", "-aq"]), "");
    assert_eq!(d.ok(&["volume", "ls", "-q"]), "");
}

/// Steps after FROM, as (instruction template, changed variant).
const BUILD_STEPS: [(&str, &str); 5] = [
    ("RUN echo one > /one", "RUN echo uno > /one"),
    ("COPY f.txt /f.txt", "COPY g.txt /f.txt"),
    ("ENV X=1", "ENV X=2"),
    ("RUN echo $X > /x", "RUN echo changed-$X > /x"),
    ("CMD [\"cat\", \"/f.txt\"]", "CMD [\"cat\", \"/x\"]"),
];

fn write_context(dir: &Path, changed: Option<usize>) {
    std::fs::write(dir.join("f.txt"), "file f\n").unwrap();
    std::fs::write(dir.join("g.txt"), "file g\n").unwrap();
    let mut text = String::from("FROM bb:latest\n");
    for (i, (normal, variant)) in BUILD_STEPS.iter().enumerate() {
        text.push_str(if changed == Some(i) { variant } else { normal });
        text.push('\n');
    }
    std::fs::write(dir.join("Dockerfile"), text).unwrap();
}

/// Which of the steps after FROM came from the cache, in order.
fn cached_steps(output: &str) -> Vec<bool> {
    let mut cached = Vec::new();
    for block in output.split("Step ").skip(2) {
        cached.push(block.contains("Using cache"));
    }
    cached
}

fn build_cache_rule(driver: &'static str) {
    let d = Daemon::start(Some(driver));
    d.ok(&["load", "-i", fixtures().join("bb.tar").to_str().unwrap()]);
    let ctx = tempfile::tempdir().unwrap();
    write_context(ctx.path(), None);
    let first = d.ok(&["build", "-t", "cached", ctx.path().to_str().unwrap()]);
    assert_eq!(cached_steps(&first), vec![false; 5], "{first}");
    let again = d.ok(&["build", "-t", "cached", ctx.path().to_str().unwrap()]);
    assert_eq!(cached_steps(&again), vec![true; 5], "{again}");
    for changed in 0..BUILD_STEPS.len() {
        write_context(ctx.path(), Some(changed));
        let out = d.ok(&["build", "-t", "variant", ctx.path().to_str().unwrap()]);
        let want: Vec<bool> = (0..BUILD_STEPS.len()).map(|i| i < changed).collect();
        assert_eq!(
            cached_steps(&out),
            want,
            "changing step {} of 5:\n{out}",
            changed + 1
        );
    }
    write_context(ctx.path(), None);
    let nocache = d.ok(&[
        "build",
        "--no-cache",
        "-t",
        "cached",
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(cached_steps(&nocache), vec![false; 5], "{nocache}");
    assert_eq!(
        d.ok(&["run", "--rm", "--pull", "never", "cached"]),
        "file f\n"
    );
    let x = d.ok(&[
        "run", "--rm", "--pull", "never", "cached", "cat", "/x", "/one",
    ]);
    assert_eq!(x, "1\none\n");
}

#[test]
fn vfs_build_cache_reuses_up_to_the_first_changed_step() {
    build_cache_rule("vfs");
}

#[test]
fn overlay2_build_cache_reuses_up_to_the_first_changed_step() {
    build_cache_rule("overlay2");
}

/// GET on the daemon's API, without any client library: the response body as JSON.
fn api_get(sock: &Path, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    write!(s, "GET {path} HTTP/1.0\r\nHost: strata\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    let (_, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
    serde_json::from_str(body).expect("a JSON body")
}

fn du_bytes(path: &Path) -> u64 {
    let out = Command::new("du")
        .arg("-sB1")
        .arg(path)
        .output()
        .expect("du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("du prints a number")
}

fn df_totals_match_du(driver: &'static str) {
    let d = Daemon::start(Some(driver));
    load_fixtures(&d);
    for i in 0..10 {
        d.ok(&["volume", "create", &format!("v{i}")]);
    }
    for i in 0..20 {
        d.ok(&[
            "create",
            "--pull",
            "never",
            "-v",
            &format!("v{}:/data", i % 10),
            "bb",
            "true",
        ]);
    }
    d.ok(&[
        "run",
        "--pull",
        "never",
        "-v",
        "v1:/data",
        "three",
        "sh",
        "-c",
        "head -c 1000000 /dev/urandom > /data/x; head -c 300000 /dev/urandom > /y; echo logged",
    ]);
    // Sizes of stopped containers are measured in the background right after they stop.
    std::thread::sleep(Duration::from_millis(500));
    let df = api_get(&d.sock(), "/system/df");
    let sum = |key: &str, f: &dyn Fn(&serde_json::Value) -> i64| -> i64 {
        df[key]
            .as_array()
            .map(|a| a.iter().map(f).sum())
            .unwrap_or(0)
    };
    let total = df["LayersSize"].as_i64().unwrap()
        + sum("Containers", &|c| c["SizeRw"].as_i64().unwrap_or(0))
        + sum("Volumes", &|v| v["UsageData"]["Size"].as_i64().unwrap_or(0));
    let du = du_bytes(&d.data_root()) as i64;
    let off = (du - total).abs() as f64 / du as f64;
    assert!(
        off < 0.02,
        "{driver}: system df adds up to {total} bytes, du says {du} ({:.1}% apart)\n{df:#}",
        off * 100.0
    );
}

#[test]
fn overlay2_df_totals_match_du() {
    df_totals_match_du("overlay2");
}

#[test]
fn vfs_df_totals_match_du() {
    df_totals_match_du("vfs");
}

/// Serves `pvfs` (the vfs driver as a graphdriver plugin) and `pvol` (the local volume driver
/// as a volume plugin) on sockets in `dir`, from a runtime of their own.
fn serve_plugins(dir: &Path) -> tokio::runtime::Runtime {
    use std::sync::Arc;
    use strata_plugin::{serve_at, GraphFactory, PluginServer};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let factory: GraphFactory = Arc::new(|home: PathBuf, _opts| {
        Box::pin(async move {
            strata_vfs::init(strata_core::registry::DriverConfig {
                root: home,
                options: Default::default(),
            })
            .await
        })
    });
    let graph_sock = dir.join("pvfs.sock");
    rt.spawn(async move {
        let _ = serve_at(Arc::new(PluginServer::graph_driver(factory)), &graph_sock).await;
    });
    let vol_sock = dir.join("pvol.sock");
    let vol_root = dir.join("pvol-data");
    rt.spawn(async move {
        let local = strata_core::volume::local::LocalVolumes::new(vol_root)
            .await
            .unwrap();
        let _ = serve_at(
            Arc::new(PluginServer::volume_driver(Arc::new(local))),
            &vol_sock,
        )
        .await;
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(dir.join("pvfs.sock").exists() && dir.join("pvol.sock").exists()) {
        assert!(Instant::now() < deadline, "plugins did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt
}

#[test]
fn plugin_drivers_work_through_the_daemon() {
    let plugins = tempfile::tempdir().unwrap();
    let rt = serve_plugins(plugins.path());
    let dirs = vec![
        "--plugin-socket-dir".to_string(),
        plugins.path().display().to_string(),
        "--plugin-spec-dir".to_string(),
        plugins.path().join("specs").display().to_string(),
    ];
    {
        let d = Daemon::start_with(Some("pvfs"), &dirs);
        assert_eq!(d.ok(&["info", "--format", "{{.Driver}}"]).trim(), "pvfs");
        let volume_plugins = d.ok(&["info", "--format", "{{json .Plugins.Volume}}"]);
        assert!(volume_plugins.contains("pvol"), "{volume_plugins}");
        load_fixtures(&d);
        let out = d.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "three",
            "cat",
            "/data/layer3.txt",
        ]);
        assert_eq!(out, "layer3\n");
        d.ok(&["volume", "create", "-d", "pvol", "pv1"]);
        d.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--mount",
            "type=volume,source=pv1,target=/data,volume-driver=pvol",
            "bb",
            "sh",
            "-c",
            "echo kept > /data/f",
        ]);
        let out = d.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "-v",
            "pv1:/data",
            "bb",
            "cat",
            "/data/f",
        ]);
        assert_eq!(out, "kept\n");
        assert!(d.ok(&["volume", "ls"]).contains("pvol"));
        d.ok(&["volume", "rm", "pv1"]);
        // A plugin that does not exist is a clear error, and the daemon goes on serving.
        let out = d.docker(&["volume", "create", "-d", "nosuchplugin", "x1"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchplugin"));
        d.ok(&["ps", "-a"]);
    }
    rt.shutdown_background();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tcp_needs_tls_off_loopback_and_tls_verifies_clients() {
    // Plain TCP on a non-loopback address is refused before anything is served.
    let t = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_stratad"))
        .args(["--data-root", t.path().join("root").to_str().unwrap()])
        .args(["--pidfile", t.path().join("pid").to_str().unwrap()])
        .args(["-H", &format!("tcp://0.0.0.0:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tlsverify"),
        "{out:?}"
    );

    let certs = tempfile::tempdir().unwrap();
    strata_core::testing::make_test_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let port = free_port();
    let d = Daemon::start_with(
        Some("vfs"),
        &[
            "-H".into(),
            format!("tcp://127.0.0.1:{port}"),
            "--tlsverify".into(),
            "--tlscacert".into(),
            c("ca.pem"),
            "--tlscert".into(),
            c("server.pem"),
            "--tlskey".into(),
            c("server-key.pem"),
        ],
    );
    let tls_docker = |cert: &str, key: &str| {
        Command::new("docker")
            .args([
                "--tlsverify",
                "--tlscacert",
                &c("ca.pem"),
                "--tlscert",
                &c(cert),
                "--tlskey",
                &c(key),
            ])
            .args([
                "-H",
                &format!("tcp://127.0.0.1:{port}"),
                "version",
                "--format",
                "{{.Server.Os}}",
            ])
            .output()
            .unwrap()
    };
    let ok = tls_docker("client.pem", "client-key.pem");
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout).trim(),
        "linux",
        "{ok:?}\n{}",
        d.log()
    );
    // A certificate the CA did not sign (the server's own, used as a client's) is refused.
    let stranger = tempfile::tempdir().unwrap();
    strata_core::testing::make_test_certs(stranger.path());
    let out = Command::new("docker")
        .args(["--tlsverify", "--tlscacert", &c("ca.pem")])
        .args([
            "--tlscert",
            &stranger.path().join("client.pem").display().to_string(),
        ])
        .args([
            "--tlskey",
            &stranger.path().join("client-key.pem").display().to_string(),
        ])
        .args([
            "-H",
            &format!("tcp://127.0.0.1:{port}"),
            "version",
            "--format",
            "{{.Server.Os}}",
        ])
        .output()
        .unwrap();
    assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "linux");
    // The unix socket keeps working alongside.
    d.ok(&["info", "--format", "{{.Driver}}"]);
}

#[test]
fn btrfs_build_cache_reuses_up_to_the_first_changed_step() {
    build_cache_rule("btrfs");
}

#[test]
fn fuse_overlay_build_cache_reuses_up_to_the_first_changed_step() {
    build_cache_rule("fuse-overlay");
}

fn mounts_under(path: &Path) -> Vec<String> {
    strata_core::fsutil::mounts::mounts_under(path)
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point.display().to_string())
        .filter(|m| Path::new(m) != path)
        .collect()
}

/// SIGKILL the daemon with a container running and a load half done; the next daemon must
/// show every container with its true state, leave no mount of the old one behind, and show
/// no half-loaded image.
fn crash_leaves_nothing_behind(driver: &'static str) {
    let mut d = Daemon::start(Some(driver));
    load_fixtures(&d);
    d.ok(&[
        "run", "-d", "--name", "running", "--pull", "never", "-v", "cv:/data", "bb", "sleep",
        "1000",
    ]);
    // A load that is cut off: half of an archive, streamed in while the daemon dies.
    let archive = std::fs::read(fixtures().join("three.tar")).unwrap();
    let half = d.dir.path().join("half.tar");
    std::fs::write(&half, &archive[..archive.len() / 2]).unwrap();
    let mut loader = Command::new("docker")
        .arg("-H")
        .arg(format!("unix://{}", d.sock().display()))
        .args(["load", "-i", half.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    d.kill();
    let _ = loader.wait();
    d.spawn();
    let ps = d.ok(&["ps", "-a", "--format", "{{.Names}} {{.State}}"]);
    assert!(ps.contains("running exited"), "{ps}");
    let data_root = d.data_root();
    assert_eq!(
        mounts_under(&data_root),
        Vec::<String>::new(),
        "mounts left after restart"
    );
    let images = d.ok(&["images", "--format", "{{.Repository}}"]);
    let mut names: Vec<&str> = images.lines().collect();
    names.sort();
    assert_eq!(names, vec!["bb", "three"], "only complete images");
    // Everything still works, and removing it all leaves no layer of the old daemon.
    d.ok(&["start", "running"]);
    d.ok(&["stop", "-t", "1", "running"]);
    d.ok(&["rm", "running"]);
    d.ok(&["volume", "rm", "cv"]);
    assert_eq!(
        d.ok(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "three",
            "cat",
            "/data/layer3.txt"
        ]),
        "layer3\n"
    );
    assert_eq!(mounts_under(&data_root), Vec::<String>::new());
}

#[test]
fn overlay2_crash_leaves_nothing_behind() {
    crash_leaves_nothing_behind("overlay2");
}

#[test]
fn fuse_overlay_crash_leaves_nothing_behind() {
    crash_leaves_nothing_behind("fuse-overlay");
}

#[test]
fn vfs_crash_leaves_nothing_behind() {
    crash_leaves_nothing_behind("vfs");
}
