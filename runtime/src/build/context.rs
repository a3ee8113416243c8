//! The build context: the request's tar unpacked safely into a temporary directory,
//! `.dockerignore`, source globbing and the content digest that keys the COPY/ADD cache.
//!
//! The context is untrusted: it may hold symlinks to anywhere (`Dockerfile -> /etc/shadow`,
//! `e -> /etc`). Every path in it is resolved with the context as `/` (see [`ScopedDir`]), as
//! Docker's classic builder does, and only regular files are ever read, through descriptors:
//! nothing outside the context is read, and no error quotes a file from outside it.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;
use sha2::{Digest as _, Sha256};
use strata_core::archive::{apply_layer, ApplyOptions, WhiteoutMode};
use strata_core::{Error, Result};

use super::dirfd::{self, Kind};
use super::scope::ScopedDir;

/// Largest Dockerfile or `.dockerignore` read: they are text, a bigger one is refused.
const TEXT_LIMIT: u64 = 16 << 20;

pub struct Context {
    /// Kept for its Drop (removes the unpacked context); all access goes through `root`.
    _dir: tempfile::TempDir,
    root: ScopedDir,
    ignore: Vec<(bool, Vec<String>)>,
}

/// One COPY/ADD source, opened inside the context (a final symlink followed inside it).
pub(super) enum Source {
    Dir(OwnedFd),
    File(File, FileStat),
    /// A fifo, socket or device: never read, not copied (as Docker skips them).
    Special,
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
        let root = ScopedDir::open(dir.path())?;
        let ignore = match root.read_regular(".dockerignore", TEXT_LIMIT) {
            Ok(text) => parse_ignore(&String::from_utf8_lossy(&text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                return Err(Error::invalid(format!(
                    "the build context's .dockerignore cannot be read: {e}"
                )))
            }
        };
        Ok(Self {
            _dir: dir,
            root,
            ignore,
        })
    }

    /// Reads the Dockerfile (its name relative to the context). Only a regular file inside the
    /// context is read, so an error can only ever quote the context's own text.
    pub fn dockerfile(&self, name: &str) -> Result<String> {
        let rel = clean(name)?;
        let text = self.root.read_regular(&rel, TEXT_LIMIT).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::invalid(format!("Cannot locate specified Dockerfile: {name}"))
            } else {
                Error::invalid(format!("The Dockerfile {name} cannot be read: {e}"))
            }
        })?;
        String::from_utf8(text)
            .map_err(|_| Error::invalid(format!("The Dockerfile {name} is not UTF-8 text")))
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

    /// Expands one COPY source (which may hold `*`, `?`) into context-relative paths, sorted.
    pub fn sources(&self, pattern: &str) -> Result<Vec<String>> {
        let clean = clean(pattern)?;
        if !clean.contains(['*', '?', '[']) {
            let found = self.root.open_in_root(&clean, OFlag::O_PATH);
            if found.is_err() || (!clean.is_empty() && self.ignored(&clean)) {
                return Err(Error::invalid(format!(
                    "COPY failed: file not found in build context or excluded by .dockerignore: stat {clean}: file does not exist"
                )));
            }
            return Ok(vec![clean]);
        }
        let pat: Vec<String> = clean.split('/').map(str::to_string).collect();
        let mut found = Vec::new();
        walk(self.root.fd().as_fd(), "", 0, &mut |rel, _, _, _| {
            let parts: Vec<&str> = rel.split('/').collect();
            if glob_segments(&pat, &parts) && !self.ignored(rel) {
                found.push(rel.to_string());
            }
            Ok(())
        })
        .map_err(|e| Error::io("read the build context", pattern, e))?;
        if found.is_empty() {
            return Err(Error::invalid(format!(
                "COPY failed: no source files were specified by {pattern:?}"
            )));
        }
        found.sort();
        Ok(found)
    }

    /// Opens a source from [`Context::sources`], resolved inside the context.
    pub(super) fn open_source(&self, rel: &str) -> Result<Source> {
        let fail = |e: io::Error| Error::io("open in the build context", rel, e);
        let probe = self.root.open_in_root(rel, OFlag::O_PATH).map_err(fail)?;
        let st = dirfd::fstat(&probe).map_err(fail)?;
        Ok(match dirfd::kind(&st) {
            Kind::Dir => {
                let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
                Source::Dir(self.root.open_in_root(rel, flags).map_err(fail)?)
            }
            Kind::File => Source::File(self.root.open_regular(rel).map_err(fail)?, st),
            Kind::Symlink | Kind::Special => Source::Special,
        })
    }

    /// Digest of the content and metadata (path, type, mode, size, data, link target) of the
    /// given sources, minus ignored files: the COPY/ADD part of the cache key.
    pub fn digest(&self, sources: &[String]) -> Result<String> {
        let mut h = Sha256::new();
        for src in sources {
            let fail = |e: io::Error| Error::io("read the build context", src, e);
            match self.open_source(src)? {
                Source::Dir(fd) => {
                    hash_meta(&mut h, src, &dirfd::fstat(&fd).map_err(fail)?);
                    walk(fd.as_fd(), src, 0, &mut |rel, st, dir, name| {
                        if self.ignored(rel) {
                            return Ok(());
                        }
                        hash_entry(&mut h, rel, st, dir, name)
                    })
                    .map_err(fail)?;
                }
                Source::File(mut f, st) => {
                    hash_meta(&mut h, src, &st);
                    io::copy(&mut f, &mut h).map_err(fail)?;
                }
                Source::Special => h.update(src.as_bytes()),
            }
            h.update([0]);
        }
        Ok(hex::encode(h.finalize()))
    }
}

