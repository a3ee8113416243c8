//! Directory-fd primitives for the builder. Each call names one entry inside an open directory
//! and never follows a symlink there, so neither a build context nor an image's tree can lead a
//! build to a host path: whatever a name is, the call acts on that name in that directory.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

/// Owner given to what a COPY writes: `--chown`, or root.
pub(super) type Owner = (u32, u32);

/// Deepest directory nesting the builder walks or copies (each level holds one fd and one
/// stack frame): a context or an image could nest directories without bound.
pub(super) const MAX_DEPTH: usize = 512;

pub(super) fn too_deep() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("directory tree nested deeper than {MAX_DEPTH} levels"),
    )
}

/// What an entry is, as far as a build cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink,
    /// Fifos, sockets and devices: never read, never copied.
    Special,
}

pub(super) fn kind(st: &FileStat) -> Kind {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Kind::Dir,
        libc::S_IFREG => Kind::File,
        libc::S_IFLNK => Kind::Symlink,
        _ => Kind::Special,
    }
}

/// Takes ownership of a descriptor a successful open just returned.
pub(super) fn owned(raw: RawFd) -> OwnedFd {
    // SAFETY: `raw` was just returned by a successful open call and belongs to nobody else.
    unsafe { OwnedFd::from_raw_fd(raw) }
}

pub(super) fn cname(name: &[u8]) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; a missing entry is `None`.
pub(super) fn lstat_at(dir: impl AsFd, name: &CStr) -> io::Result<Option<FileStat>> {
    let raw = dir.as_fd().as_raw_fd();
    match nix::sys::stat::fstatat(Some(raw), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn fstat(fd: impl AsFd) -> io::Result<FileStat> {
    Ok(nix::sys::stat::fstat(fd.as_fd().as_raw_fd())?)
}

/// Opens the directory `name` in `dir`; a symlink there is refused (ELOOP), not followed.
pub(super) fn open_dir_at(dir: impl AsFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let raw = nix::fcntl::openat(Some(dir.as_fd().as_raw_fd()), name, flags, Mode::empty())?;
    Ok(owned(raw))
}

/// Opens the regular file `name` in `dir` for reading: no symlink followed, O_NONBLOCK so a
/// fifo cannot hang the build, and anything but a regular file refused.
pub(super) fn open_file_at(dir: impl AsFd, name: &CStr) -> io::Result<File> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let raw = nix::fcntl::openat(Some(dir.as_fd().as_raw_fd()), name, flags, Mode::empty())?;
    regular(File::from(owned(raw)))
}

/// `file` itself when it is a regular file.
pub(super) fn regular(file: File) -> io::Result<File> {
    if kind(&fstat(&file)?) == Kind::File {
        Ok(file)
    } else {
        Err(not_regular())
    }
}

pub(super) fn not_regular() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a regular file")
}

/// Creates the file `name` in `dir` (it must not exist), mode 0600 until the caller sets it.
pub(super) fn create_file_at(dir: impl AsFd, name: &CStr) -> io::Result<File> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mode = Mode::from_bits_truncate(0o600);
    let raw = nix::fcntl::openat(Some(dir.as_fd().as_raw_fd()), name, flags, mode)?;
    Ok(File::from(owned(raw)))
}

pub(super) fn mkdir_at(dir: impl AsFd, name: &CStr, mode: u32) -> io::Result<()> {
    let mode = Mode::from_bits_truncate(mode as libc::mode_t);
    Ok(nix::sys::stat::mkdirat(
        Some(dir.as_fd().as_raw_fd()),
        name,
        mode,
    )?)
}

pub(super) fn symlink_at(target: &OsString, dir: impl AsFd, name: &CStr) -> io::Result<()> {
    Ok(nix::unistd::symlinkat(
        target.as_os_str(),
        Some(dir.as_fd().as_raw_fd()),
        name,
    )?)
}

pub(super) fn readlink_at(dir: impl AsFd, name: &CStr) -> io::Result<OsString> {
    Ok(nix::fcntl::readlinkat(Some(dir.as_fd().as_raw_fd()), name)?)
}

/// `fchownat(dir, name, AT_SYMLINK_NOFOLLOW)`: a symlink itself, never its target.
pub(super) fn lchown_at(dir: impl AsFd, name: &CStr, (uid, gid): Owner) -> io::Result<()> {
    Ok(nix::unistd::fchownat(
        Some(dir.as_fd().as_raw_fd()),
        name,
        Some(uid.into()),
        Some(gid.into()),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

/// Owner, then mode (chown clears set-id bits), then times, of an open file or directory.
pub(super) fn set_meta(fd: impl AsFd, owner: Owner, mode: u32, times: &FileStat) -> io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    nix::unistd::fchown(raw, Some(owner.0.into()), Some(owner.1.into()))?;
    nix::sys::stat::fchmod(raw, Mode::from_bits_truncate(mode & 0o7777))?;
    let (atime, mtime) = timespecs(times);
    Ok(nix::sys::stat::futimens(raw, &atime, &mtime)?)
}

/// Times of a symlink itself (lutimes).
pub(super) fn symlink_times_at(dir: impl AsFd, name: &CStr, times: &FileStat) -> io::Result<()> {
    let (atime, mtime) = timespecs(times);
    Ok(nix::sys::stat::utimensat(
        Some(dir.as_fd().as_raw_fd()),
        name,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )?)
}

fn timespecs(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// The names in a directory (without `.` and `..`), sorted.
pub(super) fn list_dir(dir: impl AsFd) -> io::Result<Vec<CString>> {
    // A fresh open description: reading a directory moves its offset.
    let own = open_dir_at(dir, c".")?;
    let mut d = nix::dir::Dir::from(own)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` from `dir`, a whole tree when it is a directory, never following a symlink.
pub(super) fn remove_at(dir: impl AsFd, name: &CStr) -> io::Result<()> {
    remove_tree(dir.as_fd(), name, 0)
}

fn remove_tree(dir: std::os::fd::BorrowedFd<'_>, name: &CStr, depth: usize) -> io::Result<()> {
    let Some(st) = lstat_at(dir, name)? else {
        return Ok(());
    };
    let raw = Some(dir.as_raw_fd());
    if kind(&st) != Kind::Dir {
        return Ok(nix::unistd::unlinkat(
            raw,
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        )?);
    }
    if depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    let child = open_dir_at(dir, name)?;
    for n in list_dir(&child)? {
        remove_tree(child.as_fd(), &n, depth + 1)?;
    }
    Ok(nix::unistd::unlinkat(
        raw,
        name,
        nix::unistd::UnlinkatFlags::RemoveDir,
    )?)
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
        let fd = File::open(root.path()).unwrap();
        remove_at(&fd, c"t").unwrap();
        assert!(!root.path().join("t").exists());
        assert!(outside.path().join("keep").exists());
        remove_at(&fd, c"t").unwrap();
    }

    #[test]
    fn opens_refuse_symlinks_and_special_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), b"x").unwrap();
        std::os::unix::fs::symlink("f", root.path().join("l")).unwrap();
        nix::unistd::mkfifo(&root.path().join("p"), Mode::from_bits_truncate(0o600)).unwrap();
        let fd = File::open(root.path()).unwrap();
        assert!(open_file_at(&fd, c"f").is_ok());
        assert!(open_file_at(&fd, c"l").is_err());
        // A fifo neither hangs the open nor passes as a file.
        assert!(open_file_at(&fd, c"p").is_err());
        assert!(open_dir_at(&fd, c"l").is_err());
    }
}
