//! `docker exec` against `stratad`: the stock CLI (`exec`, `-i`, `-t`, `-d`, `-e`, `-w`, `-u`,
//! `--privileged`) and the Engine API (create, start attached and detached, resize with a
//! tty, inspect). Each test starts its own daemon (stopped on drop, also on failure).
//!
//! These guard a feature that did not exist before: on HEAD a89d5c7 every exec route answered
//! 501 "Strata does not support exec (not implemented yet)", and each test here failed there
//! (checked with `STRATAD_BIN` pointing at a build of a89d5c7).

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[path = "common/stratad.rs"]
mod stratad;

use serde_json::{json, Value};
use stratad::{wait_within, Stratad};

/// A daemon with busybox loaded and a container `ctr` running `sleep 1000`.
fn daemon_with_container(extra: &[&str]) -> Stratad {
    let d = Stratad::start(None);
    d.load_busybox();
    let mut args = vec!["run", "-d", "--name", "ctr", "--pull", "never"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["bb", "sleep", "1000"]);
    d.ok(&args);
    d
}

/// One HTTP/1.0 request on the daemon's socket: (status, body).
fn api(sock: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: strata\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP reply");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// `POST /containers/ctr/exec`; the new exec's id.
fn exec_create(d: &Stratad, config: Value) -> String {
    let (status, body) = api(
        &d.sock(),
        "POST",
        "/v1.41/containers/ctr/exec",
        Some(&config),
    );
    assert_eq!(status, 201, "{body}");
    json_of(&body)["Id"].as_str().unwrap().to_string()
}

fn exec_inspect(d: &Stratad, id: &str) -> Value {
    let (status, body) = api(&d.sock(), "GET", &format!("/v1.41/exec/{id}/json"), None);
    assert_eq!(status, 200, "{body}");
    json_of(&body)
}

/// Polls exec inspect until the process has exited.
fn wait_exec_exit(d: &Stratad, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = exec_inspect(d, id);
        if v["Running"] == json!(false) && !v["ExitCode"].is_null() {
            return v;
        }
        assert!(Instant::now() < deadline, "exec {id} still running: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn container_pid(d: &Stratad) -> i32 {
    d.ok(&["inspect", "-f", "{{.State.Pid}}", "ctr"])
        .trim()
        .parse()
        .unwrap()
}

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

#[test]
fn exec_output_exit_codes_env_workdir_user_and_stdin() {
    let d = daemon_with_container(&["-e", "FROM_CTR=1"]);
    assert_eq!(d.ok(&["exec", "ctr", "echo", "hi"]), "hi\n");
    let out = d.docker(&["exec", "ctr", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // The exec's env over the container's, over Docker's defaults.
    let env = d.ok(&[
        "exec",
        "-e",
        "FOO=bar",
        "ctr",
        "sh",
        "-c",
        "echo $FOO $FROM_CTR $HOME $PATH",
    ]);
    assert_eq!(
        env,
        "bar 1 /root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    );
    assert_eq!(d.ok(&["exec", "-w", "/tmp", "ctr", "pwd"]), "/tmp\n");
    assert_eq!(
        d.ok(&["exec", "-u", "1000:1001", "ctr", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(
        d.ok(&["exec", "-u", "1000:1001", "ctr", "id", "-g"]),
        "1001\n"
    );
    assert_eq!(
        d.ok(&["exec", "-u", "nobody", "ctr", "id", "-un"]),
        "nobody\n"
    );
    // A command that does not exist: Docker's 126 and its message.
    let missing = d.docker(&["exec", "ctr", "nosuchcmd"]);
    assert_eq!(missing.status.code(), Some(126));
    let text = String::from_utf8_lossy(&missing.stdout).into_owned()
        + &String::from_utf8_lossy(&missing.stderr);
    assert!(text.contains("executable file not found"), "{text}");
    // A working directory that does not exist fails the start, as runc.
    assert_eq!(
        d.docker(&["exec", "-w", "/nonexistent", "ctr", "true"])
            .status
            .code(),
        Some(126)
    );

    // `echo hi | docker exec -i c cat`: stdin reaches the process and its EOF too.
    let mut child = d
        .command(&["exec", "-i", "ctr", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = wait_within(child, Duration::from_secs(30)).expect("cat ends at EOF");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
}

#[test]
fn exec_detached_is_inspected_until_it_exits_and_forgotten_at_stop() {
    let d = daemon_with_container(&[]);
    let id = exec_create(
        &d,
        json!({"Cmd": ["sh", "-c", "sleep 1; exit 7"], "AttachStdout": false}),
    );
    let before = exec_inspect(&d, &id);
    assert_eq!(before["Running"], json!(false));
    assert!(before["ExitCode"].is_null(), "{before}");
    let (status, body) = api(
        &d.sock(),
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        Some(&json!({"Detach": true, "Tty": false})),
    );
    assert_eq!(status, 200, "{body}");
    let running = exec_inspect(&d, &id);
    assert_eq!(running["Running"], json!(true), "{running}");
    assert!(running["ExitCode"].is_null(), "{running}");
    assert!(running["Pid"].as_i64().unwrap() > 0);
    assert_eq!(running["ProcessConfig"]["entrypoint"], json!("sh"));
    let ids = d.ok(&["inspect", "-f", "{{json .ExecIDs}}", "ctr"]);
    assert!(ids.contains(&id), "{ids}");

    let done = wait_exec_exit(&d, &id);
    assert_eq!(done["ExitCode"], json!(7), "{done}");
    // Exited: still inspectable, no longer in the container's ExecIDs (as Docker).
    let ids = d.ok(&["inspect", "-f", "{{json .ExecIDs}}", "ctr"]);
    assert!(!ids.contains(&id), "{ids}");
    // Started once only.
    let (again, _) = api(
        &d.sock(),
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        Some(&json!({"Detach": true})),
    );
    assert_eq!(again, 409);

    // `docker exec -d` through the CLI: the process runs on after the CLI returned.
    d.ok(&["exec", "-d", "ctr", "sh", "-c", "echo detached > /tmp/d"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.ok(&["exec", "ctr", "cat", "/tmp/d"]) != "detached\n" {
        assert!(Instant::now() < deadline, "the detached exec never wrote");
        std::thread::sleep(Duration::from_millis(100));
    }

    d.ok(&["stop", "-t", "1", "ctr"]);
    let (status, body) = api(&d.sock(), "GET", &format!("/v1.41/exec/{id}/json"), None);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such exec instance"), "{body}");
    assert_eq!(
        d.ok(&["inspect", "-f", "{{json .ExecIDs}}", "ctr"]).trim(),
        "null"
    );
}

#[test]
fn exec_into_a_stopped_or_paused_container_is_a_conflict() {
    let d = Stratad::start(None);
    d.load_busybox();
    d.ok(&[
        "create", "--name", "ctr", "--pull", "never", "bb", "sleep", "1000",
    ]);
    let (status, body) = api(
        &d.sock(),
        "POST",
        "/v1.41/containers/ctr/exec",
        Some(&json!({"Cmd": ["true"]})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("is not running"), "{body}");
    let err = d.fails(&["exec", "ctr", "true"]);
    assert!(err.contains("is not running"), "{err}");

    d.ok(&["start", "ctr"]);
    d.ok(&["pause", "ctr"]);
    let (status, body) = api(
        &d.sock(),
        "POST",
        "/v1.41/containers/ctr/exec",
        Some(&json!({"Cmd": ["true"]})),
    );
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("is paused, unpause the container before exec"),
        "{body}"
    );
    d.ok(&["unpause", "ctr"]);
    assert_eq!(d.ok(&["exec", "ctr", "echo", "ok"]), "ok\n");
}

#[test]
fn exec_joins_the_containers_namespaces_cgroup_and_confinement() {
    let d = daemon_with_container(&[]);
    let pid1 = container_pid(&d);
    // pid namespace: the container's command is PID 1 for the exec'd ps.
    let ps = d.ok(&["exec", "ctr", "ps", "-o", "pid,args"]);
    let first = ps.lines().nth(1).unwrap_or_default();
    assert_eq!(
        first.split_whitespace().collect::<Vec<_>>(),
        ["1", "sleep", "1000"],
        "{ps}"
    );
    assert_eq!(
        d.ok(&["exec", "ctr", "hostname"]),
        d.ok(&["exec", "ctr", "cat", "/etc/hostname"])
    );

    // A long-running exec, looked at from the host: same namespaces and cgroups as PID 1.
    let id = exec_create(&d, json!({"Cmd": ["sleep", "1000"]}));
    let (status, _) = api(
        &d.sock(),
        "POST",
        &format!("/v1.41/exec/{id}/start"),
        Some(&json!({"Detach": true})),
    );
    assert_eq!(status, 200);
    let pid = exec_inspect(&d, &id)["Pid"].as_i64().unwrap() as i32;
    for ns in ["mnt", "pid", "uts", "ipc", "net", "cgroup"] {
        let link = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/{ns}")).unwrap();
        assert_eq!(link(pid), link(pid1), "{ns} namespace");
    }
    let cgroups = |p: i32| std::fs::read_to_string(format!("/proc/{p}/cgroup")).unwrap();
    assert_eq!(cgroups(pid), cgroups(pid1));
    // Its capabilities, seccomp and no_new_privs are the container's.
    for field in ["CapEff:", "CapBnd:", "CapPrm:", "Seccomp:", "NoNewPrivs:"] {
        assert_eq!(
            status_field(pid, field),
            status_field(pid1, field),
            "{field}"
        );
    }
    assert_eq!(status_field(pid, "Seccomp:"), "2");
    assert_eq!(
        d.ok(&["exec", "ctr", "grep", "CapEff", "/proc/self/status"]),
        d.ok(&["exec", "ctr", "grep", "CapEff", "/proc/1/status"])
    );

    // `--privileged` on an unprivileged container: every capability, as Docker; the
    // container's seccomp filter stays.
    let privileged = d.ok(&[
        "exec",
        "--privileged",
        "ctr",
        "grep",
        "-E",
        "CapEff|Seccomp:",
        "/proc/self/status",
    ]);
    let cap_eff = privileged
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    let cap_sys_admin = 1u64 << 21;
    assert!(cap_eff & cap_sys_admin != 0, "{privileged}");
    assert!(privileged.contains("Seccomp:\t2"), "{privileged}");
    assert_eq!(status_field(pid1, "CapEff:"), "00000000a80425fb");
}

#[test]
fn exec_with_a_tty_through_the_api_and_the_cli() {
    let d = daemon_with_container(&[]);
    assert!(d.ok(&["exec", "-t", "ctr", "tty"]).starts_with("/dev/pts/"));

    let id = exec_create(
        &d,
        json!({
            "Cmd": ["sh", "-c", "tty; sleep 1; stty size"],
            "Tty": true, "AttachStdout": true, "AttachStderr": true,
        }),
    );
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = json!({"Detach": false, "Tty": true}).to_string();
    write!(
        s,
        "POST /v1.41/exec/{id}/start HTTP/1.1\r\nHost: strata\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let (status, _) = api(
        &d.sock(),
        "POST",
        &format!("/v1.41/exec/{id}/resize?h=40&w=100"),
        None,
    );
    assert_eq!(status, 200);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.starts_with("HTTP/1.1 101"), "{text}");
    let (_, stream) = text.split_once("\r\n\r\n").unwrap();
    // Raw, no frame headers: the terminal's output as it is.
    assert!(stream.starts_with("/dev/pts/"), "{stream:?}");
    assert!(stream.ends_with("40 100\r\n"), "{stream:?}");
    assert_eq!(wait_exec_exit(&d, &id)["ExitCode"], json!(0));

    // ctrl-p ctrl-q on a tty's stdin detach the client; the process runs on.
    let id = exec_create(
        &d,
        json!({"Cmd": ["sleep", "1000"], "Tty": true, "AttachStdin": true, "AttachStdout": true}),
    );
    let mut s = start_attached(&d, &id, true);
    s.write_all(&[16, 17]).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .expect("the daemon closes the connection");
    let after = exec_inspect(&d, &id);
    assert_eq!(after["Running"], json!(true), "{after}");
    let (status, body) = api(
        &d.sock(),
        "POST",
        "/v1.41/containers/ctr/exec",
        Some(&json!({"Cmd": ["true"], "DetachKeys": "ctrl-1"})),
    );
    assert_eq!(status, 400, "{body}");
}

/// Starts an exec attached (a 101 hijack); the connection, past the response head.
fn start_attached(d: &Stratad, id: &str, tty: bool) -> std::os::unix::net::UnixStream {
    let mut s = std::os::unix::net::UnixStream::connect(d.sock()).unwrap();
    let body = json!({"Detach": false, "Tty": tty}).to_string();
    write!(
        s,
        "POST /v1.41/exec/{id}/start HTTP/1.1\r\nHost: strata\r\nConnection: Upgrade\r\nUpgrade: tcp\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}
