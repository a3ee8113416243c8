//! Pull, push and login with the stock docker CLI against `stratad` and a real registry
//! (Debian's `docker-registry`, distribution 2.8) that each test starts on 127.0.0.1 with its
//! own config and storage in a temp dir, and stops when it ends, also on failure. No test
//! names an image without a registry host: nothing here may reach Docker Hub.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "common/stratad.rs"]
mod stratad;
#[path = "common/test_registry.rs"]
mod test_registry;

use stratad::{fixtures, Stratad};
use test_registry::{RegistrySetup, TestRegistry, TOKEN_ISSUER, TOKEN_SERVICE};

/// A daemon of our own (overlay2), with its own docker CLI config (logins stay in the test).
struct Daemon(Stratad);

impl std::ops::Deref for Daemon {
    type Target = Stratad;
    fn deref(&self) -> &Stratad {
        &self.0
    }
}

impl Daemon {
    fn start() -> Daemon {
        let d = Stratad::start(Some("overlay2"));
        Daemon(d)
    }

    fn load(&self, name: &str) -> String {
        let file = fixtures().join(format!("{name}.tar"));
        self.ok(&["load", "-i", file.to_str().unwrap()]);
        self.id(name)
    }

    fn id(&self, name: &str) -> String {
        self.ok(&["image", "inspect", "-f", "{{.Id}}", name])
            .trim()
            .to_string()
    }

    /// Chain ids in the layer store.
    fn layer_count(&self) -> usize {
        let dir = self.data_root().join("image/overlay2/layerdb/sha256");
        std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0)
    }
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

