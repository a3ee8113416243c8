//! `docker cp`: stat, read and write paths inside a container's root, with Docker's path rules
//! (moby `container.ResolvePath`): the path is absolute in the container; every directory on
//! the way is resolved inside the root (symlinks included, never leaving it: openat2
//! RESOLVE_IN_ROOT); the final component is taken as it is (a symlink is reported and copied
//! as a symlink, `linkTarget` telling where it leads) unless the path ends in `/` or `/.`,
//! which asks for the directory it leads to. Tar entries are named after the requested path's
//! base name, whatever it resolved to.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Serialize;
use strata_core::{Error, Result};

use super::fsops;
use super::rootfs::MountedRoot;
use super::tar_tree::Top;
use super::Container;
use crate::container::scoped_path::ScopedRoot;
use crate::daemon::Daemon;

/// Docker's `ContainerPathStat`, sent base64-encoded in `X-Docker-Container-Path-Stat`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    /// Go's `os.FileMode` bits (the CLI tests `IsDir()` and `ModeSymlink`).
    pub mode: u32,
    pub mtime: String,
    #[serde(rename = "linkTarget")]
    pub link_target: String,
}

/// A container path after resolution.
pub(crate) struct Resolved {
    /// The path as the container sees it, cleaned (`/a/b`).
    pub abs: String,
    /// Its base name: the name of the top tar entry (`/` for the root).
    pub base: String,
    pub target: Target,
}

pub(crate) enum Target {
    /// The final component inside its resolved parent, not followed.
    Entry { parent: OwnedFd, name: CString },
    /// A directory reached through the whole path (the root, or a path ending in `/`).
    Dir(OwnedFd),
}

/// Resolves `path` inside the root (see the module comment).
pub(crate) fn resolve(root: &ScopedRoot, path: &str) -> Result<Resolved> {
    let wants_dir = path.ends_with('/') || path.ends_with("/.") || path == ".";
    let parts = clean(path);
    let abs = format!("/{}", parts.join("/"));
    let not_found = |e: Error| match e {
        Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
            Error::not_found(format!("No such container:path: {path}"))
        }
        Error::Io { source, .. } if source.raw_os_error() == Some(libc::ENOTDIR) => {
            Error::invalid(format!("{path}: not a directory"))
        }
        Error::Io { source, .. } if source.raw_os_error() == Some(libc::ELOOP) => {
            Error::invalid(format!("{path}: too many levels of symbolic links"))
        }
        other => other,
    };
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let Some((last, dirs)) = parts.split_last().filter(|_| !wants_dir) else {
        let dir = root.open_file(&abs, dir_flags).map_err(not_found)?;
        let base = parts.last().cloned().unwrap_or_else(|| "/".into());
        return Ok(Resolved {
            abs,
            base,
            target: Target::Dir(dir.into()),
        });
    };
    let parent = root
        .open_file(&format!("/{}", dirs.join("/")), dir_flags)
        .map_err(not_found)?;
    let name = fsops::cname(last.as_bytes()).map_err(|_| Error::invalid("NUL in path"))?;
    // The final component must exist (as anything, a dangling symlink included).
    fsops::lstat_at(parent.as_fd(), &name).map_err(|e| not_found(Error::io("stat", &abs, e)))?;
    Ok(Resolved {
        abs,
        base: last.clone(),
        target: Target::Entry {
            parent: parent.into(),
            name,
        },
    })
}

