//! The server and the client against the exact bytes Docker's daemons exchange with plugins
//! (Go's encoding/json: `null` for nil slices and maps, omitted `omitempty` fields, chunked
//! bodies from `SendFile`, the plugins media type or plain JSON). Our own client always sends
//! `[]` and `{}`, so the round-trip tests never saw these forms: Docker 20.10's
//! `{"Opts":null}` Init was refused on HEAD 3af0184 ("invalid type: null, expected a
//! sequence"), and dockerd could not start on our graphdriver plugin.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::wire::{GraphReply, InitRequest, VolumeReply, VolumeRequest};
use super::*;
use strata_core::error::Error;
use strata_core::layer::LayerDriver;
use strata_core::store::testdriver::DirDriver;

const LAYER: &str = "4f3c1b0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

async fn served_dir_driver(t: &Path) -> PathBuf {
    let sock = t.join("p.sock");
    let factory: GraphFactory = Arc::new(|home: PathBuf, _opts| {
        Box::pin(async move {
            std::fs::create_dir_all(&home).map_err(|e| Error::io("create", &home, e))?;
            let d: Arc<dyn LayerDriver> = Arc::new(DirDriver::new(&home)?);
            Ok(d)
        })
    });
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(serve(
        Arc::new(PluginServer::graph_driver(factory)),
        listener,
    ));
    sock
}

/// Sends one raw HTTP/1.1 request, as Go's client writes it, and returns (status, body).
async fn raw(sock: &Path, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = tokio::net::UnixStream::connect(sock).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text[9..12].parse().unwrap();
    let (headers, rest) = text.split_once("\r\n\r\n").unwrap();
    let body = if headers
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A JSON POST as Docker's plugin client sends it.
async fn post_json(sock: &Path, endpoint: &str, content_type: &str, json: &str) -> GraphReply {
    let head = format!(
        "POST /{endpoint} HTTP/1.1\r\nHost: plugin\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: {}\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Type: {content_type}\r\nConnection: close\r\n\r\n",
        json.len()
    );
    let (status, body) = raw(sock, &head, json.as_bytes()).await;
    assert_eq!(status, 200, "/{endpoint}: {body}");
    let reply: GraphReply = serde_json::from_str(&body).unwrap();
    assert!(reply.err.is_empty(), "/{endpoint} {json}: {}", reply.err);
    reply
}

#[tokio::test]
async fn dockers_graphdriver_requests_are_accepted() {
    let t = tempfile::tempdir().unwrap();
    let sock = served_dir_driver(t.path()).await;
    let home = t.path().join("home");
    // dockerd 20.10 with no --storage-opt: every list is Go's nil.
    let init = format!(
        r#"{{"Home":"{}","Opts":null,"UIDMaps":null,"GIDMaps":null}}"#,
        home.display()
    );
    post_json(&sock, "GraphDriver.Init", "application/json", &init).await;
    let caps = post_json(&sock, "GraphDriver.Capabilities", "", "null").await;
    // Docker trusts ReproducesExactDiffs to skip its tar-split record; our diffs are
    // deterministic but not the applied bytes, so `docker save` needs the answer no.
    assert!(!caps.capabilities.unwrap().reproduces_exact_diffs);
    // Create of an image layer: StorageOpt is omitempty and nil, MountLabel empty.
    let create = format!(r#"{{"ID":"{LAYER}","Parent":"","MountLabel":""}}"#);
    post_json(
        &sock,
        "GraphDriver.Create",
        "application/vnd.docker.plugins.v1.2+json",
        &create,
    )
    .await;
    // ApplyDiff: Go's SendFile streams the tar with chunked encoding and no length.
    let tar = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
        b.into_inner().unwrap()
    };
    let mut chunked = Vec::new();
    for part in tar.chunks(1000) {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /GraphDriver.ApplyDiff?id={LAYER}&parent= HTTP/1.1\r\nHost: plugin\r\n\
         Transfer-Encoding: chunked\r\nAccept: application/vnd.docker.plugins.v1.2+json\r\n\
         Content-Type: application/vnd.docker.plugins.v1.2+json\r\nConnection: close\r\n\r\n"
    );
    let (status, body) = raw(&sock, &head, &chunked).await;
    assert_eq!(status, 200, "{body}");
    let applied: GraphReply = serde_json::from_str(&body).unwrap();
    assert!(applied.err.is_empty(), "{}", applied.err);
    assert_eq!(applied.size, 5);
    // Fields Docker may add in later versions are ignored, as Go's decoder ignores ours.
    let get = format!(r#"{{"ID":"{LAYER}","MountLabel":"","SomethingNew":[1,2]}}"#);
    let dir = post_json(&sock, "GraphDriver.Get", "application/json", &get).await;
    assert_eq!(
        std::fs::read_to_string(Path::new(&dir.dir).join("hello.txt")).unwrap(),
        "hello"
    );
    post_json(
        &sock,
        "GraphDriver.Put",
        "",
        &format!(r#"{{"ID":"{LAYER}"}}"#),
    )
    .await;
    post_json(&sock, "GraphDriver.Status", "", "{}").await;
    let changes = format!(r#"{{"ID":"{LAYER}","Parent":""}}"#);
    let changes = post_json(&sock, "GraphDriver.Changes", "", &changes).await;
    assert!(
        changes.changes.iter().any(|c| c.path == "/hello.txt"),
        "{:?}",
        changes.changes
    );
    post_json(
        &sock,
        "GraphDriver.Remove",
        "",
        &format!(r#"{{"ID":"{LAYER}"}}"#),
    )
    .await;
}

#[test]
fn replies_in_go_shapes_decode() {
    // What a Go plugin answers when its slices and maps are nil.
    let g: GraphReply = serde_json::from_str(
        r#"{"Err":"","Dir":"","Status":null,"Changes":null,"Metadata":null,"Capabilities":{"ReproducesExactDiffs":null},"Size":0}"#,
    )
    .unwrap();
    assert!(g.status.is_empty() && g.changes.is_empty() && g.metadata.is_empty());
    let v: VolumeReply = serde_json::from_str(
        r#"{"Err":null,"Volume":{"Name":"v","Mountpoint":"","CreatedAt":null,"Status":null},"Volumes":null,"Capabilities":{"Scope":null}}"#,
    )
    .unwrap();
    assert_eq!(v.volume.unwrap().name, "v");
    assert!(v.volumes.is_none());
    // Docker's VolumeDriver.Create with no -o: Opts is a nil map.
    let r: VolumeRequest = serde_json::from_str(r#"{"Name":"v","Opts":null}"#).unwrap();
    assert!(r.opts.is_none());
    let i: InitRequest =
        serde_json::from_str(r#"{"Home":"/h","Opts":null,"UIDMaps":null,"GIDMaps":null}"#).unwrap();
    assert!(i.opts.is_empty() && i.uid_maps.is_empty());
    let a: wire::ActivateReply = serde_json::from_str(r#"{"Implements":null}"#).unwrap();
    assert!(a.implements.is_empty());
}
