//! Thin wrappers over the fd-relative syscalls `copy_tree` is built on. Every call names one
//! component relative to an open directory, so trees deeper than PATH_MAX copy, and the
//! kernel does one lookup per call instead of a whole path walk.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

pub type Stat = libc::stat;

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn raw_openat(dir: libc::c_int, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<File> {
    // SAFETY: `name` is NUL-terminated; on success we own the returned descriptor.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Opens for reading without updating atime where allowed (O_NOATIME needs ownership or
/// CAP_FOWNER), so copying leaves the source as it was.
fn open_noatime(dir: libc::c_int, name: &CStr, flags: libc::c_int) -> io::Result<File> {
    match raw_openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => raw_openat(dir, name, flags, 0),
        other => other,
    }
}

const DIR_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

pub fn open_dir_path(path: &Path) -> io::Result<File> {
    let c = cstring(path.as_os_str().as_bytes())?;
    open_noatime(libc::AT_FDCWD, &c, DIR_FLAGS)
}

pub fn open_dir_at(dir: &File, name: &CStr) -> io::Result<File> {
    open_noatime(dir.as_raw_fd(), name, DIR_FLAGS)
}

pub fn open_file_at(dir: &File, name: &CStr) -> io::Result<File> {
    open_noatime(dir.as_raw_fd(), name, libc::O_RDONLY | libc::O_NOFOLLOW)
}

pub fn create_file_at(dir: &File, name: &CStr) -> io::Result<File> {
    raw_openat(
        dir.as_raw_fd(),
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )
}

/// Opens the directory `rel` below `root` one chunk of components at a time, each chunk well
/// under PATH_MAX, never following symlinks in the last component of a chunk.
pub fn open_dir_beneath(root: &File, rel: &Path) -> io::Result<File> {
    let mut current = open_dir_at(root, c".")?;
    let mut chunk: Vec<u8> = Vec::new();
    let comps: Vec<&OsStr> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    for (i, comp) in comps.iter().enumerate() {
        if !chunk.is_empty() {
            chunk.push(b'/');
        }
        chunk.extend_from_slice(comp.as_bytes());
        let last = i + 1 == comps.len();
        if last || chunk.len() + 1 + comps[i + 1].len() >= 3072 {
            current = open_dir_at(&current, &cstring(&chunk)?)?;
            chunk.clear();
        }
    }
    Ok(current)
}

pub fn stat_at(dir: &File, name: &CStr) -> io::Result<Stat> {
    // SAFETY: zeroed stat is a valid out-buffer; `name` is NUL-terminated.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    check(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn fstat(f: &File) -> io::Result<Stat> {
    // SAFETY: as above.
    let mut st: Stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(f.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// The names in a directory, `.` and `..` left out.
pub fn read_names(dir: &File) -> io::Result<Vec<CString>> {
    // A duplicate, because the directory stream takes ownership of its descriptor.
    let dup = dir.try_clone()?;
    let mut stream = nix::dir::Dir::from(OwnedFd::from(dup)).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in stream.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

pub fn mkdir_at(dir: &File, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })
}

pub fn readlink_at(dir: &File, name: &CStr) -> io::Result<CString> {
    cstring(nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)?.as_bytes())
}

pub fn symlink_at(target: &CStr, dir: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
}

pub fn mknod_at(dir: &File, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) })
}

pub fn link_at(old_dir: &File, old: &CStr, new_dir: &File, new: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
}

pub fn chown_at(dir: &File, name: &CStr, st: &Stat) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.st_uid,
            st.st_gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

pub fn chmod_at(dir: &File, name: &CStr, st: &Stat) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), st.st_mode & 0o7777, 0) })
}

pub fn fchown(f: &File, st: &Stat) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fchown(f.as_raw_fd(), st.st_uid, st.st_gid) })
}

pub fn fchmod(f: &File, st: &Stat) -> io::Result<()> {
    // SAFETY: plain syscall on an open descriptor.
    check(unsafe { libc::fchmod(f.as_raw_fd(), st.st_mode & 0o7777) })
}

pub fn timespecs(st: &Stat) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec,
        },
        libc::timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec,
        },
    ]
}

pub fn futimens(f: &File, st: &Stat) -> io::Result<()> {
    let t = timespecs(st);
    // SAFETY: `t` holds two timespecs.
    check(unsafe { libc::futimens(f.as_raw_fd(), t.as_ptr()) })
}

pub fn times_at(dir: &File, name: &CStr, st: &Stat) -> io::Result<()> {
    let t = timespecs(st);
    // SAFETY: `name` is NUL-terminated and `t` holds two timespecs.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// A short path to `name` in `dir` for the path-only l*xattr calls (symlinks and device
/// nodes cannot be opened for fgetxattr): `/proc/self/fd/N/name`.
pub fn proc_path(dir: &File, name: &CStr) -> PathBuf {
    let mut p = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    p.push(OsStr::from_bytes(name.to_bytes()));
    p
}

pub fn is_type(st: &Stat, kind: libc::mode_t) -> bool {
    st.st_mode & libc::S_IFMT == kind
}
