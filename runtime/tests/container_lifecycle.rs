//! Exit codes, signals, stop, init, logs, tty and stdin (needs root).

mod common;

use std::time::{Duration, Instant};

use common::{logs, run, start, start_err, Sandbox};
use futures::StreamExt;
use nix::sys::signal::Signal;
use strata_runtime::container::logs::{read_logs, LogReadOptions};
use strata_runtime::container::{self, StartError, StreamKind};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn exit_codes_zero_and_three_are_reported() {
    let sb = Sandbox::new();
    let (status, _, _) = run(&sb, sb.spec(&["true"])).await;
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (0, None, false)
    );

    let sb = Sandbox::new();
    let (status, _, _) = run(&sb, sb.sh("exit 3")).await;
    assert_eq!(
        (status.code, status.signal, status.oom_killed),
        (3, None, false)
    );
    // The daemon's record is the one state file: the container library writes none.
    assert!(!sb.dir.join("state.json").exists());
}

#[tokio::test]
async fn a_missing_command_is_127_and_a_non_executable_one_126() {
    let sb = Sandbox::new();
    match start_err(sb.spec(&["no-such-command"])).await {
        StartError::Exec { exit_code, message } => {
            assert_eq!(exit_code, 127);
            assert_eq!(
                message,
                "exec: \"no-such-command\": executable file not found in $PATH"
            );
        }
        other => panic!("{other}"),
    }
    assert!(sb.cgroup_removed());

    // With --init the command is exec'd by init's child; the error still comes back.
    let sb = Sandbox::new();
    let mut spec = sb.spec(&["no-such-command"]);
    spec.init = true;
    match start_err(spec).await {
        StartError::Exec { exit_code, .. } => assert_eq!(exit_code, 127),
        other => panic!("{other}"),
    }
    assert!(sb.cgroup_removed());

    let sb = Sandbox::new();
    match start_err(sb.spec(&["/etc/passwd"])).await {
        StartError::Exec { exit_code, message } => {
            assert_eq!(exit_code, 126);
            assert!(message.contains("permission denied"), "{message}");
        }
        other => panic!("{other}"),
    }
    assert!(sb.cgroup_removed());
}

