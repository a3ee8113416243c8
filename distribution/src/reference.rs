//! Image references as Docker normalises them: `busybox` is
//! `docker.io/library/busybox:latest`; the first path component names a registry host when it
//! has a `.` or a `:` or is `localhost`.

use std::fmt;

use strata_core::store::Digest;

use crate::error::{DistError, Result};

/// Docker Hub's name in references, and the host its API answers on.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path on that registry (`library/busybox`, `x/y`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl ImageRef {
    /// Parses `name[:tag][@digest]`; without either, the tag is `latest`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| DistError::InvalidReference(format!("{s:?}: {why}"));
        let (rest, digest) = match s.split_once('@') {
            Some((n, d)) => (
                n,
                Some(Digest::parse(d).map_err(|_| bad("the digest is not sha256:<64 hex>"))?),
            ),
            None => (s, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            check_tag(t).map_err(&bad)?;
        }
        let (registry, path) = split_host(name);
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        check_path(&repository).map_err(&bad)?;
        if registry.is_empty() || !registry.chars().all(host_char) {
            return Err(bad("the registry host is not a host name"));
        }
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The reference from the API's `fromImage` and `tag` parameters (`tag` may be a digest).
    pub fn from_parts(image: &str, tag: Option<&str>) -> Result<Self> {
        match tag.filter(|t| !t.is_empty()) {
            Some(t) if t.starts_with("sha256:") => Self::parse(&format!("{image}@{t}")),
            Some(t) => Self::parse(&format!("{image}:{t}")),
            None => Self::parse(image),
        }
    }

    pub fn is_docker_hub(&self) -> bool {
        self.registry == DOCKER_HUB
    }

    /// The host the registry's HTTP API answers on.
    pub fn api_host(&self) -> &str {
        if self.is_docker_hub() {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The name as Docker shows it: `busybox`, `foo/bar`, `127.0.0.1:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.is_docker_hub() {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            format!("{}/{}", self.registry, self.repository)
        }
    }

    /// The tag or digest to ask the registry for (the digest wins when both are given).
    pub fn manifest_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.familiar_name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// Splits off the registry host, or names Docker Hub when the first component is not one.
fn split_host(name: &str) -> (String, &str) {
    if let Some((first, rest)) = name.split_once('/') {
        if first.contains('.') || first.contains(':') || first == "localhost" {
            let host = if first == "index.docker.io" {
                DOCKER_HUB
            } else {
                first
            };
            return (host.to_string(), rest);
        }
    }
    (DOCKER_HUB.to_string(), name)
}

fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')
}

fn check_tag(t: &str) -> std::result::Result<(), &'static str> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err("a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -")
    }
}

fn check_path(path: &str) -> std::result::Result<(), &'static str> {
    let ok = !path.is_empty()
        && path.len() <= 255
        && path.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
                })
                && part.starts_with(|c: char| c.is_ascii_alphanumeric())
                && part.ends_with(|c: char| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(())
    } else {
        Err("repository names are lowercase letters, digits and separators (. _ -)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, String, Option<String>) {
        let r = ImageRef::parse(s).unwrap();
        (r.registry, r.repository, r.tag)
    }

    #[test]
    fn normalises_like_docker() {
        let hub = |repo: &str, tag: &str| {
            (
                DOCKER_HUB.to_string(),
                repo.to_string(),
                Some(tag.to_string()),
            )
        };
        assert_eq!(parts("busybox"), hub("library/busybox", "latest"));
        assert_eq!(parts("busybox:1.36"), hub("library/busybox", "1.36"));
        assert_eq!(parts("foo/bar"), hub("foo/bar", "latest"));
        assert_eq!(
            parts("docker.io/library/busybox"),
            hub("library/busybox", "latest")
        );
        assert_eq!(parts("index.docker.io/foo/bar:x"), hub("foo/bar", "x"));
        let local = |host: &str, repo: &str, tag: &str| {
            (host.to_string(), repo.to_string(), Some(tag.to_string()))
        };
        assert_eq!(
            parts("127.0.0.1:5000/bb"),
            local("127.0.0.1:5000", "bb", "latest")
        );
        assert_eq!(parts("localhost/x/y:t"), local("localhost", "x/y", "t"));
        assert_eq!(
            parts("registry.example/a"),
            local("registry.example", "a", "latest")
        );
    }

    #[test]
    fn familiar_names_and_api_hosts() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.familiar_name(), "busybox");
        assert_eq!(r.api_host(), DOCKER_HUB_API);
        assert_eq!(r.to_string(), "busybox:latest");
        let r = ImageRef::parse("localhost:5000/x/y:t").unwrap();
        assert_eq!(r.familiar_name(), "localhost:5000/x/y");
        assert_eq!(r.api_host(), "localhost:5000");
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("127.0.0.1:5000/bb@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = ImageRef::from_parts("127.0.0.1:5000/bb", Some(&d)).unwrap();
        assert_eq!(r.digest.unwrap().to_string(), d);
        assert!(ImageRef::parse("bb@sha256:00").is_err());
    }

    #[test]
    fn refuses_bad_names() {
        for bad in ["", "UPPER", "a//b", "a:", "a:-x", "-a", "a b", "host:5000/"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