/// Push with the CLI, remove, pull back (same id), run; a second push uploads nothing; a
/// push to another repository mounts the blobs; `docker run` pulls a missing image itself.
#[test]
fn push_rmi_pull_run_over_plain_http() {
    let reg = TestRegistry::start(RegistrySetup::default());
    let d = Daemon::start();
    let three = d.load("three");
    let host = reg.host();
    let name = format!("{host}/strata/three:v1");
    d.ok(&["tag", "three", &name]);

    let out = d.ok(&["push", &name]);
    assert!(
        out.contains(&format!(
            "The push refers to repository [{host}/strata/three]"
        )),
        "{out}"
    );
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    assert!(!lines_with(&out, "Pushed").is_empty(), "{out}");
    // Everything is there now: a second push uploads no layer.
    let again = d.ok(&["push", &name]);
    assert!(lines_with(&again, "Pushed").is_empty(), "{again}");
    assert!(
        !lines_with(&again, "Layer already exists").is_empty(),
        "{again}"
    );
    // Another repository of the same registry gets the layers mounted, not uploaded.
    let other = format!("{host}/other/three:v1");
    d.ok(&["tag", "three", &other]);
    let mounted = d.ok(&["push", &other]);
    assert!(
        !lines_with(&mounted, "Mounted from strata/three").is_empty(),
        "{mounted}"
    );
    assert!(lines_with(&mounted, "Pushed").is_empty(), "{mounted}");

    d.ok(&["rmi", &name, &other, "three"]);
    assert_eq!(
        d.layer_count(),
        0,
        "the image's layers are gone before the pull"
    );
    let pulled = d.ok(&["pull", &name]);
    assert!(!lines_with(&pulled, "Pull complete").is_empty(), "{pulled}");
    assert!(
        pulled.contains(&format!("Status: Downloaded newer image for {name}")),
        "{pulled}"
    );
    assert_eq!(
        d.id(&name),
        three,
        "the pulled image has the pushed image's id"
    );
    let digests = d.ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &name]);
    assert!(
        digests.contains(&format!("{host}/strata/three@sha256:")),
        "{digests}"
    );
    let out = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        &name,
        "cat",
        "/data/layer3.txt",
    ]);
    assert_eq!(out, "layer3\n");
    // Pulled again: nothing to download.
    let again = d.ok(&["pull", &name]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {name}")),
        "{again}"
    );
    assert!(
        lines_with(&again, "Already exists").is_empty(),
        "as Docker: {again}"
    );

    // `docker run` of a missing image pulls it (the CLI does, on create's 404).
    d.ok(&["rmi", &name]);
    let out = d.docker(&["run", "--rm", &name, "cat", "/data/layer3.txt"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", d.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "layer3\n");
    assert!(stderr.contains("Unable to find image"), "{stderr}");
    // --pull never does not.
    d.ok(&["rmi", &name]);
    let err = d.fails(&["run", "--rm", "--pull", "never", &name, "true"]);
    assert!(err.contains("No such image"), "{err}");
}

/// The registry's manifest for `repo:reference` (via curl, plain HTTP registries only).
fn registry_get(reg: &TestRegistry, path: &str, accept: &str) -> String {
    let out = Command::new("curl")
        .args(["-sSf", "-H", &format!("Accept: {accept}")])
        .arg(format!("http://{}/v2/{path}", reg.host()))
        .output()
        .expect("curl must be installed");
    assert!(
        out.status.success(),
        "GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn manifest_of(reg: &TestRegistry, repo: &str, tag: &str) -> serde_json::Value {
    let raw = registry_get(
        reg,
        &format!("{repo}/manifests/{tag}"),
        "application/vnd.docker.distribution.manifest.v2+json",
    );
    serde_json::from_str(&raw).unwrap()
}

/// A layer blob changed on the registry's disk is refused while it streams, and the failed
/// pull leaves no image and no layer behind.
#[test]
fn a_corrupted_blob_fails_the_pull_and_leaves_nothing() {
    let reg = TestRegistry::start(RegistrySetup::default());
    let d = Daemon::start();
    d.load("bb");
    let name = format!("{}/bb:v1", reg.host());
    d.ok(&["tag", "bb", &name]);
    d.ok(&["push", &name]);
    d.ok(&["rmi", &name, "bb"]);
    assert_eq!(d.layer_count(), 0);

    let manifest = manifest_of(&reg, "bb", "v1");
    let layer = manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = reg.blob_path(&layer);
    let mut data = std::fs::read(&blob).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff; // same size, different content
    std::fs::write(&blob, &data).unwrap();

    let err = d.fails(&["pull", &name]);
    assert!(err.contains("failed verification"), "{err}");
    assert!(err.contains(&layer), "{err}");
    assert!(
        d.ok(&["images", "-q"]).trim().is_empty(),
        "no image is left"
    );
    assert_eq!(d.layer_count(), 0, "no layer is left");
    // The blob failed its digest, so not even a partial file is kept for resuming.
    let tmp = d.data_root().join("tmp");
    let spool = std::fs::read_dir(&tmp)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name() != "blobs")
        .count();
    let partials = std::fs::read_dir(tmp.join("blobs")).map_or(0, |d| d.count());
    assert_eq!(
        spool + partials,
        0,
        "no download is left in the spool directory"
    );
}

/// An OCI index: the pull takes the linux/amd64 entry, `--platform` another one, and the
/// image's RepoDigests name the index's digest.
#[test]
fn an_oci_index_pull_picks_the_platform() {
    let reg = TestRegistry::start(RegistrySetup::default());
    let d = Daemon::start();
    let (bb, three) = (d.load("bb"), d.load("three"));
    let host = reg.host();
    for (local, tag) in [("bb", "amd"), ("three", "arm")] {
        let name = format!("{host}/multi:{tag}");
        d.ok(&["tag", local, &name]);
        d.ok(&["push", &name]);
    }
    let entry = |tag: &str, arch: &str| {
        let m = registry_get(
            &reg,
            &format!("multi/manifests/{tag}"),
            "application/vnd.docker.distribution.manifest.v2+json",
        );
        let digest = format!("sha256:{}", hex_sha256(m.as_bytes()));
        serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "digest": digest, "size": m.len(),
            "platform": { "architecture": arch, "os": "linux" },
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("arm", "arm64"), entry("amd", "amd64")],
    });
    let body = serde_json::to_vec(&index).unwrap();
    let out = Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg("Content-Type: application/vnd.oci.image.index.v1+json")
        .arg("--data-binary")
        .arg("@-")
        .arg(format!("http://{host}/v2/multi/manifests/both"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(&body)?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "PUT index: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index_digest = format!("sha256:{}", hex_sha256(&body));

    let all = format!("{host}/multi:both");
    d.ok(&["pull", &all]);
    assert_eq!(d.id(&all), bb, "linux/amd64 is the bb entry");
    let digests = d.ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &all]);
    assert!(
        digests.contains(&format!("{host}/multi@{index_digest}")),
        "{digests}"
    );
    // By digest: the image is found by its RepoDigests entry, also for `run`.
    let by_digest = format!("{host}/multi@{index_digest}");
    d.ok(&["rmi", &all]);
    let out = d.ok(&["pull", &by_digest]);
    assert!(out.contains(&format!("Digest: {index_digest}")), "{out}");
    assert_eq!(d.id(&by_digest), bb);
    let out = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        &by_digest,
        "echo",
        "by digest",
    ]);
    assert_eq!(out, "by digest\n");
    d.ok(&["pull", "--platform", "linux/arm64", &all]);
    assert_eq!(d.id(&all), three, "linux/arm64 is the three entry");
    let err = d.fails(&["pull", "--platform", "linux/s390x", &all]);
    assert!(
        err.contains("no matching manifest for linux/s390x"),
        "{err}"
    );
    // A reference the registry does not know, in Docker's words.
    let err = d.fails(&["pull", &format!("{host}/multi:nope")]);
    assert!(
        err.contains(&format!(
            "manifest for {host}/multi:nope not found: manifest unknown"
        )),
        "{err}"
    );
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