#[tokio::test]
async fn kill_gives_137_and_stop_delivers_sigterm_first() {
    let sb = Sandbox::new();
    let c = start(sb.spec(&["sleep", "100"])).await;
    c.kill(Signal::SIGKILL).unwrap();
    let status = c.wait().await;
    assert_eq!((status.code, status.signal), (137, Some(9)));
    assert!(
        c.kill(Signal::SIGTERM).is_err(),
        "kill after exit must be refused"
    );
    assert!(sb.cgroup_removed());

    // A PID 1 that handles SIGTERM exits with its own code, well before the grace period.
    let sb = Sandbox::new();
    let c = start(
        sb.sh("trap 'echo got-term; exit 42' TERM; echo ready; while true; do sleep 0.1; done"),
    )
    .await;
    wait_for_log(&sb, "ready").await;
    let t = Instant::now();
    let status = c.stop(Signal::SIGTERM, Duration::from_secs(20)).await;
    assert_eq!(status.code, 42);
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(logs(&sb.log_path()).await.0, "ready\ngot-term\n");

    // PID 1 without a handler ignores SIGTERM (kernel rule for namespace init): SIGKILL follows.
    let sb = Sandbox::new();
    let c = start(sb.spec(&["sleep", "100"])).await;
    let t = Instant::now();
    let status = c.stop(Signal::SIGTERM, Duration::from_millis(500)).await;
    assert_eq!(status.code, 137);
    assert!(t.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn init_forwards_signals_and_reaps_orphans() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("(sleep 0.2 &); sleep 1; ps -o pid,stat,comm; echo ready; sleep 100");
    spec.init = true;
    let c = start(spec).await;
    wait_for_log(&sb, "ready").await;
    let status = c.stop(Signal::SIGTERM, Duration::from_secs(20)).await;
    // The forwarded SIGTERM kills sh (not PID 1, so not immune): 128 + 15.
    assert_eq!(status.code, 143);
    let (out, _) = logs(&sb.log_path()).await;
    let ps: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .take_while(|l| *l != "ready")
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(ps[0][0], "1");
    assert_eq!(ps[0][2], "init");
    assert!(
        ps.iter().all(|p| !p[1].starts_with('Z')),
        "a zombie was left: {out}"
    );
    assert!(ps.iter().any(|p| p[2] == "sh" && p[0] != "1"));
}

#[tokio::test]
async fn logs_keep_streams_apart_and_follow_until_exit() {
    let sb = Sandbox::new();
    let (status, out, err) = run(
        &sb,
        sb.sh("echo out1; echo err1 >&2; echo out2; printf partial"),
    )
    .await;
    assert_eq!(status.code, 0);
    assert_eq!(out, "out1\nout2\npartial");
    assert_eq!(err, "err1\n");
    let raw = std::fs::read_to_string(sb.log_path()).unwrap();
    let first: serde_json::Value = serde_json::from_str(raw.lines().next().unwrap()).unwrap();
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
    assert!(["out1\n", "err1\n"].contains(&first["log"].as_str().unwrap()));
    let tail: Vec<_> = read_logs(
        sb.log_path(),
        LogReadOptions {
            tail: Some(1),
            stderr: false,
            ..Default::default()
        },
        None,
    )
    .map(|e| e.unwrap().log)
    .collect()
    .await;
    assert_eq!(tail, ["partial"]);

    let sb = Sandbox::new();
    let c = start(sb.sh("echo a; sleep 1; echo b; exit 5")).await;
    let opts = LogReadOptions {
        follow: true,
        ..Default::default()
    };
    let followed: Vec<_> = tokio::time::timeout(
        Duration::from_secs(30),
        read_logs(sb.log_path(), opts, Some(c.exit_watch()))
            .map(|e| e.unwrap().log)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("follow did not end when the container exited");
    assert_eq!(followed, ["a\n", "b\n"]);
    assert_eq!(c.wait().await.code, 5);
}

#[tokio::test]
async fn attach_subscribers_get_live_output() {
    let sb = Sandbox::new();
    let (tx, mut rx) = container::output_channel();
    let c = container::spawn(sb.sh("echo live; echo oops >&2"), tx)
        .await
        .unwrap();
    let mut got = (String::new(), String::new());
    while got.0 != "live\n" || got.1 != "oops\n" {
        let chunk = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let text = String::from_utf8_lossy(&chunk.data);
        match chunk.stream {
            StreamKind::Stdout => got.0.push_str(&text),
            StreamKind::Stderr => got.1.push_str(&text),
        }
    }
    assert_eq!(c.wait().await.code, 0);
}

#[tokio::test]
async fn tty_gives_a_terminal_with_size_and_resize() {
    let sb = Sandbox::new();
    let mut spec = sb.sh(
        "[ -t 0 ] && [ -t 1 ] && echo is-tty; tty; stty size < /dev/console; echo TERM=$TERM; read line; stty size",
    );
    spec.tty = true;
    spec.stdin = true;
    spec.console_size = Some((24, 80));
    let mut c = start(spec).await;
    wait_for_log(&sb, "TERM=xterm").await;
    c.resize(30, 100).unwrap();
    let mut stdin = c.take_stdin().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
        .await
        .unwrap();
    assert_eq!(status.code, 0);
    let (out, err) = logs(&sb.log_path()).await;
    assert!(err.is_empty(), "a tty has no separate stderr: {err}");
    assert!(out.contains("is-tty\r\n"), "{out:?}");
    // The pty comes from the container's own devpts, as with runc.
    assert!(out.contains("/dev/pts/0\r\n"), "{out:?}");
    assert!(out.contains("24 80\r\n"), "{out:?}");
    assert!(out.contains("30 100\r\n"), "{out:?}");
}

#[tokio::test]
async fn stdin_pipe_reaches_the_process_and_eof_ends_it() {
    let sb = Sandbox::new();
    let mut spec = sb.sh("while read l; do echo got:$l; done; echo eof");
    spec.stdin = true;
    let mut c = start(spec).await;
    let mut stdin = c.take_stdin().unwrap();
    stdin.write_all(b"one\ntwo\n").await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), c.wait())
        .await
        .unwrap();
    assert_eq!(status.code, 0);
    assert_eq!(logs(&sb.log_path()).await.0, "got:one\ngot:two\neof\n");

    // Without -i stdin is /dev/null: read gets EOF at once.
    let sb = Sandbox::new();
    let (status, out, _) = run(&sb, sb.sh("read l || echo no-stdin")).await;
    assert_eq!((status.code, out.as_str()), (0, "no-stdin\n"));
}

/// Polls the log until a line containing `needle` appears.
async fn wait_for_log(sb: &Sandbox, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(sb.log_path()).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} never appeared in the log: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