/// Lexically cleans a container path into plain components; `..` stops at the root.
fn clean(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

/// `HEAD`/`GET .../archive`'s stat of a resolved path.
pub(crate) fn stat(root: &ScopedRoot, r: &Resolved) -> Result<PathStat> {
    let st = match &r.target {
        Target::Entry { parent, name } => fsops::lstat_at(parent.as_fd(), name),
        Target::Dir(dir) => fsops::fstat(dir.as_fd()),
    }
    .map_err(|e| Error::io("stat", &r.abs, e))?;
    let link_target = if fsops::is_symlink(&st) {
        link_target(root, &r.abs)?
    } else {
        String::new()
    };
    Ok(PathStat {
        name: r.base.clone(),
        size: st.st_size,
        mode: go_file_mode(st.st_mode),
        mtime: chrono::DateTime::from_timestamp(st.st_mtime, st.st_mtime_nsec as u32)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        link_target,
    })
}

/// Where a symlink finally leads, as a container path (Docker evaluates it fully in scope);
/// a dangling one is reported by its own path, resolved as far as it goes.
fn link_target(root: &ScopedRoot, abs: &str) -> Result<String> {
    let Ok(fd) = root.open_file(abs, libc::O_PATH) else {
        return Ok(abs.to_string());
    };
    let fd: OwnedFd = fd.into();
    let host = fsops::fd_path(fd.as_fd()).map_err(|e| Error::io("readlink", abs, e))?;
    let rel = host
        .strip_prefix(root.path())
        .map_err(|_| Error::invalid(format!("{abs} resolves outside the container root")))?;
    Ok(Path::new("/").join(rel).to_string_lossy().into_owned())
}

/// Go's `os.FileMode` from a Unix `st_mode`.
fn go_file_mode(mode: u32) -> u32 {
    const DIR: u32 = 1 << 31;
    const SYMLINK: u32 = 1 << 27;
    const DEVICE: u32 = 1 << 26;
    const NAMED_PIPE: u32 = 1 << 25;
    const SOCKET: u32 = 1 << 24;
    const SETUID: u32 = 1 << 23;
    const SETGID: u32 = 1 << 22;
    const CHAR_DEVICE: u32 = 1 << 21;
    const STICKY: u32 = 1 << 20;
    let mut m = mode & 0o777;
    m |= match mode & libc::S_IFMT {
        libc::S_IFDIR => DIR,
        libc::S_IFLNK => SYMLINK,
        libc::S_IFIFO => NAMED_PIPE,
        libc::S_IFSOCK => SOCKET,
        libc::S_IFBLK => DEVICE,
        libc::S_IFCHR => DEVICE | CHAR_DEVICE,
        _ => 0,
    };
    for (bit, go) in [
        (libc::S_ISUID, SETUID),
        (libc::S_ISGID, SETGID),
        (libc::S_ISVTX, STICKY),
    ] {
        if mode & bit != 0 {
            m |= go;
        }
    }
    m
}

/// What `write_tree` should write for a resolved path.
pub(crate) fn tar_top(r: Resolved) -> Top {
    match r.target {
        Target::Entry { parent, name } => Top::Entry {
            parent,
            name,
            tar_name: r.base,
        },
        Target::Dir(dir) => Top::Dir {
            dir,
            tar_name: if r.base == "/" { ".".into() } else { r.base },
        },
    }
}

/// Options of an extraction (`PUT .../archive`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractOptions {
    /// Refuse to replace a directory with a non-directory or the reverse.
    pub no_overwrite_dir_non_dir: bool,
    /// Owner of everything extracted: the container user's uid and gid (`docker cp -a`).
    pub owner: Option<(u32, u32)>,
}

/// Extracts a tar into the directory `path` of a mounted root (see `extract.rs`).
pub fn extract(
    root: &MountedRoot,
    path: &str,
    input: &mut dyn Read,
    opts: ExtractOptions,
) -> Result<()> {
    let r = resolve(root.scoped(), path)?;
    let dir = match r.target {
        Target::Dir(dir) => dir,
        Target::Entry { parent, name } => {
            let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY;
            match root.scoped().open_file(&r.abs, dir_flags) {
                Ok(f) => f.into(),
                Err(_) => {
                    let st = fsops::lstat_at(parent.as_fd(), &name)
                        .map_err(|e| Error::io("stat", &r.abs, e))?;
                    return Err(if fsops::is_dir(&st) {
                        Error::invalid(format!("cannot open {path}"))
                    } else {
                        Error::invalid("extraction point is not a directory")
                    });
                }
            }
        }
    };
    super::extract::extract_into(dir, &PathBuf::from(&r.abs), input, opts)
}

