//! A directory treated as `/`: the build context or the rootfs of the layer a COPY writes.
//! Paths are resolved inside it as Docker's classic builder does (symlinks followed, but an
//! absolute target or a `..` never leaves it): reads go through `openat2(RESOLVE_IN_ROOT)`,
//! writes through [`ScopedDir::locate`], which walks one component at a time on directory fds
//! so it can also create what is missing and follow a dangling symlink to where it points.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::FileStat;
use strata_core::{Error, Result};

use super::dirfd::{self, Kind, Owner};

/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_SYMLINKS: usize = 40;

pub(super) struct ScopedDir {
    fd: OwnedFd,
    path: PathBuf,
}

/// Where a path leads: the entry `name` in the directory `parent` (both inside the root), and
/// what is there now. `name` is `None` when the path is a directory reached as a whole (`/`).
pub(super) struct Located {
    pub parent: OwnedFd,
    pub name: Option<CString>,
    pub stat: Option<FileStat>,
}

impl ScopedDir {
    /// Opens `path`, a directory the daemon made itself (so a symlink in *it* is trusted).
    pub(super) fn open(path: &Path) -> Result<ScopedDir> {
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        Ok(ScopedDir {
            fd: file.into(),
            path: path.to_path_buf(),
        })
    }

    pub(super) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Opens `path` with `flags`, resolved with the root as `/`. O_CLOEXEC is added.
    pub(super) fn open_in_root(&self, path: &str, flags: OFlag) -> io::Result<OwnedFd> {
        let rel = path.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let raw = nix::fcntl::openat2(self.fd.as_raw_fd(), rel, how)?;
        Ok(dirfd::owned(raw))
    }

    /// Opens the regular file `path` for reading (symlinks followed inside the root). O_NONBLOCK
    /// so a fifo cannot hang the build; anything but a regular file is refused before a read.
    pub(super) fn open_regular(&self, path: &str) -> io::Result<File> {
        // O_PATH first: opening a device or fifo, even to refuse it, can have side effects.
        let probe = self.open_in_root(path, OFlag::O_PATH)?;
        if dirfd::kind(&dirfd::fstat(&probe)?) != Kind::File {
            return Err(dirfd::not_regular());
        }
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        dirfd::regular(File::from(self.open_in_root(path, flags)?))
    }

    /// The content of the regular file `path`, at most `limit` bytes (more is an error).
    pub(super) fn read_regular(&self, path: &str, limit: u64) -> io::Result<Vec<u8>> {
        let mut data = Vec::new();
        self.open_regular(path)?
            .take(limit + 1)
            .read_to_end(&mut data)?;
        if data.len() as u64 > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("larger than {limit} bytes"),
            ));
        }
        Ok(data)
    }

    /// Resolves `path` (absolute inside the root) for writing: every component but the last
    /// must be a directory, and a missing one is created (mode 0755, owned by `owner`), as
    /// Docker's MkdirAll does; symlinks, the last one too and dangling ones, are followed
    /// inside the root. Nothing is ever done through a path: each step is a `*at` call on the
    /// directory fd reached so far, with O_NOFOLLOW.
    pub(super) fn locate(&self, path: &str, owner: Owner) -> Result<Located> {
        let fail = |e: io::Error| Error::io("resolve in the image", self.path.join(path), e);
        // Directories from the root down to the current one; the root itself is implicit.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut pending = components(path.as_ref());
        let mut hops = 0;
        loop {
            let current = stack.last().unwrap_or(&self.fd).as_fd();
            let Some(part) = pending.pop() else {
                let parent = current.try_clone_to_owned().map_err(fail)?;
                let stat = dirfd::fstat(&parent).map_err(fail)?;
                return Ok(Located {
                    parent,
                    name: None,
                    stat: Some(stat),
                });
            };
            if part == ".." {
                stack.pop();
                continue;
            }
            let name = dirfd::cname(part.as_bytes()).map_err(fail)?;
            let stat = dirfd::lstat_at(current, &name).map_err(fail)?;
            let kind = stat.as_ref().map(dirfd::kind);
            if kind == Some(Kind::Symlink) {
                hops += 1;
                if hops > MAX_SYMLINKS {
                    return Err(fail(io::Error::from_raw_os_error(libc::ELOOP)));
                }
                let target = dirfd::readlink_at(current, &name).map_err(fail)?;
                if Path::new(&target).is_absolute() {
                    stack.clear();
                }
                pending.extend(components(target.as_ref()));
                continue;
            }
            if pending.is_empty() {
                let parent = current.try_clone_to_owned().map_err(fail)?;
                return Ok(Located {
                    parent,
                    name: Some(name),
                    stat,
                });
            }
            let next = match kind {
                Some(Kind::Dir) => dirfd::open_dir_at(current, &name),
                None => make_dir(current, &name, owner),
                Some(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            };
            stack.push(next.map_err(fail)?);
        }
    }

    /// The directory `at` leads to, created (0755, `owner`) when missing.
    pub(super) fn ensure_dir(&self, at: &Located, owner: Owner) -> Result<OwnedFd> {
        let Some(name) = &at.name else {
            return at
                .parent
                .try_clone()
                .map_err(|e| Error::io("dup", &self.path, e));
        };
        let fd = match at.stat.as_ref().map(dirfd::kind) {
            Some(Kind::Dir) => dirfd::open_dir_at(&at.parent, name),
            None => make_dir(at.parent.as_fd(), name, owner),
            Some(_) => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        };
        let shown = Path::new(std::ffi::OsStr::from_bytes(name.as_bytes()));
        fd.map_err(|e| Error::io("open directory in the image", shown, e))
    }
}

