//! 200 concurrent mixed API requests against a real `stratad` (tag, untag, rmi, container
//! create and rm, volume create and rm, load of the busybox and three-layer fixtures, commit),
//! then a SIGKILL and a restart: no answer may be a 5xx, a load may not report an error, and
//! the images (ids and tags), containers (ids and names) and volumes after the restart must be
//! exactly those the daemon listed before it.
//!
//! Allowed non-2xx answers, each with a message: 409 for the five creates of one container
//! name (one wins), 404 for the untags of `flip`, which races with tags of `flip` and may find
//! it gone.
//!
//! Guards the metadata writes of the image, volume and container stores. On 3af0184 it failed:
//! concurrent writers of `repositories.json` shared one temporary file name (500s, "rename
//! .../repositories.json: No such file or directory"), the in-memory tags were changed before
//! the file and rolled back over each other's changes (tags listed before the restart were
//! missing after it), and concurrent creates of one container name both succeeded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// One HTTP answer.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
}

#[path = "common/stratad.rs"]
mod stratad;

use stratad::{fixtures, Stratad};

/// A daemon of our own (overlay2) on a fresh data root, spoken to in raw HTTP.
struct Daemon(Stratad);

impl std::ops::Deref for Daemon {
    type Target = Stratad;
    fn deref(&self) -> &Stratad {
        &self.0
    }
}

impl std::ops::DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut Stratad {
        &mut self.0
    }
}

impl Daemon {
    fn start() -> Daemon {
        assert!(nix::unistd::geteuid().is_root(), "stratad needs root");
        Daemon(Stratad::start(Some("overlay2")))
    }

    async fn call(&self, method: &str, path: &str, body: Option<Body>) -> Answer {
        match try_request(&self.sock(), method, path, body).await {
            Ok(a) => a,
            Err(e) => panic!("{method} {path}: {e}\n--- daemon log ---\n{}", self.log()),
        }
    }

    /// A call that must succeed (2xx).
    async fn ok(&self, method: &str, path: &str, body: Option<Body>) -> Answer {
        let a = self.call(method, path, body).await;
        assert!(
            (200..300).contains(&a.status),
            "{method} {path} -> {}: {}",
            a.status,
            a.body
        );
        a
    }
}

#[derive(Clone)]
enum Body {
    Json(Value),
    Tar(std::sync::Arc<Vec<u8>>),
}

/// HTTP/1.1 over the daemon's socket, one connection per request (`Connection: close`).
async fn try_request(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<Body>,
) -> std::io::Result<Answer> {
    // 200 clients at once can fill the listen backlog: a refused connect is retried.
    let mut tries = 0;
    let mut s = loop {
        match UnixStream::connect(sock).await {
            Ok(s) => break s,
            Err(e) if tries < 200 && e.kind() != std::io::ErrorKind::NotFound => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e),
        }
    };
    let (kind, bytes): (&str, Vec<u8>) = match &body {
        None => ("", Vec::new()),
        Some(Body::Json(v)) => (
            "Content-Type: application/json\r\n",
            serde_json::to_vec(v).unwrap(),
        ),
        Some(Body::Tar(t)) => ("Content-Type: application/x-tar\r\n", t.to_vec()),
    };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n{kind}Content-Length: {}\r\n\r\n",
        bytes.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(&bytes).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(Answer { status, body })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Everything that must survive a restart, object for object.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    /// Image id to its sorted `repo:tag`s.
    images: BTreeMap<String, BTreeSet<String>>,
    /// Container id to its name.
    containers: BTreeMap<String, String>,
    volumes: BTreeSet<String>,
}

async fn snapshot(d: &Daemon) -> Snapshot {
    let parse = |a: Answer| -> Value { serde_json::from_str(&a.body).expect("JSON list") };
    let images = parse(d.ok("GET", "/images/json", None).await);
    let containers = parse(d.ok("GET", "/containers/json?all=1", None).await);
    let volumes = parse(d.ok("GET", "/volumes", None).await);
    let strs = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    Snapshot {
        images: images
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["Id"].as_str().unwrap().to_string(), strs(&i["RepoTags"])))
            .collect(),
        containers: containers
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let name = strs(&c["Names"]).into_iter().next().unwrap_or_default();
                (c["Id"].as_str().unwrap().to_string(), name)
            })
            .collect(),
        volumes: volumes["Volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["Name"].as_str().unwrap().to_string())
            .collect(),
    }
}

/// One request of the storm and the answers it may get.
struct Op {
    method: &'static str,
    path: String,
    body: Option<Body>,
    allowed: &'static [u16],
}

fn op(method: &'static str, path: String, body: Option<Body>, allowed: &'static [u16]) -> Op {
    Op {
        method,
        path,
        body,
        allowed,
    }
}

fn container_body() -> Option<Body> {
    Some(Body::Json(json!({"Image": "bb", "Cmd": ["true"]})))
}

/// Objects the storm removes or commits, made beforehand.
async fn prepare(d: &Daemon, bb: &Body, three: &Body) {
    for tar in [bb, three] {
        let a = d.ok("POST", "/images/load", Some(tar.clone())).await;
        assert!(!a.body.contains("\"error\""), "load: {}", a.body);
    }
    for i in 0..20 {
        d.ok("POST", &format!("/images/bb/tag?repo=u{i}"), None)
            .await;
        d.ok(
            "POST",
            &format!("/containers/create?name=c{i}"),
            container_body(),
        )
        .await;
        let v = json!({"Name": format!("v{i}")});
        d.ok("POST", "/volumes/create", Some(Body::Json(v))).await;
    }
    for i in 0..10 {
        d.ok(
            "POST",
            &format!("/containers/create?name=k{i}"),
            container_body(),
        )
        .await;
        // Images to delete: commits of their own containers (new layers over bb's).
        d.ok(
            "POST",
            &format!("/containers/create?name=r{i}"),
            container_body(),
        )
        .await;
        d.ok(
            "POST",
            &format!("/commit?container=r{i}&repo=gone{i}"),
            None,
        )
        .await;
        d.ok("DELETE", &format!("/containers/r{i}"), None).await;
    }
}