/// HTTPS with a test CA and htpasswd basic auth: anonymous push and pull are refused in
/// Docker's words, a wrong password does not log in, the right one does, and then push and
/// pull work with the credentials the CLI sends in X-Registry-Auth.
#[test]
fn tls_registry_with_basic_auth_and_login() {
    let reg = TestRegistry::start(RegistrySetup {
        tls: true,
        basic_auth: Some(("strata", "s3cret")),
        ..RegistrySetup::default()
    });
    let d = Daemon::start();
    let bb = d.load("bb");
    let host = reg.host();
    let name = format!("{host}/secure/bb:v1");
    d.ok(&["tag", "bb", &name]);

    let err = d.fails(&["push", &name]);
    assert!(err.contains("no basic auth credentials"), "{err}");
    let err = d.fails(&["login", "-u", "strata", "-p", "wrong", &host]);
    assert!(
        err.contains(&format!(
            "login attempt to https://{host}/v2/ failed with status: 401 Unauthorized"
        )),
        "{err}"
    );
    let out = d.ok(&["login", "-u", "strata", "-p", "s3cret", &host]);
    assert!(out.contains("Login Succeeded"), "{out}");

    let out = d.ok(&["push", &name]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    d.ok(&["rmi", &name, "bb"]);
    d.ok(&["pull", &name]);
    assert_eq!(d.id(&name), bb);

    d.ok(&["logout", &host]);
    d.ok(&["rmi", &name]);
    let err = d.fails(&["pull", &name]);
    assert!(err.contains("no basic auth credentials"), "{err}");
}

/// HTTPS verification with `certs.d`: with loopback treated as secure (the daemon never does
/// this; it isolates the check), a registry whose CA is unknown is refused, and its CA in
/// `certs.d/127.0.0.1:PORT/ca.crt` makes it trusted.
#[tokio::test]
async fn certs_d_ca_makes_a_registry_trusted() {
    use strata_distribution::{ClientConfig, DistError, Registry};
    let reg = TestRegistry::start(RegistrySetup {
        tls: true,
        ..RegistrySetup::default()
    });
    let certs = tempfile::tempdir().unwrap();
    let cfg = ClientConfig {
        insecure_registries: Vec::new(),
        certs_dir: certs.path().to_path_buf(),
        loopback_insecure: false,
    };
    let host = reg.host();
    match Registry::connect(&cfg, &host, None).await {
        Err(DistError::Http { source, .. }) => {
            let chain = format!("{:?}", source);
            assert!(chain.contains("UnknownIssuer"), "{chain}");
        }
        Err(e) => panic!("an unknown CA should fail the TLS handshake, got: {e}"),
        Ok(_) => panic!("a registry with an unknown CA was trusted"),
    }
    let dir = certs.path().join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(reg.dir.path().join("ca.pem"), dir.join("ca.crt")).unwrap();
    let r = Registry::connect(&cfg, &host, None)
        .await
        .expect("trusted with certs.d");
    assert_eq!(r.base_url().scheme(), "https");
    let e = r
        .get_manifest("nothing/here", "latest", "repository:nothing/here:pull")
        .await
        .unwrap_err();
    assert_eq!(e.registry_code(), Some("MANIFEST_UNKNOWN"), "{e}");
}

/// A token service for `auth: token` registries: answers `GET /token?scope=` with a JWT
/// (RS256, signed with openssl by a test key whose certificate travels in `x5c`) granting the
/// scope's actions to `user:password`, nothing to anonymous callers, and 401 to a wrong
/// password. Runs on its own thread; stopped when dropped.
struct TokenService {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    dir: tempfile::TempDir,
}

impl TokenService {
    fn start(user: &'static str, password: &'static str) -> TokenService {
        let dir = tempfile::tempdir().unwrap();
        strata_core::testing::make_test_certs(dir.path());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, keydir) = (stop.clone(), dir.path().to_path_buf());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                if let Ok(conn) = conn {
                    serve_token(conn, &keydir, user, password);
                }
            }
        });
        TokenService {
            port,
            stop,
            thread: Some(thread),
            dir,
        }
    }

    fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

