//! Debian's `docker-registry` (distribution 2.8) started by a test on 127.0.0.1 with its own
//! config and storage, never as a service; killed and removed on drop.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN_SERVICE: &str = "strata-test-service";
pub const TOKEN_ISSUER: &str = "strata-test-issuer";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
        .port()
}

/// How a test registry is set up.
#[derive(Default)]
pub struct RegistrySetup {
    /// Serve HTTPS with a test CA's certificate for 127.0.0.1.
    pub tls: bool,
    /// htpasswd basic auth with this user and password.
    pub basic_auth: Option<(&'static str, &'static str)>,
    /// Bearer token auth: tokens from this realm, signed by the key of this PEM certificate.
    pub token: Option<(String, PathBuf)>,
}

/// A `docker-registry` process; dropped, it is killed and its storage removed.
pub struct TestRegistry {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
}

impl TestRegistry {
    pub fn start(setup: RegistrySetup) -> TestRegistry {
        let dir = tempfile::Builder::new()
            .prefix("strata-registry-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let root = dir.path();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: strata-test\n",
            root.join("data").display()
        );
        if setup.tls {
            strata_core::testing::make_test_certs(root);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                root.join("server.pem").display(),
                root.join("server-key.pem").display()
            ));
        }
        if let Some((user, password)) = setup.basic_auth {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .expect("htpasswd (apache2-utils) must be installed: scripts/setup.sh");
            assert!(out.status.success(), "htpasswd failed");
            std::fs::write(root.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n",
                root.join("htpasswd").display()
            ));
        }
        if let Some((realm, cert)) = &setup.token {
            config.push_str(&format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {TOKEN_SERVICE}\n    \
                 issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ));
        }
        std::fs::write(root.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(root.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(root.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry must be installed (scripts/setup.sh installs it)");
        let mut r = TestRegistry {
            child: Some(child),
            dir,
            port,
        };
        r.wait_ready();
        r
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("docker-registry exited ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("docker-registry did not listen: {}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding a blob on the registry's disk.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
