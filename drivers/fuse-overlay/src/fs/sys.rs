//! Thin, allocation-free wrappers over the *at() syscalls the filesystem is built on. Names
//! from FUSE requests are copied into a stack buffer to get their NUL terminator, so a lookup
//! or a create never touches the heap.

use std::ffi::{CStr, OsStr};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Longest file name Linux accepts (NAME_MAX) plus the NUL.
const NAME_BUF: usize = 256;
/// `/proc/self/fd/<fd>/<name>`: prefix + digits + `/` + name + NUL.
const PROC_BUF: usize = 32 + NAME_BUF;

fn last_err<T>() -> io::Result<T> {
    Err(io::Error::last_os_error())
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        last_err()
    } else {
        Ok(())
    }
}

/// Calls `f` with `name` as a C string held on the stack. Names with a NUL or longer than
/// NAME_MAX are refused as the kernel would refuse them.
pub fn with_name<R>(name: &OsStr, f: impl FnOnce(&CStr) -> io::Result<R>) -> io::Result<R> {
    let bytes = name.as_bytes();
    if bytes.len() >= NAME_BUF {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut buf = [0u8; NAME_BUF];
    buf[..bytes.len()].copy_from_slice(bytes);
    let c = CStr::from_bytes_until_nul(&buf[..=bytes.len()])
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if c.to_bytes().len() != bytes.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    f(c)
}

/// Calls `f` with `/proc/self/fd/<dirfd>/<name>` (or `/proc/self/fd/<dirfd>` for an empty
/// name): the path through which xattr calls reach an entry without following a final symlink.
pub fn with_proc_path<R>(
    dirfd: RawFd,
    name: &OsStr,
    f: impl FnOnce(&CStr) -> io::Result<R>,
) -> io::Result<R> {
    use std::io::Write;
    let bytes = name.as_bytes();
    if bytes.len() >= NAME_BUF {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut buf = [0u8; PROC_BUF];
    let mut cursor = io::Cursor::new(&mut buf[..]);
    write!(cursor, "/proc/self/fd/{dirfd}")?;
    if !bytes.is_empty() {
        cursor.write_all(b"/")?;
        cursor.write_all(bytes)?;
    }
    let len = cursor.position() as usize;
    let c = CStr::from_bytes_until_nul(&buf[..=len])
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    if c.to_bytes().len() != len {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    f(c)
}

pub fn empty() -> &'static CStr {
    c""
}

/// lstat relative to a directory; an empty name stats the fd itself.
pub fn fstatat(dirfd: RawFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is NUL terminated and st is a valid out pointer.
    check(unsafe { libc::fstatat(dirfd, name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: fstatat succeeded, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    fstatat(fd, empty())
}

pub fn openat(dirfd: RawFd, name: &CStr, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: name is NUL terminated.
    let fd = unsafe { libc::openat(dirfd, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: the kernel just gave us this fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a directory for use as a base of *at() calls, for readdir and for fgetxattr.
pub fn open_dir(dirfd: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    openat(
        dirfd,
        if name.is_empty() { c"." } else { name },
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

pub fn mkdirat(dirfd: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: name is NUL terminated.
    check(unsafe { libc::mkdirat(dirfd, name.as_ptr(), mode) })
}

pub fn mknodat(dirfd: RawFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    // SAFETY: name is NUL terminated.
    check(unsafe { libc::mknodat(dirfd, name.as_ptr(), mode, rdev) })
}

pub fn symlinkat(target: &CStr, dirfd: RawFd, name: &CStr) -> io::Result<()> {
    // SAFETY: both strings are NUL terminated.
    check(unsafe { libc::symlinkat(target.as_ptr(), dirfd, name.as_ptr()) })
}

pub fn unlinkat(dirfd: RawFd, name: &CStr, dir: bool) -> io::Result<()> {
    let flags = if dir { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: name is NUL terminated.
    check(unsafe { libc::unlinkat(dirfd, name.as_ptr(), flags) })
}

pub fn renameat2(
    olddir: RawFd,
    old: &CStr,
    newdir: RawFd,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    // SAFETY: both names are NUL terminated.
    check(unsafe { libc::renameat2(olddir, old.as_ptr(), newdir, new.as_ptr(), flags) })
}

pub fn linkat(olddir: RawFd, old: &CStr, newdir: RawFd, new: &CStr) -> io::Result<()> {
    // SAFETY: both names are NUL terminated.
    check(unsafe { libc::linkat(olddir, old.as_ptr(), newdir, new.as_ptr(), 0) })
}

pub fn readlinkat(dirfd: RawFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buf is writable for its length; name is NUL terminated.
    let n = unsafe { libc::readlinkat(dirfd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return last_err();
    }
    buf.truncate(n as usize);
    Ok(buf)
}

pub fn fchownat(dirfd: RawFd, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: name is NUL terminated.
    check(unsafe { libc::fchownat(dirfd, name.as_ptr(), uid, gid, flags) })
}

/// chmod of a non-symlink entry (Linux cannot chmod symlinks).
pub fn fchmodat(dirfd: RawFd, name: &CStr, mode: u32) -> io::Result<()> {
    if name.is_empty() {
        // SAFETY: plain fchmod on an fd we own.
        return check(unsafe { libc::fchmod(dirfd, mode) });
    }
    // SAFETY: name is NUL terminated.
    check(unsafe { libc::fchmodat(dirfd, name.as_ptr(), mode, 0) })
}

/// Sets times without following a final symlink; `None` leaves that time alone.
pub fn utimensat(
    dirfd: RawFd,
    name: &CStr,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let times = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    if name.is_empty() {
        // SAFETY: times has two entries.
        return check(unsafe { libc::futimens(dirfd, times.as_ptr()) });
    }
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    // SAFETY: name is NUL terminated; times has two entries.
    check(unsafe { libc::utimensat(dirfd, name.as_ptr(), times.as_ptr(), flags) })
}

pub fn ftruncate(fd: RawFd, size: u64) -> io::Result<()> {
    // SAFETY: plain syscall on an fd.
    check(unsafe { libc::ftruncate(fd, size as libc::off_t) })
}

pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of buf.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
    }
    Ok(done)
}

pub fn pwrite(fd: RawFd, data: &[u8], offset: u64) -> io::Result<usize> {
    // SAFETY: data is readable for its length.
    let n = unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), offset as libc::off_t) };
    if n < 0 {
        return last_err();
    }
    Ok(n as usize)
}

pub fn fsync(fd: RawFd, datasync: bool) -> io::Result<()> {
    // SAFETY: plain syscalls on an fd.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
}

pub fn close(fd: RawFd) {
    // SAFETY: the caller hands over ownership of fd.
    unsafe { libc::close(fd) };
}

/// Borrows a raw fd the caller knows to be open (a FUSE file handle we handed out).
pub fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the kernel only sends back file handles we returned from open and not yet
    // released; release closes them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

pub fn fgetxattr(fd: RawFd, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length; name is NUL terminated.
    let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return last_err();
    }
    Ok(n as usize)
}

pub fn fsetxattr(fd: RawFd, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: value is readable for its length; name is NUL terminated.
    check(unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), flags) })
}

pub fn lgetxattr(path: &CStr, name: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length; strings are NUL terminated.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return last_err();
    }
    Ok(n as usize)
}

pub fn lsetxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    // SAFETY: value is readable for its length; strings are NUL terminated.
    check(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

pub fn llistxattr(path: &CStr, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is writable for its length; path is NUL terminated.
    let n = unsafe { libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return last_err();
    }
    Ok(n as usize)
}

pub fn lremovexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    // SAFETY: strings are NUL terminated.
    check(unsafe { libc::lremovexattr(path.as_ptr(), name.as_ptr()) })
}

/// Reads a whole xattr value (sized by a first probe), or None when it is absent.
pub fn get_xattr_vec(path: &CStr, name: &CStr) -> io::Result<Option<Vec<u8>>> {
    loop {
        let size = match lgetxattr(path, name, &mut []) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut buf = vec![0u8; size];
        match lgetxattr(path, name, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// Lists xattr names (NUL separated), sized by a first probe.
pub fn list_xattr_vec(path: &CStr) -> io::Result<Vec<u8>> {
    loop {
        let size = llistxattr(path, &mut [])?;
        let mut buf = vec![0u8; size];
        match llistxattr(path, &mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One entry of a raw directory listing.
pub struct RawDirent {
    pub ino: u64,
    pub kind: u8,
    pub name: Vec<u8>,
}

/// Reads all entries of the directory `dirfd` (opened afresh, so the caller's fd offset is
/// untouched), without `.` and `..`.
pub fn read_dir(dirfd: RawFd) -> io::Result<Vec<RawDirent>> {
    let fd = open_dir(dirfd, c".")?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // SAFETY: buf is writable for its length; fd is an open directory.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                fd.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            return last_err();
        }
        if n == 0 {
            break;
        }
        let mut pos = 0usize;
        while pos < n as usize {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name[]
            let ino = u64::from_ne_bytes(buf[pos..pos + 8].try_into().unwrap_or([0; 8]));
            let reclen = u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]) as usize;
            let kind = buf[pos + 18];
            let name_area = &buf[pos + 19..pos + reclen];
            let len = name_area
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_area.len());
            let name = &name_area[..len];
            if name != b"." && name != b".." {
                out.push(RawDirent {
                    ino,
                    kind,
                    name: name.to_vec(),
                });
            }
            if reclen == 0 {
                break;
            }
            pos += reclen;
        }
    }
    Ok(out)
}

pub fn is_whiteout(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

pub fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The process umask, read without changing it (changing it would race with other threads).
pub fn current_umask() -> u32 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0o022;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        .unwrap_or(0o022)
}
