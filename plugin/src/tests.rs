//! Both sides of the protocol against each other, and the client against plugins that
//! misbehave: each bad plugin gets a clear error on the operation that used it.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use strata_core::error::Error;
use strata_core::ids::LayerId;
use strata_core::layer::{CreateOpts, LayerDriver};
use strata_core::store::testdriver::DirDriver;
use strata_core::stream::{from_bytes, read_all};

fn fast(t: Transport) -> Transport {
    Transport {
        timeouts: Timeouts {
            connect_retry: Duration::from_millis(300),
            call: Duration::from_secs(2),
        },
        ..t
    }
}

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

async fn serve_dir_driver(sock: PathBuf) {
    let factory: GraphFactory = Arc::new(|home: PathBuf, _opts| {
        Box::pin(async move {
            std::fs::create_dir_all(&home).map_err(|e| Error::io("create", &home, e))?;
            let d: Arc<dyn LayerDriver> = Arc::new(DirDriver::new(&home)?);
            Ok(d)
        })
    });
    let server = Arc::new(PluginServer::graph_driver(factory));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(serve(server, listener));
}

fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

#[tokio::test]
async fn a_served_driver_works_through_the_client() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("p.sock");
    serve_dir_driver(sock.clone()).await;
    let home = t.path().join("home");
    let plugin = GraphDriverPlugin::connect(
        fast(Transport::new("dirs", PluginAddr::Unix(sock))),
        home.clone(),
        vec![],
    )
    .await
    .unwrap();
    plugin
        .create(&id("base"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    let size = plugin
        .apply_diff(
            &id("base"),
            None,
            from_bytes(tar_with("hello.txt", b"hello")),
        )
        .await
        .unwrap();
    assert_eq!(size, 5);
    assert!(plugin.exists(&id("base")).await.unwrap());
    let dir = plugin.mount(&id("base"), "").await.unwrap();
    assert!(dir.starts_with(&home));
    assert_eq!(
        std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
        "hello"
    );
    plugin.unmount(&id("base")).await.unwrap();
    plugin
        .create(&id("child"), Some(&id("base")), &CreateOpts::read_write())
        .await
        .unwrap();
    let d = plugin.mount(&id("child"), "").await.unwrap();
    std::fs::write(d.join("new.txt"), "new").unwrap();
    plugin.unmount(&id("child")).await.unwrap();
    let changes = plugin
        .changes(&id("child"), Some(&id("base")))
        .await
        .unwrap();
    assert!(
        changes.iter().any(|c| c.path == Path::new("/new.txt")),
        "{changes:?}"
    );
    let tar = read_all(plugin.diff(&id("child"), Some(&id("base"))).await.unwrap())
        .await
        .unwrap();
    assert!(tar.windows(7).any(|w| w == b"new.txt"));
    // Error kinds survive the wire: removing a mounted layer is Busy, as with a built-in driver.
    plugin.mount(&id("child"), "").await.unwrap();
    let err = plugin.remove(&id("child")).await.unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err:?}");
    plugin.unmount(&id("child")).await.unwrap();
    plugin.remove(&id("child")).await.unwrap();
}

/// A second Init on the same home is a restarted engine: the plugin opens its driver afresh,
/// so the layers stay and the dead engine's mount references no longer block a remove.
#[tokio::test]
async fn a_second_init_on_the_same_home_opens_the_driver_afresh() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("p.sock");
    serve_dir_driver(sock.clone()).await;
    let home = t.path().join("home");
    let connect = || {
        GraphDriverPlugin::connect(
            fast(Transport::new("dirs", PluginAddr::Unix(sock.clone()))),
            home.clone(),
            vec![],
        )
    };
    let first = connect().await.unwrap();
    first
        .create(&id("kept"), None, &CreateOpts::read_write())
        .await
        .unwrap();
    let dir = first.mount(&id("kept"), "").await.unwrap();
    std::os::unix::fs::symlink("x", dir.join(std::ffi::OsStr::from_bytes(b"odd-\xff"))).unwrap();
    drop(first);
    let second = connect().await.unwrap();
    assert!(second.exists(&id("kept")).await.unwrap());
    // A name that is not UTF-8 crosses the wire with its exact bytes.
    let changes = second.changes(&id("kept"), None).await.unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.path.as_os_str().as_bytes() == b"/odd-\xff"),
        "{changes:?}"
    );
    second.remove(&id("kept")).await.unwrap();
}

/// A plugin whose every endpoint answers with `reply` (or hangs when `reply` is None).
async fn bad_plugin(sock: &Path, reply: Option<&'static str>, implements: &'static str) {
    let listener = tokio::net::UnixListener::bind(sock).unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let activate = req.uri().path() == "/Plugin.Activate";
                        let body = if activate {
                            format!("{{\"Implements\":[\"{implements}\"]}}")
                        } else {
                            match reply {
                                Some(r) => r.to_string(),
                                None => {
                                    tokio::time::sleep(Duration::from_secs(3600)).await;
                                    String::new()
                                }
                            }
                        };
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

async fn connect_bad(t: &Path, reply: Option<&'static str>) -> Result<GraphDriverPlugin, Error> {
    let sock = t.join("bad.sock");
    bad_plugin(&sock, reply, "GraphDriver").await;
    GraphDriverPlugin::connect(
        fast(Transport::new("bad", PluginAddr::Unix(sock))),
        t.join("home"),
        vec![],
    )
    .await
}

#[tokio::test]
async fn a_hanging_plugin_times_out() {
    let t = tempfile::tempdir().unwrap();
    let err = connect_bad(t.path(), None).await.err().unwrap();
    assert!(err.to_string().contains("no reply within"), "{err}");
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let t = tempfile::tempdir().unwrap();
    let err = connect_bad(t.path(), Some("{not json"))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("malformed reply"), "{err}");
}

