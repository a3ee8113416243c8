//! Which scheme and which certificates a registry host is reached with, as Docker decides:
//! HTTPS with the system roots plus `<certs.d>/<host>/*.crt`; hosts marked insecure (the
//! daemon's `--insecure-registry` entries, 127.0.0.0/8, ::1 and `localhost`) are tried over
//! HTTPS without verification and then over plain HTTP.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{DistError, Result};

/// Docker's default concurrency for layer downloads.
pub const DEFAULT_CONCURRENT_DOWNLOADS: usize = 3;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host[:port]` names or CIDR ranges (`10.0.0.0/8`).
    pub insecure_registries: Vec<String>,
    /// Per-registry CA certificates: `<certs_dir>/<host[:port]>/*.crt`.
    pub certs_dir: PathBuf,
    /// Docker's rule: 127.0.0.0/8, ::1 and localhost are insecure. Always true in the daemon;
    /// tests of certificate verification against a registry on 127.0.0.1 turn it off.
    pub loopback_insecure: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            insecure_registries: Vec::new(),
            certs_dir: PathBuf::from("/etc/strata/certs.d"),
            loopback_insecure: true,
        }
    }
}

impl ClientConfig {
    /// Whether `host` (`name[:port]`) may be reached without TLS verification.
    pub fn is_insecure(&self, host: &str) -> bool {
        let name = host_name(host);
        let ip = name.parse::<IpAddr>().ok();
        if self.loopback_insecure && (name == "localhost" || ip.is_some_and(|ip| ip.is_loopback()))
        {
            return true;
        }
        self.insecure_registries.iter().any(|entry| {
            entry == host || entry == name || ip.is_some_and(|ip| cidr_contains(entry, ip))
        })
    }

    /// A client that trusts the system roots and the host's `certs.d` CAs.
    pub(crate) fn verifying_client(&self, host: &str) -> Result<reqwest::Client> {
        let mut b = base_builder().tls_built_in_native_certs(true);
        for pem in ca_files(&self.certs_dir.join(host))? {
            for cert in read_certs(&pem)? {
                b = b.add_root_certificate(cert);
            }
        }
        b.build()
            .map_err(|e| DistError::Invalid(format!("cannot build an HTTP client: {e}")))
    }

    /// A client for insecure hosts: TLS without verification (plain HTTP needs none).
    pub(crate) fn unverified_client(&self) -> Result<reqwest::Client> {
        base_builder()
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| DistError::Invalid(format!("cannot build an HTTP client: {e}")))
    }
}

fn base_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(15))
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
}

/// `host` without its port (`[::1]:5000` is `::1`).
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    }
}

fn cidr_contains(entry: &str, ip: IpAddr) -> bool {
    let Some((net, bits)) = entry.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

/// The certificates of a PEM file; a file with none is an error, not silently ignored.
fn read_certs(pem: &Path) -> Result<Vec<reqwest::Certificate>> {
    let data = std::fs::read(pem)?;
    let bad = |why: String| DistError::Invalid(format!("{}: {why}", pem.display()));
    let ders = rustls_pemfile::certs(&mut &data[..])
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM certificate file: {e}")))?;
    if ders.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    ders.iter()
        .map(|d| reqwest::Certificate::from_der(d).map_err(|e| bad(e.to_string())))
        .collect()
}

/// The `*.crt` files of a `certs.d/<host>` directory (none if it does not exist).
fn ca_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "crt") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_hosts_as_docker() {
        let cfg = ClientConfig {
            insecure_registries: vec!["reg.example:5000".into(), "10.1.0.0/16".into()],
            certs_dir: PathBuf::from("/nonexistent"),
            loopback_insecure: true,
        };
        for host in [
            "127.0.0.1:5000",
            "127.9.9.9",
            "localhost:5000",
            "[::1]:5000",
        ] {
            assert!(cfg.is_insecure(host), "{host}");
        }
        assert!(cfg.is_insecure("reg.example:5000"));
        assert!(cfg.is_insecure("10.1.2.3:443"));
        for host in [
            "reg.example",
            "10.2.0.1:5000",
            "docker.io",
            "registry-1.docker.io",
        ] {
            assert!(!cfg.is_insecure(host), "{host}");
        }
    }

    #[test]
    fn reads_ca_files_of_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("reg.example:5000");
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("ca.crt"), b"x").unwrap();
        std::fs::write(host.join("client.key"), b"x").unwrap();
        assert_eq!(ca_files(&host).unwrap(), vec![host.join("ca.crt")]);
        assert!(ca_files(&dir.path().join("other")).unwrap().is_empty());
        let cfg = ClientConfig {
            certs_dir: dir.path().to_path_buf(),
            ..ClientConfig::default()
        };
        // A file that is not PEM is an error, not silently ignored.
        assert!(cfg.verifying_client("reg.example:5000").is_err());
    }
}