/// A context path without `.` components or leading `/`; `..` is refused, as Docker does.
fn clean(rel: &str) -> Result<String> {
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "{rel}: forbidden path outside the build context"
                )))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn hash_meta(h: &mut Sha256, rel: &str, st: &FileStat) {
    h.update(rel.as_bytes());
    h.update(st.st_mode.to_le_bytes());
    h.update(st.st_uid.to_le_bytes());
    h.update(st.st_gid.to_le_bytes());
}

/// Hashes one entry met by [`walk`]: its metadata, a link's target, a file's size and data.
fn hash_entry(
    h: &mut Sha256,
    rel: &str,
    st: &FileStat,
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<()> {
    hash_meta(h, rel, st);
    match dirfd::kind(st) {
        Kind::Symlink => h.update(dirfd::readlink_at(dir, name)?.as_encoded_bytes()),
        Kind::File => {
            h.update(st.st_size.to_le_bytes());
            io::copy(&mut dirfd::open_file_at(dir, name)?, h)?;
        }
        Kind::Dir | Kind::Special => {}
    }
    h.update([0]);
    Ok(())
}

/// What [`walk`] calls for each entry: its path (`prefix/...`), its lstat, and the directory
/// and name it was found as.
type Visit<'a> = dyn FnMut(&str, &FileStat, BorrowedFd<'_>, &CStr) -> io::Result<()> + 'a;

/// Visits every entry below `dir` in name order, never following a symlink, descending into
/// directories through descriptors.
fn walk(dir: BorrowedFd<'_>, prefix: &str, depth: usize, f: &mut Visit<'_>) -> io::Result<()> {
    if depth >= dirfd::MAX_DEPTH {
        return Err(dirfd::too_deep());
    }
    for name in dirfd::list_dir(dir)? {
        let Some(st) = dirfd::lstat_at(dir, &name)? else {
            continue;
        };
        let shown = name.to_string_lossy();
        let rel = if prefix.is_empty() {
            shown.into_owned()
        } else {
            format!("{prefix}/{shown}")
        };
        f(&rel, &st, dir, &name)?;
        if dirfd::kind(&st) == Kind::Dir {
            let child = dirfd::open_dir_at(dir, &name)?;
            walk(child.as_fd(), &rel, depth + 1, f)?;
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
pub(super) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// The context a client would send for `dir` (symlinks sent as symlinks), unpacked.
    pub(in crate::build) fn context_of(dir: &Path) -> (Context, tempfile::TempDir) {
        let mut b = tar::Builder::new(Vec::new());
        b.follow_symlinks(false);
        b.append_dir_all(".", dir).unwrap();
        let data = b.into_inner().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        (Context::unpack(&mut &data[..], tmp.path()).unwrap(), tmp)
    }

    /// A host directory outside any context, holding `secret` with a unique marker.
    fn host_secret() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let marker = format!("MARKER-{}", dir.path().display());
        std::fs::write(dir.path().join("secret"), &marker).unwrap();
        (dir, marker)
    }

    #[test]
    fn dockerfile_symlinks_resolve_inside_the_context() {
        let (host, marker) = host_secret();
        let src = tempfile::tempdir().unwrap();
        symlink(host.path().join("secret"), src.path().join("Dockerfile")).unwrap();
        let (ctx, _t) = context_of(src.path());
        let err = ctx.dockerfile("Dockerfile").unwrap_err().to_string();
        assert!(err.contains("Cannot locate specified Dockerfile"), "{err}");
        assert!(!err.contains(&marker), "{err}");
        // The same link, resolved with the context as `/`, finds the in-context file.
        let inside = src.path().join(host.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("secret"), "FROM scratch\n").unwrap();
        let (ctx, _t) = context_of(src.path());
        assert_eq!(ctx.dockerfile("Dockerfile").unwrap(), "FROM scratch\n");
    }

    #[test]
    fn non_regular_dockerfile_is_not_read() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("Dockerfile")).unwrap();
        let (ctx, _t) = context_of(src.path());
        assert!(ctx.dockerfile("Dockerfile").is_err());
        assert!(ctx.dockerfile("../Dockerfile").is_err());
    }

    #[test]
    fn dockerignore_symlink_outside_is_not_read() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("ignore"), "keep.txt\n").unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("keep.txt"), "k").unwrap();
        symlink(host.path().join("ignore"), src.path().join(".dockerignore")).unwrap();
        let (ctx, _t) = context_of(src.path());
        assert!(!ctx.ignored("keep.txt"));
        assert_eq!(ctx.sources("keep.txt").unwrap(), vec!["keep.txt"]);
    }

    #[test]
    fn sources_through_symlinks_stay_in_the_context() {
        let (host, marker) = host_secret();
        let src = tempfile::tempdir().unwrap();
        symlink(host.path(), src.path().join("e")).unwrap();
        std::fs::create_dir(src.path().join("d")).unwrap();
        symlink(host.path(), src.path().join("d/up")).unwrap();
        let (ctx, _t) = context_of(src.path());
        let err = ctx.sources("e/secret").unwrap_err().to_string();
        assert!(err.contains("not found"), "{err}");
        assert!(!err.contains(&marker), "{err}");
        // A directory source hashes its symlinks as links, never what they point at.
        let d = ctx.sources("d").unwrap();
        ctx.digest(&d).unwrap();
        assert!(ctx.sources("*/secret").is_err());
    }

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
            root: ScopedDir::open(dir.path()).unwrap(),
            _dir: dir,
            ignore: parse_ignore("*.log\n!keep.log\nbuild/\n"),
        };
        assert!(ctx.ignored("x.log"));
        assert!(!ctx.ignored("keep.log"));
        assert!(ctx.ignored("build/out/bin"));
        assert!(!ctx.ignored("src/main.rs"));
        assert!(clean("../etc/passwd").is_err());
    }
}