/// The 200 requests, in an order that interleaves the kinds.
fn storm(bb: &Body, three: &Body) -> Vec<Op> {
    const OK: &[u16] = &[200, 201, 204];
    let mut ops = Vec::new();
    for i in 0..45 {
        let from = if i % 3 == 0 { "three" } else { "bb" };
        ops.push(op(
            "POST",
            format!("/images/{from}/tag?repo=t{i}"),
            None,
            &[201],
        ));
    }
    for i in 0..10 {
        // One tag moved between two images by concurrent writers.
        let from = if i % 2 == 0 { "three" } else { "bb" };
        ops.push(op(
            "POST",
            format!("/images/{from}/tag?repo=same"),
            None,
            &[201],
        ));
    }
    for i in 0..5 {
        ops.push(op(
            "POST",
            "/images/three/tag?repo=flip".into(),
            None,
            &[201],
        ));
        ops.push(op("DELETE", "/images/flip".into(), None, &[200, 404]));
        let _ = i;
    }
    for i in 0..20 {
        ops.push(op("DELETE", format!("/images/u{i}"), None, &[200]));
        ops.push(op("DELETE", format!("/containers/c{i}"), None, OK));
        let name = format!("/containers/create?name=n{i}");
        ops.push(op("POST", name, container_body(), &[201]));
        let v = Some(Body::Json(json!({"Name": format!("nv{i}")})));
        ops.push(op("POST", "/volumes/create".into(), v, &[201]));
    }
    for i in 0..5 {
        let dup = "/containers/create?name=dup".to_string();
        ops.push(op("POST", dup, container_body(), &[201, 409]));
        let v = Some(Body::Json(json!({"Name": "dupvol"})));
        ops.push(op("POST", "/volumes/create".into(), v, &[201]));
        ops.push(op("POST", "/images/load".into(), Some(bb.clone()), &[200]));
        ops.push(op(
            "POST",
            "/images/load".into(),
            Some(three.clone()),
            &[200],
        ));
        let _ = i;
    }
    for i in 0..10 {
        ops.push(op("DELETE", format!("/images/gone{i}"), None, &[200]));
        let commit = format!("/commit?container=k{i}&repo=committed&tag=c{i}");
        ops.push(op("POST", commit, None, &[201]));
    }
    for i in 0..15 {
        ops.push(op("DELETE", format!("/volumes/v{i}"), None, &[204]));
    }
    assert_eq!(ops.len(), 200);
    // Interleave: a fixed shuffle so every kind runs alongside every other.
    let mut keyed: Vec<(u64, Op)> = ops
        .into_iter()
        .enumerate()
        .map(|(i, o)| ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40, o))
        .collect();
    keyed.sort_by_key(|(k, _)| *k);
    keyed.into_iter().map(|(_, o)| o).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_keep_metadata_consistent_across_restart() {
    let f = fixtures();
    let bb = Body::Tar(std::sync::Arc::new(
        std::fs::read(f.join("bb.tar")).unwrap(),
    ));
    let three = Body::Tar(std::sync::Arc::new(
        std::fs::read(f.join("three.tar")).unwrap(),
    ));
    let mut d = Daemon::start();
    prepare(&d, &bb, &three).await;

    let sock = d.sock();
    let tasks: Vec<_> = storm(&bb, &three)
        .into_iter()
        .map(|o| {
            let sock = sock.clone();
            tokio::spawn(async move {
                let a = try_request(&sock, o.method, &o.path, o.body.clone()).await;
                (o, a)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut dup_wins = 0;
    for t in tasks {
        let (o, a) = t.await.unwrap();
        let a = match a {
            Ok(a) => a,
            Err(e) => {
                failures.push(format!("{} {}: {e}", o.method, o.path));
                continue;
            }
        };
        let load_error = o.path == "/images/load" && a.body.contains("\"error\"");
        let silent = a.status >= 400 && a.body.trim().is_empty();
        if !o.allowed.contains(&a.status) || load_error || silent {
            failures.push(format!(
                "{} {} -> {}: {}",
                o.method, o.path, a.status, a.body
            ));
        }
        if o.path.ends_with("name=dup") && a.status == 201 {
            dup_wins += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 200 requests failed:\n{}\n--- daemon log ---\n{}",
        failures.len(),
        failures.join("\n"),
        d.log()
    );
    assert_eq!(
        dup_wins, 1,
        "one create of the name \"dup\" wins, the others get 409"
    );

    let before = snapshot(&d).await;
    // Acknowledged work is all listed before the restart.
    let tagged: BTreeSet<&str> = before
        .images
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    for i in 0..45 {
        assert!(
            tagged.contains(format!("t{i}:latest").as_str()),
            "t{i} missing: {before:?}"
        );
    }
    assert!(tagged.contains("same:latest") && !tagged.contains("u0:latest"));
    assert_eq!(before.volumes.len(), 5 + 20 + 1, "{:?}", before.volumes);
    let names: BTreeSet<&str> = before.containers.values().map(String::as_str).collect();
    assert_eq!(names.len(), 10 + 20 + 1, "{names:?}");

    // SIGKILL: nothing is flushed at exit, so what survives is what was on disk.
    d.kill();
    d.spawn();
    let after = snapshot(&d).await;
    assert_eq!(
        before, after,
        "state after the restart differs from before it"
    );
}