impl Drop for TokenService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_token(mut conn: std::net::TcpStream, keydir: &Path, user: &str, password: &str) {
    use base64::Engine as _;
    use std::io::{BufRead, BufReader, Write};
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    let _ = reader.read_line(&mut request_line);
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_string());
            }
        }
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let granted = match authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
    {
        Some(given) => {
            let decoded = b64.decode(given).unwrap_or_default();
            if decoded != format!("{user}:{password}").as_bytes() {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}"#;
                let _ = write!(
                    conn,
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                return;
            }
            Some(user)
        }
        None => None,
    };
    let scope = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|target| target.split_once('?'))
        .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("scope=")))
        .map(|s| {
            s.replace("%3A", ":")
                .replace("%2F", "/")
                .replace("%2C", ",")
        })
        .unwrap_or_default();
    let parts: Vec<&str> = scope.split(':').collect();
    let access: Vec<serde_json::Value> = match (granted, parts.as_slice()) {
        (Some(_), ["repository", name, actions]) => vec![serde_json::json!({
            "type": "repository", "name": name,
            "actions": actions.split(',').collect::<Vec<_>>(),
        })],
        _ => Vec::new(),
    };
    let token = sign_jwt(keydir, granted.unwrap_or(""), access);
    let body = serde_json::json!({ "token": token, "expires_in": 300 }).to_string();
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// An RS256 JWT signed with `ca-key.pem`, its certificate `ca.pem` in the `x5c` header.
fn sign_jwt(keydir: &Path, subject: &str, access: Vec<serde_json::Value>) -> String {
    use base64::Engine as _;
    let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let pem = std::fs::read_to_string(keydir.join("ca.pem")).unwrap();
    let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5c": [der] });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now - 10,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url.encode(header.to_string()),
        url.encode(claims.to_string())
    );
    let input_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(input_file.path(), &signing_input).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(keydir.join("ca-key.pem"))
        .arg(input_file.path())
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl dgst -sign failed");
    format!("{signing_input}.{}", url.encode(&out.stdout))
}

/// Bearer tokens (`auth: token` with a token service): anonymous push is refused, a wrong
/// password does not log in, the right one does, and push and pull then get tokens for their
/// scopes.
#[test]
fn bearer_token_registry() {
    let tokens = TokenService::start("strata", "t0ken");
    let reg = TestRegistry::start(RegistrySetup {
        token: Some((tokens.realm(), tokens.cert())),
        ..RegistrySetup::default()
    });
    let d = Daemon::start();
    let bb = d.load("bb");
    let host = reg.host();
    let name = format!("{host}/tok/bb:v1");
    d.ok(&["tag", "bb", &name]);

    let err = d.fails(&["push", &name]);
    assert!(err.contains("unauthorized"), "{err}");
    let err = d.fails(&["login", "-u", "strata", "-p", "wrong", &host]);
    assert!(err.contains("incorrect username or password"), "{err}");
    let out = d.ok(&["login", "-u", "strata", "-p", "t0ken", &host]);
    assert!(out.contains("Login Succeeded"), "{out}");
    let out = d.ok(&["push", &name]);
    assert!(out.contains("v1: digest: sha256:"), "{out}");
    d.ok(&["rmi", &name, "bb"]);
    d.ok(&["pull", &name]);
    assert_eq!(d.id(&name), bb);
}