/// Makes the directory `name` in `dir` (0755, `owner`) and opens it; one that appeared in the
/// meantime is used as it is.
fn make_dir(dir: std::os::fd::BorrowedFd<'_>, name: &CString, owner: Owner) -> io::Result<OwnedFd> {
    match dirfd::mkdir_at(dir, name, 0o755) {
        Ok(()) => {
            let fd = dirfd::open_dir_at(dir, name)?;
            nix::unistd::fchown(fd.as_raw_fd(), Some(owner.0.into()), Some(owner.1.into()))?;
            // Explicit, so the daemon's umask does not decide the mode.
            nix::sys::stat::fchmod(
                fd.as_raw_fd(),
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            )?;
            Ok(fd)
        }
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => dirfd::open_dir_at(dir, name),
        Err(e) => Err(e),
    }
}

/// The components of `path`, reversed (the next one last): plain names and `..`.
fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .rev()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn fd_path(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink("/", root.join("top")).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../../etc", root.join("up")).unwrap();
        let scoped = ScopedDir::open(&root).unwrap();

        let at = scoped.locate("/top/etc/x", (0, 0)).unwrap();
        assert_eq!(fd_path(&at.parent), root.join("etc"));
        assert_eq!(at.name.as_deref(), Some(c"x"));
        assert!(at.stat.is_none());
        let at = scoped.locate("/up/y", (0, 0)).unwrap();
        assert_eq!(fd_path(&at.parent), root.join("etc"));
        // A dangling absolute symlink leads to its target inside the root, made on the way.
        let at = scoped.locate("/abs/z", (5, 6)).unwrap();
        assert_eq!(
            fd_path(&at.parent),
            root.join(outside.strip_prefix("/").unwrap())
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let made = std::fs::metadata(root.join("tmp")).unwrap();
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&made), 5);
        // The last component, when a symlink, is followed too; `/` is the root itself.
        let at = scoped.locate("/top", (0, 0)).unwrap();
        assert!(at.name.is_none());
        assert_eq!(fd_path(&at.parent), root);
        // The same as the kernel's RESOLVE_IN_ROOT for paths that exist.
        let fd = scoped.open_in_root("/up/../abs", OFlag::O_PATH).unwrap();
        assert_eq!(fd_path(&fd), root.join(outside.strip_prefix("/").unwrap()));
    }

    #[test]
    fn locate_agrees_with_resolve_in_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/f"), "f").unwrap();
        symlink("/a/b", root.join("abs")).unwrap();
        symlink("../../../../a", root.join("a/b/up")).unwrap();
        symlink("c/../../b/./c", root.join("a/b/rel")).unwrap();
        symlink("/", root.join("a/slash")).unwrap();
        let scoped = ScopedDir::open(root).unwrap();
        for path in [
            "/abs/c/f",
            "/a/b/up/b/rel/f",
            "/a/slash/a/slash/abs/../b/c",
            "/../../a/b/rel",
            "/abs/up/slash",
        ] {
            let kernel = fd_path(&scoped.open_in_root(path, OFlag::O_PATH).unwrap());
            let at = scoped.locate(path, (0, 0)).unwrap();
            let ours = match &at.name {
                Some(n) => fd_path(&at.parent).join(n.to_str().unwrap()),
                None => fd_path(&at.parent),
            };
            assert_eq!(ours, kernel, "{path}");
        }
    }

    #[test]
    fn a_file_in_the_middle_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        let scoped = ScopedDir::open(tmp.path()).unwrap();
        assert!(scoped.locate("/f/sub", (0, 0)).is_err());
    }

    #[test]
    fn reads_only_regular_files_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let secret = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(secret.path(), "secret").unwrap();
        symlink(secret.path(), tmp.path().join("out")).unwrap();
        nix::unistd::mkfifo(
            &tmp.path().join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        std::fs::write(tmp.path().join("big"), vec![b'x'; 100]).unwrap();
        let scoped = ScopedDir::open(tmp.path()).unwrap();
        let e = scoped.read_regular("out", 1000).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(scoped.read_regular("fifo", 1000).is_err());
        assert!(scoped.read_regular("big", 10).is_err());
        assert_eq!(scoped.read_regular("big", 100).unwrap().len(), 100);
    }
}
