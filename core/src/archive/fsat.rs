//! Thin fd-relative filesystem primitives (`*at` syscalls). Everything in the archive code works
//! on a directory fd plus one name, never on a joined path: that keeps hostile names from
//! escaping through symlinks and lets trees deeper than PATH_MAX (4096 bytes) work.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A name as a C string; names from tars or directories never hold NUL, but refuse it anyway.
pub(crate) fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))
}

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens a trusted root directory (the caller's own path; symlinks in it are the caller's).
pub(crate) fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = cname(path.as_os_str().as_bytes())?;
    // SAFETY: valid C string; the returned fd is owned below.
    let fd = cvt(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fd was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens the directory `name` inside `dir` without following a symlink.
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: valid fd and C string.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens a regular file for reading without following a symlink. O_NONBLOCK: should the name
/// have become a fifo since it was stat'ed, the open must not hang (no effect on files).
pub(crate) fn open_read_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<std::fs::File> {
    // SAFETY: valid fd and C string.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    })?;
    // SAFETY: fresh fd.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Creates a new regular file (it must not exist) for writing, mode 0600.
#[cfg(test)]
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<std::fs::File> {
    create_file_mode_at(dir, name, 0o600)
}

/// Creates a new regular file (it must not exist) for writing; `mode` goes through the umask.
pub(crate) fn create_file_mode_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: u32,
) -> io::Result<std::fs::File> {
    // SAFETY: valid fd and C string.
    let fd = cvt(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fresh fd.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

pub(crate) fn dup(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded and filled st.
    Ok(unsafe { st.assume_init() })
}

/// Like [`lstat_at`] but a missing entry is `None`.
pub(crate) fn lstat_at_opt(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    match lstat_at(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is a valid out pointer.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// The names in a directory (without `.` and `..`), in directory order.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    // A fresh open description: reading a directory moves its offset, so do not share `dir`'s.
    let own = open_dir_at(dir, c".")?;
    let mut d = nix::dir::Dir::from_fd(own.into_raw_fd()).map_err(io::Error::from)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry.map_err(io::Error::from)?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

pub(crate) fn readlink_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let target = nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name)?;
    Ok(std::os::unix::ffi::OsStringExt::into_vec(target))
}

/// Removes `name` inside `dir`, a whole tree if it is a directory, never following symlinks.
/// A missing entry is not an error.
pub(crate) fn remove_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let st = match lstat_at_opt(dir, name)? {
        Some(st) => st,
        None => return Ok(()),
    };
    if !is_dir(&st) {
        return unlink_at(dir, name, 0);
    }
    // Post-order with an explicit stack (no recursion: a deep tree cannot overflow the stack).
    struct Frame {
        fd: OwnedFd,
        names: Vec<CString>,
        name_in_parent: CString,
    }
    let open = |parent: BorrowedFd<'_>, n: &CStr| -> io::Result<Frame> {
        let fd = open_dir_at(parent, n)?;
        let names = list_dir(fd.as_fd_borrowed())?;
        Ok(Frame {
            fd,
            names,
            name_in_parent: n.to_owned(),
        })
    };
    let mut stack = vec![open(dir, name)?];
    loop {
        let depth = stack.len();
        let Some(top) = stack.last_mut() else {
            return Ok(());
        };
        match top.names.pop() {
            Some(n) => match lstat_at_opt(top.fd.as_fd_borrowed(), &n)? {
                None => {}
                Some(st) if is_dir(&st) => {
                    if depth >= MAX_DEPTH {
                        return Err(too_deep());
                    }
                    let frame = open(top.fd.as_fd_borrowed(), &n)?;
                    stack.push(frame);
                }
                Some(_) => unlink_at(top.fd.as_fd_borrowed(), &n, 0)?,
            },
            None => {
                let done = stack
                    .pop()
                    .ok_or_else(|| io::Error::other("remove stack"))?;
                let parent = stack.last().map(|f| f.fd.as_fd_borrowed()).unwrap_or(dir);
                unlink_at(parent, &done.name_in_parent, libc::AT_REMOVEDIR)?;
            }
        }
    }
}

/// Deepest directory nesting the archive code walks (each level holds one fd while it is
/// walked). Real trees are far shallower: 1024 levels already need paths of 2 KiB or more.
pub(crate) const MAX_DEPTH: usize = 1024;

pub(crate) fn too_deep() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("directory tree nested deeper than {MAX_DEPTH} levels"),
    )
}

fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// Short-hand so call sites read `fd.as_fd_borrowed()` whatever the fd's owner type.
pub(crate) trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}

impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

impl AsFdBorrowed for std::fs::File {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

pub(crate) fn mkdir_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t) }).map(drop)
}

pub(crate) fn symlink_at(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: valid fd and C strings.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub(crate) fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32, dev: u64) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            name.as_ptr(),
            mode as libc::mode_t,
            dev as libc::dev_t,
        )
    })
    .map(drop)
}

pub(crate) fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &CStr,
    to_dir: BorrowedFd<'_>,
    to: &CStr,
) -> io::Result<()> {
    // SAFETY: valid fds and C strings; flags 0 = do not follow a symlink target.
    cvt(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            from.as_ptr(),
            to_dir.as_raw_fd(),
            to.as_ptr(),
            0,
        )
    })
    .map(drop)
}

