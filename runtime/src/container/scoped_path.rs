//! Paths inside a container's rootfs, resolved as if the rootfs were `/`: symlinks (absolute or
//! `..`) can never lead out of it. Uses `openat2(RESOLVE_IN_ROOT)`, so the kernel does the
//! scoping; we only create what is missing one component at a time.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use strata_core::{Error, IoContext, Result};

/// A rootfs opened once; paths are resolved against it.
pub(crate) struct ScopedRoot {
    root: OwnedFd,
    root_path: PathBuf,
}

/// Whether a missing final component becomes a directory or an empty file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leaf {
    Dir,
    File,
}

impl ScopedRoot {
    pub(crate) fn open(root: &Path) -> Result<ScopedRoot> {
        let root_path = std::fs::canonicalize(root).ctx("resolve rootfs", root)?;
        let fd = File::open(&root_path).ctx("open rootfs", &root_path)?;
        Ok(ScopedRoot {
            root: fd.into(),
            root_path,
        })
    }

    /// A root already open as a directory fd (a running container's `/proc/PID/root`, which
    /// shows its mounts); `label` names it in messages.
    pub(crate) fn from_dir_fd(root: OwnedFd, label: PathBuf) -> ScopedRoot {
        ScopedRoot {
            root,
            root_path: label,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.root_path
    }

    /// Opens `path` (container view) with `flags`, symlinks resolved inside the root.
    pub(crate) fn open_file(&self, path: &str, flags: i32) -> Result<File> {
        let fd = openat2_in_root(&self.root, &relative(path)?, flags as u64, 0).ctx(
            "open in rootfs",
            self.root_path.join(path.trim_start_matches('/')),
        )?;
        Ok(File::from(fd))
    }

    /// Makes sure `path` exists (creating missing directories 0755, and the leaf as `leaf`),
    /// and returns the host path it resolved to, which is inside the root. A dangling symlink
    /// on the way is followed (inside the root) and its target created, as Docker does.
    pub(crate) fn ensure(&self, path: &str, leaf: Leaf) -> Result<PathBuf> {
        let mut parts = normalize(Path::new(path))?;
        let host = |p: &Path| self.root_path.join(p);
        let mut i = 0;
        let mut hops = 0;
        let mut current = self
            .root
            .try_clone()
            .ctx("dup rootfs fd", &self.root_path)?;
        while i < parts.len() {
            let prefix: PathBuf = parts[..=i].iter().collect();
            let is_leaf = i + 1 == parts.len();
            let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
            match openat2_in_root(&self.root, &prefix, flags, 0) {
                Ok(fd) => {
                    if !is_leaf && !is_dir(&fd) {
                        return Err(Error::invalid(format!(
                            "{} inside the container is not a directory",
                            Path::new("/").join(&prefix).display()
                        )));
                    }
                    current = fd;
                    i += 1;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = CString::new(parts[i].as_bytes())
                        .map_err(|_| Error::invalid("path with a NUL byte"))?;
                    // `current` is the resolved parent, `name` one plain component.
                    if let Some(target) = read_link_at(&current, &name) {
                        hops += 1;
                        if hops > 40 {
                            return Err(Error::invalid(format!("too many symlinks in {path}")));
                        }
                        let base = if target.is_absolute() {
                            target
                        } else {
                            self.container_path(&current)?.join(target)
                        };
                        let mut rewritten = normalize(&base)?;
                        rewritten.extend(parts.drain(i + 1..));
                        parts = rewritten;
                        i = 0;
                        current = self
                            .root
                            .try_clone()
                            .ctx("dup rootfs fd", &self.root_path)?;
                        continue;
                    }
                    let r = if is_leaf && leaf == Leaf::File {
                        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC;
                        let fd = unsafe {
                            libc::openat(current.as_raw_fd(), name.as_ptr(), flags, 0o644)
                        };
                        if fd >= 0 {
                            drop(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                        fd
                    } else {
                        unsafe { libc::mkdirat(current.as_raw_fd(), name.as_ptr(), 0o755) }
                    };
                    if r < 0 {
                        check_exists(std::io::Error::last_os_error())
                            .ctx("create", host(&prefix))?;
                    }
                }
                Err(e) => return Err(Error::io("open in rootfs", host(&prefix), e)),
            }
        }
        let resolved = self.fd_path(&current)?;
        if !resolved.starts_with(&self.root_path) {
            return Err(Error::invalid(format!(
                "{path} resolves to {} outside the container root",
                resolved.display()
            )));
        }
        Ok(resolved)
    }

    fn fd_path(&self, fd: &OwnedFd) -> Result<PathBuf> {
        let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
        std::fs::read_link(&link).ctx("readlink", &link)
    }

    /// The container path of a directory opened inside the root.
    fn container_path(&self, fd: &OwnedFd) -> Result<PathBuf> {
        let host = self.fd_path(fd)?;
        let rel = host.strip_prefix(&self.root_path).map_err(|_| {
            Error::invalid(format!("{} is outside the container root", host.display()))
        })?;
        Ok(Path::new("/").join(rel))
    }
}

/// The symlink target of `name` in `dir`, or `None` when it is not a symlink.
fn read_link_at(dir: &OwnedFd, name: &CString) -> Option<PathBuf> {
    nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name.as_c_str())
        .ok()
        .map(PathBuf::from)
}

/// Lexically cleans a container path into plain components; `..` stops at the root, as it
/// does inside a chroot.
fn normalize(path: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p.to_os_string()),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn check_exists(e: std::io::Error) -> std::io::Result<()> {
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

fn is_dir(fd: &OwnedFd) -> bool {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let empty = c"";
    let r = unsafe { libc::fstatat(fd.as_raw_fd(), empty.as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    r == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

/// A container path as a relative path without `.`/`..` tricks (openat2 would scope them
/// anyway; refusing them gives a clearer error).
fn relative(path: &str) -> Result<PathBuf> {
    let p = Path::new(path);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::invalid(format!(
            "container path {path:?} contains '..'"
        )));
    }
    let rel: PathBuf = p
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    })
}

pub(crate) fn openat2_in_root(
    root: &OwnedFd,
    path: &Path,
    flags: u64,
    mode: u64,
) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags | libc::O_CLOEXEC as u64;
    how.mode = mode;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    let r = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(unsafe { OwnedFd::from_raw_fd(r as i32) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        symlink(&outside, root.join("abs")).unwrap();
        symlink("../../outside", root.join("rel")).unwrap();
        let scoped = ScopedRoot::open(&root).unwrap();
        let canon_root = std::fs::canonicalize(&root).unwrap();

        let a = scoped.ensure("/abs/x", Leaf::Dir).unwrap();
        assert!(a.starts_with(&canon_root), "{a:?}");
        let b = scoped.ensure("/rel/y", Leaf::File).unwrap();
        assert!(b.starts_with(&canon_root), "{b:?}");
        assert!(b.is_file());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);

        let plain = scoped.ensure("/a/b/c", Leaf::Dir).unwrap();
        assert_eq!(plain, canon_root.join("a/b/c"));
        assert!(plain.is_dir());
        // '..' cannot climb above the root.
        assert_eq!(
            scoped.ensure("/a/../../b", Leaf::Dir).unwrap(),
            canon_root.join("b")
        );
    }

    #[test]
    fn a_file_in_the_middle_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), "x").unwrap();
        let scoped = ScopedRoot::open(tmp.path()).unwrap();
        let err = scoped.ensure("/f/sub", Leaf::Dir).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
