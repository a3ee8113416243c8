//! Image references (`bb`, `bb:latest`, `docker.io/library/bb:1`, `localhost:5000/x/y:t`),
//! kept in Docker's familiar form: `docker.io/library/` and `docker.io/` are dropped, the tag
//! defaults to `latest`.

use std::fmt;

use crate::error::{Error, Result};

/// A repository name with a tag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    /// Familiar repository name (`bb`, `foo/bar`, `localhost:5000/x`).
    pub repo: String,
    pub tag: String,
}

impl Reference {
    /// Parses a reference; without a tag, `latest`. Digest references (`name@sha256:...`) are
    /// refused: there is no registry to give them meaning.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| Error::invalid(format!("invalid reference format {s:?}: {why}"));
        if s.contains('@') {
            return Err(bad(
                "digest references need a registry, which Strata does not use",
            ));
        }
        let (name, tag) = match s.rfind(':') {
            Some(i) if !s[i + 1..].contains('/') => (&s[..i], Some(&s[i + 1..])),
            _ => (s, None),
        };
        let tag = tag.unwrap_or("latest");
        if tag.is_empty()
            || tag.len() > 128
            || !tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            || !tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(bad(
                "a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -",
            ));
        }
        let repo = familiar(name);
        check_repo(&repo).map_err(|why| bad(&why))?;
        Ok(Self {
            repo,
            tag: tag.to_string(),
        })
    }

    /// Builds from a repository and an optional tag (the API's `repo` + `tag` parameters).
    pub fn from_parts(repo: &str, tag: Option<&str>) -> Result<Self> {
        match tag.filter(|t| !t.is_empty()) {
            Some(t) => Self::parse(&format!("{repo}:{t}")),
            None => Self::parse(repo),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo, self.tag)
    }
}

fn familiar(name: &str) -> String {
    let n = name
        .strip_prefix("docker.io/")
        .or_else(|| name.strip_prefix("index.docker.io/"))
        .unwrap_or(name);
    n.strip_prefix("library/")
        .filter(|rest| !rest.contains('/'))
        .unwrap_or(n)
        .to_string()
}

fn check_repo(repo: &str) -> std::result::Result<(), String> {
    if repo.is_empty() || repo.len() > 255 {
        return Err("the name must be 1 to 255 characters".into());
    }
    let mut parts = repo.split('/').peekable();
    // A first part with a '.' or ':' or equal to localhost is a registry host.
    let first = parts.peek().copied().unwrap_or("");
    let has_host =
        repo.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        parts.next();
        let host_ok = first
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'));
        if !host_ok {
            return Err(format!("{first:?} is not a registry host"));
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
            && part.starts_with(|c: char| c.is_ascii_alphanumeric())
            && part.ends_with(|c: char| c.is_ascii_alphanumeric());
        if !ok {
            return Err(
                "repository names are lowercase letters, digits and separators (. _ -)".into(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        let r = Reference::parse("docker.io/library/c1img").unwrap();
        assert_eq!(r.to_string(), "c1img:latest");
        assert_eq!(Reference::parse("bb").unwrap().to_string(), "bb:latest");
        assert_eq!(
            Reference::parse("docker.io/foo/bar:1.0")
                .unwrap()
                .to_string(),
            "foo/bar:1.0"
        );
        let r = Reference::parse("localhost:5000/x/y:t").unwrap();
        assert_eq!(
            (r.repo.as_str(), r.tag.as_str()),
            ("localhost:5000/x/y", "t")
        );
        assert_eq!(
            Reference::from_parts("bb", Some("v2")).unwrap().to_string(),
            "bb:v2"
        );
    }

    #[test]
    fn refuses_bad_names() {
        for bad in [
            "",
            "UPPER",
            "a//b",
            "a:",
            "a:-x",
            "-a",
            "a@sha256:00",
            "a b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
