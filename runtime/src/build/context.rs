//! The build context: the request's tar unpacked safely into a temporary directory,
//! `.dockerignore`, source globbing and the content digest that keys the COPY/ADD cache.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use strata_core::archive::{apply_layer, ApplyOptions, WhiteoutMode};
use strata_core::{Error, Result};

pub struct Context {
    pub dir: tempfile::TempDir,
    ignore: Vec<(bool, Vec<String>)>,
}

impl Context {
    /// Unpacks `tar` (plain or compressed) with the archive module's path-safety rules.
    pub fn unpack(tar: &mut dyn std::io::Read, tmp_root: &Path) -> Result<Self> {
        std::fs::create_dir_all(tmp_root).map_err(|e| Error::io("create", tmp_root, e))?;
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(tmp_root)
            .map_err(|e| Error::io("create", tmp_root, e))?;
        apply_layer(
            dir.path(),
            tar,
            &ApplyOptions {
                whiteouts: WhiteoutMode::Delete,
            },
        )
        .map_err(|e| Error::invalid(format!("the build context is not a valid tar: {e}")))?;
        let ignore = std::fs::read_to_string(dir.path().join(".dockerignore"))
            .map(|t| parse_ignore(&t))
            .unwrap_or_default();
        Ok(Self { dir, ignore })
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Reads the Dockerfile (its name relative to the context).
    pub fn dockerfile(&self, name: &str) -> Result<String> {
        let path = self.resolve(name)?;
        std::fs::read_to_string(&path)
            .map_err(|_| Error::invalid(format!("Cannot locate specified Dockerfile: {name}")))
    }

    /// A context path, refusing `..` escapes.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let mut out = self.root().to_path_buf();
        for part in rel.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(Error::invalid(format!(
                        "{rel}: forbidden path outside the build context"
                    )))
                }
                p => out.push(p),
            }
        }
        Ok(out)
    }

    /// Is this context-relative path excluded by .dockerignore?
    pub fn ignored(&self, rel: &str) -> bool {
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|p| !p.is_empty() && *p != ".")
            .collect();
        let mut excluded = false;
        for (negate, pattern) in &self.ignore {
            let hit = (1..=parts.len()).any(|n| glob_segments(pattern, &parts[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }

    /// Expands one COPY source (which may hold `*`, `?`) into context paths, sorted.
    pub fn sources(&self, pattern: &str) -> Result<Vec<PathBuf>> {
        let clean = pattern.trim_start_matches("./").trim_start_matches('/');
        if !clean.contains(['*', '?', '[']) {
            let p = self.resolve(clean)?;
            if std::fs::symlink_metadata(&p).is_err() || (!clean.is_empty() && self.ignored(clean))
            {
                return Err(Error::invalid(format!(
                    "COPY failed: file not found in build context or excluded by .dockerignore: stat {clean}: file does not exist"
                )));
            }
            return Ok(vec![p]);
        }
        let pat: Vec<String> = clean.split('/').map(str::to_string).collect();
        let mut found = Vec::new();
        walk(self.root(), "", &mut |rel, path| {
            let parts: Vec<&str> = rel.split('/').collect();
            if glob_segments(&pat, &parts) && !self.ignored(rel) {
                found.push(path.to_path_buf());
            }
        })?;
        if found.is_empty() {
            return Err(Error::invalid(format!(
                "COPY failed: no source files were specified by {pattern:?}"
            )));
        }
        found.sort();
        Ok(found)
    }

    /// Digest of the content and metadata (path, type, mode, size, data, link target) of the
    /// given sources, minus ignored files: the COPY/ADD part of the cache key.
    pub fn digest(&self, sources: &[PathBuf]) -> Result<String> {
        let mut h = Sha256::new();
        for src in sources {
            let base = src.strip_prefix(self.root()).unwrap_or(src);
            hash_entry(&mut h, src, &base.to_string_lossy())?;
            if src.is_dir() && !src.is_symlink() {
                let prefix = base.to_string_lossy().into_owned();
                walk(src, &prefix, &mut |rel, path| {
                    if !self.ignored(rel) {
                        let _ = hash_entry(&mut h, path, rel);
                    }
                })?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}

fn hash_entry(h: &mut Sha256, path: &Path, rel: &str) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    h.update(rel.as_bytes());
    h.update(m.mode().to_le_bytes());
    h.update(m.uid().to_le_bytes());
    h.update(m.gid().to_le_bytes());
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| Error::io("readlink", path, e))?;
        h.update(t.as_os_str().as_encoded_bytes());
    } else if m.is_file() {
        h.update(m.len().to_le_bytes());
        let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        std::io::copy(&mut f, h).map_err(|e| Error::io("read", path, e))?;
    }
    h.update([0]);
    Ok(())
}

/// Visits every entry below `dir` (sorted, not following symlinks) with its path relative to
/// the walk's prefix.
fn walk(dir: &Path, prefix: &str, f: &mut dyn FnMut(&str, &Path)) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io("read directory", dir, e))?
        .filter_map(|e| e.ok())
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let path = e.path();
        f(&rel, &path);
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&path, &rel, f)?;
        }
    }
    Ok(())
}

fn parse_ignore(text: &str) -> Vec<(bool, Vec<String>)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (negate, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = p.trim_start_matches("./").trim_start_matches('/');
            (
                negate,
                p.split('/')
                    .filter(|s| !s.is_empty() && *s != ".")
                    .map(str::to_string)
                    .collect(),
            )
        })
        .filter(|(_, p): &(bool, Vec<String>)| !p.is_empty())
        .collect()
}

/// Segment-wise glob: `**` spans any number of segments.
fn glob_segments(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((first, rest)) if first == "**" => {
            (0..=path.len()).any(|skip| glob_segments(rest, &path[skip..]))
        }
        Some((first, rest)) => match path.split_first() {
            Some((p, prest)) => {
                glob_one(first.as_bytes(), p.as_bytes()) && glob_segments(rest, prest)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one segment.
fn glob_one(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_one(&p[1..], s) || (!s.is_empty() && glob_one(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_one(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_one(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let p = |s: &str| s.split('/').map(str::to_string).collect::<Vec<_>>();
        assert!(glob_segments(&p("*.txt"), &["a.txt"]));
        assert!(!glob_segments(&p("*.txt"), &["d", "a.txt"]));
        assert!(glob_segments(&p("**/*.txt"), &["d", "e", "a.txt"]));
        assert!(glob_segments(&p("a?c"), &["abc"]));
    }

    #[test]
    fn dockerignore_with_exceptions() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            dir,
            ignore: parse_ignore("*.log\n!keep.log\nbuild/\n"),
        };
        assert!(ctx.ignored("x.log"));
        assert!(!ctx.ignored("keep.log"));
        assert!(ctx.ignored("build/out/bin"));
        assert!(!ctx.ignored("src/main.rs"));
        assert!(ctx.resolve("../etc/passwd").is_err());
    }
}