/// `HEAD .../archive`: the stat of a path.
pub async fn stat_path(d: &Daemon, c: &Container, path: &str) -> Result<PathStat> {
    let root = MountedRoot::mount(d, c).await?;
    let st = resolve(root.scoped(), path).and_then(|r| stat(root.scoped(), &r));
    root.release().await;
    st
}

/// `GET .../archive`: the stat of a path and its content as a streamed tar.
pub async fn read_path(
    d: &Daemon,
    c: &Container,
    path: &str,
) -> Result<(
    PathStat,
    impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
)> {
    let root = MountedRoot::mount(d, c).await?;
    let found = resolve(root.scoped(), path).and_then(|r| Ok((stat(root.scoped(), &r)?, r)));
    match found {
        Ok((st, r)) => Ok((st, super::export::stream_tree(root, tar_top(r)))),
        Err(e) => {
            root.release().await;
            Err(e)
        }
    }
}

/// `PUT .../archive`: extracts the client's tar into the directory `path`. `copy_uid_gid`
/// makes the container's user own everything extracted, as Docker does.
pub async fn write_path(
    d: &Daemon,
    c: &Container,
    path: &str,
    mut input: Box<dyn Read + Send>,
    no_overwrite_dir_non_dir: bool,
    copy_uid_gid: bool,
) -> Result<()> {
    let rec = c.snapshot();
    if rec.host_config.readonly_rootfs {
        return Err(Error::invalid("container rootfs is marked read-only"));
    }
    let root = MountedRoot::mount(d, c).await?;
    let user = rec.config.user.clone();
    let path = path.to_string();
    let written = tokio::task::spawn_blocking(move || {
        let owner = if copy_uid_gid && !user.is_empty() {
            let u = crate::container::user::resolve(root.scoped(), &user)?;
            Some((u.uid, u.gid))
        } else {
            None
        };
        let opts = ExtractOptions {
            no_overwrite_dir_non_dir,
            owner,
        };
        let result = extract(&root, &path, &mut input, opts);
        root.release_blocking();
        result
    })
    .await
    .map_err(|e| Error::Other(format!("copy into the container: {e}")))?;
    // The layer changed: a stopped container's kept sizes are measured again (a running
    // one's are measured on demand anyway).
    d.sizes.invalidate(&rec.id);
    if !c.is_running() {
        super::record_sizes(d.containers.root.clone(), d.layers.clone(), c).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_like_a_chroot() {
        assert_eq!(clean("/a/../../b/./c/"), vec!["b", "c"]);
        assert!(clean("/").is_empty());
        assert!(clean("../..").is_empty());
    }

    #[test]
    fn file_modes_follow_go() {
        assert_eq!(go_file_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_file_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(go_file_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
    }

    /// Guards against the escape: a symlink to `/` inside the root leads back into the root,
    /// never to the host's files.
    #[test]
    fn symlinks_to_the_host_root_stay_inside() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("etc")).unwrap();
        std::fs::write(tmp.path().join("etc/shadow"), "container's").unwrap();
        std::os::unix::fs::symlink("/", tmp.path().join("link")).unwrap();
        let root = ScopedRoot::open(tmp.path()).unwrap();
        let r = resolve(&root, "/link/etc/shadow").unwrap();
        let Target::Entry { parent, .. } = &r.target else {
            panic!("a file is an entry");
        };
        let parent_path = fsops::fd_path(parent.as_fd()).unwrap();
        assert_eq!(parent_path, root.path().join("etc"));
        assert_eq!(stat(&root, &r).unwrap().size, "container's".len() as i64);
        let link = resolve(&root, "/link").unwrap();
        assert_eq!(stat(&root, &link).unwrap().link_target, "/");
        std::os::unix::fs::symlink("loop", tmp.path().join("loop")).unwrap();
        let err = resolve(&root, "/loop/x")
            .err()
            .expect("a symlink loop is refused");
        assert!(err.to_string().contains("symbolic links"), "{err}");
    }
}