#[tokio::test]
async fn a_path_outside_the_plugins_home_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let plugin = connect_bad(t.path(), Some(r#"{"Dir":"/etc"}"#))
        .await
        .unwrap();
    let err = plugin.mount(&id("x"), "").await.unwrap_err();
    assert!(err.to_string().contains("outside its home"), "{err}");
    let sock = t.path().join("v.sock");
    bad_plugin(
        &sock,
        Some(r#"{"Mountpoint":"/var/../etc"}"#),
        "VolumeDriver",
    )
    .await;
    let v = VolumeDriverPlugin::connect(fast(Transport::new("v", PluginAddr::Unix(sock))), None)
        .await
        .unwrap();
    let err = strata_core::volume::VolumeDriver::mount(
        &v,
        &strata_core::ids::VolumeName::new("vol").unwrap(),
        &strata_core::ids::CallerId::new("c1").unwrap(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("outside the plugin's scope"),
        "{err}"
    );
}

#[tokio::test]
async fn a_plugin_that_is_gone_fails_after_retrying() {
    let t = tempfile::tempdir().unwrap();
    let err = GraphDriverPlugin::connect(
        fast(Transport::new(
            "gone",
            PluginAddr::Unix(t.path().join("none.sock")),
        )),
        t.path().join("home"),
        vec![],
    )
    .await
    .err()
    .unwrap();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn a_plugin_that_dies_mid_stream_fails_the_read() {
    let t = tempfile::tempdir().unwrap();
    let sock = t.path().join("crash.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            if req.contains("Plugin.Activate") {
                let body = r#"{"Implements":["GraphDriver"]}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            } else if req.contains("GraphDriver.Diff") {
                // Promise a megabyte, send a little, then vanish.
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\npartial tar bytes",
                    )
                    .await;
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                    .await;
            }
        }
    });
    let plugin = GraphDriverPlugin::connect(
        fast(Transport::new("crash", PluginAddr::Unix(sock))),
        t.path().join("home"),
        vec![],
    )
    .await
    .unwrap();
    let stream = plugin.diff(&id("x"), None).await.unwrap();
    let err = read_all(stream).await.unwrap_err();
    assert!(err.to_string().contains("broke off"), "{err}");
}

#[tokio::test]
async fn a_plugin_over_tcp_with_tls_per_its_json_spec() {
    use super::tls::{read_certs, read_key};
    let t = tempfile::tempdir().unwrap();
    strata_core::testing::make_test_certs(t.path());
    // The plugin: TLS on loopback, demanding a client certificate signed by the CA.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&t.path().join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let server_tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            read_certs(&t.path().join("server.pem")).unwrap(),
            read_key(&t.path().join("server-key.pem")).unwrap(),
        )
        .unwrap();
    let factory: GraphFactory = Arc::new(|home: PathBuf, _| {
        Box::pin(async move {
            let d: Arc<dyn LayerDriver> = Arc::new(DirDriver::new(&home)?);
            Ok(d)
        })
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve_tls(
        Arc::new(PluginServer::graph_driver(factory)),
        listener,
        Arc::new(server_tls),
    ));

    let specs = t.path().join("specs");
    std::fs::create_dir_all(&specs).unwrap();
    let spec = |with_cert: bool| {
        let mut tls = serde_json::json!({ "CAFile": t.path().join("ca.pem") });
        if with_cert {
            tls["CertFile"] = serde_json::json!(t.path().join("client.pem"));
            tls["KeyFile"] = serde_json::json!(t.path().join("client-key.pem"));
        }
        serde_json::json!({ "Name": "tlsdirs", "Addr": format!("tcp://127.0.0.1:{port}"), "TLSConfig": tls })
    };
    let dirs = PluginDirs {
        sockets: vec![t.path().join("none")],
        specs: vec![specs.clone()],
    };
    std::fs::write(specs.join("tlsdirs.json"), spec(true).to_string()).unwrap();
    let found = dirs.find("tlsdirs").unwrap().unwrap();
    assert!(matches!(found.addr, PluginAddr::TcpTls(..)), "{found:?}");
    let plugin = GraphDriverPlugin::connect(
        fast(Transport::new("tlsdirs", found.addr)),
        t.path().join("home"),
        vec![],
    )
    .await
    .unwrap();
    plugin
        .create(&id("over-tls"), None, &CreateOpts::read_write())
        .await
        .unwrap();
    assert!(plugin.exists(&id("over-tls")).await.unwrap());

    // Without a client certificate the plugin refuses us at the handshake.
    std::fs::write(specs.join("tlsdirs.json"), spec(false).to_string()).unwrap();
    let found = dirs.find("tlsdirs").unwrap().unwrap();
    let err = GraphDriverPlugin::connect(
        fast(Transport::new("tlsdirs", found.addr)),
        t.path().join("home2"),
        vec![],
    )
    .await
    .err()
    .expect("refused without a client certificate");
    assert!(err.to_string().contains("tlsdirs"), "{err}");
}
