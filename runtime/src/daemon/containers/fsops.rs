//! fd-relative file operations for reading and writing inside a container's root: every call
//! takes a directory fd and one plain name (never a joined host path), and nothing follows a
//! symlink unless asked. Paths from API clients are resolved with `ScopedRoot` first.

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub(crate) fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

/// `openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW)`.
pub(crate) fn open_at(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // SAFETY: valid fd and C string; the new fd is owned below.
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    // SAFETY: fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A directory inside `dir` opened for listing, refusing a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY)
}

/// A regular file opened for reading: O_NOFOLLOW and O_NONBLOCK (a fifo swapped in after the
/// lstat must not hang the reader), and the opened inode must still be a regular file.
pub(crate) fn open_regular_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<std::fs::File> {
    let fd = open_at(
        dir,
        name,
        libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK,
    )?;
    let st = fstat(fd.as_fd())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a regular file any more",
        ));
    }
    Ok(std::fs::File::from(fd))
}

pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let flags = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    Ok(nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, flags)?)
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    Ok(nix::sys::stat::fstat(fd.as_raw_fd())?)
}

pub(crate) fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OsString> {
    Ok(nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)?)
}

/// The names in a directory (without `.` and `..`), sorted so output is deterministic.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // A fresh fd: the directory stream owns and closes it.
    let own = open_at(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(std::os::fd::IntoRawFd::into_raw_fd(own))
        .map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Where an fd points, as the kernel names it (a host path; only compared, never opened).
pub(crate) fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}