/// `fchownat(..., AT_SYMLINK_NOFOLLOW)`; an empty name means `dir` itself.
pub(crate) fn lchown_at(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> io::Result<()> {
    let flags = if name.is_empty() {
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// chmod of a non-symlink entry we just created ourselves (fifo, device).
pub(crate) fn chmod_at(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: valid fd and C string.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t, 0) })
        .map(drop)
}

/// A (seconds, nanoseconds) timestamp.
pub(crate) type Time = (i64, u32);

fn timespec(t: Time) -> libc::timespec {
    libc::timespec {
        tv_sec: t.0 as libc::time_t,
        tv_nsec: t.1 as _,
    }
}

/// `utimensat(..., AT_SYMLINK_NOFOLLOW)`: sets the entry itself, also for symlinks (lutimes).
pub(crate) fn lutimes_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: Time,
    mtime: Time,
) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid fd, C string and a two-element timespec array.
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [timespec(atime), timespec(mtime)];
    // SAFETY: valid fd and a two-element timespec array.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// The path `/proc/self/fd/<dir>/<name>`: the only portable way to reach the xattrs of a
/// symlink, fifo or device by fd (their O_PATH fds refuse f*xattr). Short whatever the depth.
fn proc_path(dir: RawFd, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{dir}/").into_bytes();
    p.extend_from_slice(name.to_bytes());
    cname(&p)
}

/// All extended attributes of `name` in `dir` (not following a symlink), sorted by name.
pub(crate) fn list_xattrs_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = proc_path(dir.as_raw_fd(), name)?;
    let names = xattr_names(|buf, len| {
        // SAFETY: buf valid for len bytes (or null with len 0).
        unsafe { libc::llistxattr(path.as_ptr(), buf, len) }
    })?;
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let cn = cname(&n)?;
        let value = xattr_value(|buf, len| {
            // SAFETY: as above.
            unsafe { libc::lgetxattr(path.as_ptr(), cn.as_ptr(), buf.cast(), len) }
        });
        match value {
            Ok(v) => out.push((n, v)),
            // Removed between list and get: it is simply not there.
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

fn xattr_names(
    mut list: impl FnMut(*mut libc::c_char, usize) -> libc::ssize_t,
) -> io::Result<Vec<Vec<u8>>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let n = list(std::ptr::null_mut(), 0);
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        buf.resize(n as usize, 0);
        let m = list(buf.as_mut_ptr().cast(), buf.len());
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| s.to_vec())
            .collect());
    }
}

fn xattr_value(mut get: impl FnMut(*mut u8, usize) -> libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let n = get(std::ptr::null_mut(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; n as usize];
        if n == 0 {
            return Ok(buf);
        }
        let m = get(buf.as_mut_ptr(), buf.len());
        if m < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(m as usize);
        return Ok(buf);
    }
}

/// Whether an open file or directory has the xattr `name` (a filesystem without xattrs has
/// none).
pub(crate) fn has_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<bool> {
    let cn = cname(name)?;
    // SAFETY: valid fd and C string; a NULL buffer of size 0 only asks for the size.
    let n = unsafe { libc::fgetxattr(fd.as_raw_fd(), cn.as_ptr(), std::ptr::null_mut(), 0) };
    if n >= 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(err),
    }
}

/// Sets one xattr on an open file or directory.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    let cn = cname(name)?;
    // SAFETY: valid fd, C string and value buffer.
    cvt(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

/// Sets one xattr on `name` in `dir` without following a symlink.
pub(crate) fn lsetxattr_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    key: &[u8],
    value: &[u8],
) -> io::Result<()> {
    let path = proc_path(dir.as_raw_fd(), name)?;
    let ck = cname(key)?;
    // SAFETY: valid C strings and value buffer.
    cvt(unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            ck.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_at_never_follows_symlinks() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), b"x").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("t/d")).unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("t/d/link")).unwrap();
        let fd = open_root(root.path()).unwrap();
        remove_at(fd.as_fd_borrowed(), c"t").unwrap();
        assert!(!root.path().join("t").exists());
        assert!(outside.path().join("keep").exists());
        // Missing is fine.
        remove_at(fd.as_fd_borrowed(), c"t").unwrap();
    }

    #[test]
    fn xattrs_round_trip_on_symlinks_and_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("/nowhere", root.path().join("l")).unwrap();
        let fd = open_root(root.path()).unwrap();
        lsetxattr_at(fd.as_fd_borrowed(), c"f", b"user.b", b"2").unwrap();
        lsetxattr_at(fd.as_fd_borrowed(), c"f", b"user.a", b"1").unwrap();
        lsetxattr_at(fd.as_fd_borrowed(), c"l", b"trusted.t", b"v").unwrap();
        let x = list_xattrs_at(fd.as_fd_borrowed(), c"f").unwrap();
        let users: Vec<_> = x.iter().filter(|(k, _)| k.starts_with(b"user.")).collect();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].0, b"user.a");
        let l = list_xattrs_at(fd.as_fd_borrowed(), c"l").unwrap();
        assert!(l.iter().any(|(k, v)| k == b"trusted.t" && v == b"v"));
        assert_eq!(readlink_at(fd.as_fd_borrowed(), c"l").unwrap(), b"/nowhere");
    }
}
