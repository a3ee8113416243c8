//! What a daemon restarted after a crash does with the records it finds (issue 19): it never
//! signals a process by a bare recorded pid, and a record it cannot load is moved aside, not
//! deleted. Each test SIGKILLs its own `stratad`, edits the data root as a crash, a reboot or
//! a damaged disk would leave it, and starts the daemon again.

#[path = "common/stratad.rs"]
mod stratad;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use stratad::Stratad;

fn record_path(d: &Stratad, id: &str) -> PathBuf {
    d.data_root()
        .join("containers")
        .join(id)
        .join("config.v2.json")
}

fn run_detached(d: &Stratad, name: &str) -> String {
    d.ok(&[
        "run", "-d", "--name", name, "--pull", "never", "bb", "sleep", "1000",
    ])
    .trim()
    .to_string()
}

/// Guards against signalling whatever process now has a recorded pid. The daemon dies with a
/// container running; the container's process goes too, and its pid is then recorded as an
/// unrelated process's (as after a reboot or pid reuse). The restarted daemon must mark the
/// container exited and leave that process alone. On 3af0184 recovery SIGKILLed the pid.
#[test]
fn recovery_never_kills_a_process_that_only_shares_the_pid() {
    let mut d = Stratad::start(Some("vfs"));
    d.load_busybox();
    let id = run_detached(&d, "victim");
    d.kill();
    let path = record_path(&d, &id);
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let old_pid = rec["state"]["pid"].as_i64().unwrap() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old_pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let mut bystander = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = bystander.id() as i64;
    rec["state"]["pid"] = pid.into();
    if rec["state"]["process"].is_object() {
        rec["state"]["process"]["pid"] = pid.into();
    }
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();

    d.spawn();
    let state = d.ok(&["inspect", "-f", "{{.State.Status}}", "victim"]);
    let alive = bystander.try_wait().unwrap().is_none();
    let _ = bystander.kill();
    let _ = bystander.wait();
    assert_eq!(state.trim(), "exited");
    assert!(
        alive,
        "the restarted daemon killed an unrelated process by its pid"
    );
}

/// The one recovery path the daemon runs: a container left running by a daemon that died is
/// killed (its whole cgroup, since its recorded process is still the one started) and recorded
/// as exited with 255, as Docker records a container it could not restore.
#[test]
fn a_container_left_running_is_killed_and_recorded_255() {
    let mut d = Stratad::start(Some("vfs"));
    d.load_busybox();
    let id = run_detached(&d, "left");
    let rec: Value = serde_json::from_slice(&std::fs::read(record_path(&d, &id)).unwrap()).unwrap();
    let pid = rec["state"]["pid"].as_i64().unwrap() as i32;
    d.kill();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container should outlive the daemon's crash"
    );
    d.spawn();
    let state = d.ok(&[
        "inspect",
        "-f",
        "{{.State.Status}} {{.State.ExitCode}}",
        "left",
    ]);
    assert_eq!(state.trim(), "exited 255");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the leftover container process {pid} is still running"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Guards against deleting what the daemon cannot read. A container whose record is damaged
/// is moved to `containers/.quarantine/` with a log line, the daemon starts and serves the
/// rest. On 3af0184 the directory was deleted.
#[test]
fn a_record_that_cannot_be_loaded_is_quarantined() {
    let mut d = Stratad::start(Some("vfs"));
    d.load_busybox();
    d.ok(&["create", "--name", "kept", "--pull", "never", "bb", "true"]);
    let damaged = d.ok(&[
        "create", "--name", "damaged", "--pull", "never", "bb", "true",
    ]);
    let damaged = damaged.trim().to_string();
    d.stop();
    std::fs::write(record_path(&d, &damaged), b"{ not json").unwrap();

    d.spawn();
    let names = d.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(names.trim(), "kept");
    let aside = d
        .data_root()
        .join("containers/.quarantine")
        .join(&damaged)
        .join("config.v2.json");
    assert_eq!(std::fs::read(&aside).unwrap(), b"{ not json");
    assert!(d.log().contains("container not loaded"), "{}", d.log());
}

/// Guards the all-or-nothing start: when the record of a started container cannot be
/// written (here its file is made immutable, so the rename over it fails), the start fails,
/// the process is gone and the container is not running. Before, the error was only logged
/// and the container ran with a record that said it did not.
#[test]
fn a_start_whose_record_cannot_be_written_is_undone() {
    let d = Stratad::start(Some("vfs"));
    d.load_busybox();
    let id = d
        .ok(&["create", "--name", "unrecorded", "bb", "sleep", "300"])
        .trim()
        .to_string();
    let record = record_path(&d, &id);
    let chattr = |flag: &str| {
        let ok = Command::new("chattr")
            .arg(flag)
            .arg(&record)
            .status()
            .expect("chattr (e2fsprogs)")
            .success();
        assert!(ok, "chattr {flag} {}", record.display());
    };
    chattr("+i");
    let out = d.docker(&["start", "unrecorded"]);
    chattr("-i");
    assert!(
        !out.status.success(),
        "the start succeeded without its record"
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        err.contains("config.v2.json") || err.contains("rename"),
        "{err}"
    );
    let state = d.ok(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Pid}}",
        "unrecorded",
    ]);
    assert_eq!(state.trim(), "false 0");
    let leftover = Command::new("pgrep")
        .args(["-f", "sleep 300"])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&leftover.stdout).into_owned();
    for pid in pids.split_whitespace() {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        assert!(
            !cg.contains(&id),
            "the container's process {pid} still runs"
        );
    }
}
