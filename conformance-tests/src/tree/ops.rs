//! Small tree-building operations with exact results: modes are set explicitly after creation so
//! the process umask never matters, and every error names its path. Cases apply the same
//! operations to a layer's mount and to a plain reference directory, then compare snapshots.

use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::snapshot::{cstring, open_at};

fn at(e: io::Error, op: &str, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{op} {}: {e}", p.display()))
}

pub fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    std::fs::create_dir(p).map_err(|e| at(e, "mkdir", p))?;
    chmod(p, mode)
}

/// Creates `p` and any missing parents, each with mode 0755.
pub fn mkdir_all(p: &Path) -> io::Result<()> {
    std::fs::create_dir_all(p).map_err(|e| at(e, "mkdir -p", p))
}

/// Creates or truncates `p` with `data` and sets its mode.
pub fn write(p: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut f = std::fs::File::create(p).map_err(|e| at(e, "create", p))?;
    f.write_all(data).map_err(|e| at(e, "write", p))?;
    drop(f);
    chmod(p, mode)
}

/// Rewrites `p`'s content in place (same inode, mode kept).
pub fn overwrite(p: &Path, data: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p)
        .map_err(|e| at(e, "open for writing", p))?;
    f.write_all(data).map_err(|e| at(e, "write", p))
}

pub fn chmod(p: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
        .map_err(|e| at(e, "chmod", p))
}

pub fn chown(p: &Path, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| at(e, "chown", p))
}

pub fn symlink(target: &str, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|e| at(e, "symlink", link))
}

pub fn hardlink(existing: &Path, new: &Path) -> io::Result<()> {
    std::fs::hard_link(existing, new).map_err(|e| at(e, "link", new))
}

pub fn mkfifo(p: &Path, mode: u32) -> io::Result<()> {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| at(e.into(), "mkfifo", p))?;
    chmod(p, mode)
}

pub fn mknod_char(p: &Path, mode: u32, major: u64, minor: u64) -> io::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mknod(
        p,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .map_err(|e| at(e.into(), "mknod", p))?;
    chmod(p, mode)
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    xattr::set(p, name, value).map_err(|e| at(e, "setxattr", p))
}

/// Removes a file, a symlink or a whole directory tree.
pub fn remove(p: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(p).map_err(|e| at(e, "stat", p))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(p).map_err(|e| at(e, "rm -r", p))
    } else {
        std::fs::remove_file(p).map_err(|e| at(e, "unlink", p))
    }
}

/// Renames like mv(1): rename(2), or on EXDEV (an overlay without redirect_dir refuses to
/// rename a lower directory) copy everything with its metadata and remove the source. The case
/// checks the resulting tree, not the mechanism.
pub fn rename_like_mv(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            copy_tree(from, to)?;
            remove(from)
        }
        Err(e) => Err(at(e, "rename", from)),
    }
}

/// Copies a tree of directories, files and symlinks, keeping mode, owner and user xattrs.
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(from).map_err(|e| at(e, "stat", from))?;
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(from).map_err(|e| at(e, "readlink", from))?;
        std::os::unix::fs::symlink(target, to).map_err(|e| at(e, "symlink", to))?;
    } else if meta.is_dir() {
        std::fs::create_dir(to).map_err(|e| at(e, "mkdir", to))?;
        for entry in std::fs::read_dir(from).map_err(|e| at(e, "read directory", from))? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
    } else {
        std::fs::copy(from, to).map_err(|e| at(e, "copy", from))?;
    }
    if !meta.file_type().is_symlink() {
        for name in xattr::list(from)? {
            if let Some(v) = xattr::get(from, &name)? {
                xattr::set(to, &name, &v)?;
            }
        }
    }
    chown(to, meta.uid(), meta.gid())?;
    if !meta.file_type().is_symlink() {
        chmod(to, meta.mode() & 0o7777)?;
    }
    Ok(())
}

/// Deterministic pseudo-random bytes (xorshift), so content differs between seeds.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Sleeps until the wall clock's second changes (for mtime-granularity bugs).
pub fn sleep_to_next_second() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let left = 1_000_000_000 - now.subsec_nanos() as u64;
    std::thread::sleep(std::time::Duration::from_nanos(left + 5_000_000));
}

/// A directory opened by descriptor: builds trees whose paths exceed PATH_MAX, one component
/// at a time.
pub struct DirFd {
    fd: OwnedFd,
}

impl DirFd {
    pub fn open(p: &Path) -> io::Result<Self> {
        let c = cstring(p.as_os_str().as_bytes())?;
        Ok(Self {
            fd: open_at(libc::AT_FDCWD, &c, libc::O_RDONLY | libc::O_DIRECTORY)
                .map_err(|e| at(e, "open", p))?,
        })
    }

    fn shown(name: &[u8]) -> String {
        super::snapshot::show(name)
    }

    /// Creates directory `name` here with `mode` and opens it.
    pub fn mkdir(&self, name: &[u8], mode: u32) -> io::Result<DirFd> {
        let c = cstring(name)?;
        // SAFETY: `c` is NUL-terminated and the fd is open.
        if unsafe { libc::mkdirat(self.fd.as_raw_fd(), c.as_ptr(), 0o700) } < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mkdirat {}: {e}", Self::shown(name)),
            ));
        }
        let dir = self.open_dir(name)?;
        dir.fchmod(mode)?;
        Ok(dir)
    }

    pub fn open_dir(&self, name: &[u8]) -> io::Result<DirFd> {
        let c = cstring(name)?;
        let fd = open_at(
            self.fd.as_raw_fd(),
            &c,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("openat {}: {e}", Self::shown(name))))?;
        Ok(DirFd { fd })
    }

    fn fchmod(&self, mode: u32) -> io::Result<()> {
        // SAFETY: fchmod on an fd we own.
        if unsafe { libc::fchmod(self.fd.as_raw_fd(), mode) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Creates file `name` here with `data` and `mode`.
    pub fn write(&self, name: &[u8], data: &[u8], mode: u32) -> io::Result<()> {
        let c = cstring(name)?;
        let fd = open_at(
            self.fd.as_raw_fd(),
            &c,
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW,
        )
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", Self::shown(name))))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(data)?;
        let fd = f.as_raw_fd();
        // SAFETY: fchmod on the open file.
        if unsafe { libc::fchmod(fd, mode) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Creates a symlink `name` → `target` here.
    pub fn symlink(&self, target: &[u8], name: &[u8]) -> io::Result<()> {
        let (t, n) = (cstring(target)?, cstring(name)?);
        // SAFETY: both strings are NUL-terminated.
        if unsafe { libc::symlinkat(t.as_ptr(), self.fd.as_raw_fd(), n.as_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// `name` as an OsStr, for joining raw names onto paths.
pub fn os(name: &[u8]) -> &OsStr {
    OsStr::from_bytes(name)
}
