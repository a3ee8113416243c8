//! A full, comparable picture of a directory tree: for every path its type, mode (setuid,
//! setgid and sticky included), owner, size, content digest, link target, device number and
//! xattrs, plus which paths are hard links of each other.
//!
//! The walk goes through directory file descriptors (`openat`), so trees deeper than PATH_MAX
//! are read as well as any other. Content is digested sparse-aware: SHA-256 over the non-zero
//! 64 KiB chunks and their indexes, so a 1 GiB sparse file costs what its data costs, and two
//! files with the same bytes get the same digest however their holes are allocated.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{CStr, CString, OsStr};
use std::fmt::Write as _;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

const CHUNK: u64 = 64 * 1024;
const MAX_SHOWN_DIFFERENCES: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File { size: u64, digest: String },
    Symlink { target: Vec<u8> },
    Fifo,
    CharDevice { rdev: u64 },
    BlockDevice { rdev: u64 },
    Socket,
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits with setuid (04000), setgid (02000) and sticky (01000).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes allocated (st_blocks * 512). Not compared; used by sparseness checks.
    pub allocated: u64,
}

/// Paths are absolute inside the tree (`/`, `/etc/hosts`) and kept as raw bytes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub entries: BTreeMap<Vec<u8>, Entry>,
    /// Sets of two or more paths that are the same inode.
    pub hardlinks: BTreeSet<BTreeSet<Vec<u8>>>,
}

/// Shows a raw path readably (non-UTF-8 bytes escaped), shortening very long ones.
pub fn show(path: &[u8]) -> String {
    let s = path.escape_ascii().to_string();
    if s.len() > 160 {
        format!("{}…{} ({} bytes)", &s[..60], &s[s.len() - 60..], path.len())
    } else {
        s
    }
}

impl Snapshot {
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.as_bytes())
    }

    /// Every difference between `self` (expected) and `got`, in path order.
    pub fn differences(&self, got: &Snapshot) -> Vec<String> {
        let mut out = Vec::new();
        let paths: BTreeSet<&Vec<u8>> = self.entries.keys().chain(got.entries.keys()).collect();
        for path in paths {
            let shown = show(path);
            match (self.entries.get(path), got.entries.get(path)) {
                (Some(_), None) => out.push(format!("{shown}: missing (expected it to exist)")),
                (None, Some(g)) => out.push(format!(
                    "{shown}: unexpected {} (should not exist)",
                    kind_name(&g.kind)
                )),
                (Some(e), Some(g)) => entry_differences(&shown, e, g, &mut out),
                (None, None) => {}
            }
        }
        if self.hardlinks != got.hardlinks {
            out.push(format!(
                "hard link sets differ: expected {}, got {}",
                show_links(&self.hardlinks),
                show_links(&got.hardlinks)
            ));
        }
        out
    }

    /// `Ok` when identical, else a message listing the differences.
    pub fn compare(&self, got: &Snapshot, what: &str) -> Result<(), String> {
        let diffs = self.differences(got);
        if diffs.is_empty() {
            return Ok(());
        }
        let mut msg = format!(
            "{what}: the tree differs from the reference in {} ways:",
            diffs.len()
        );
        for d in diffs.iter().take(MAX_SHOWN_DIFFERENCES) {
            let _ = write!(msg, "\n    {d}");
        }
        if diffs.len() > MAX_SHOWN_DIFFERENCES {
            let _ = write!(
                msg,
                "\n    ... and {} more",
                diffs.len() - MAX_SHOWN_DIFFERENCES
            );
        }
        Err(msg)
    }
}

fn show_links(sets: &BTreeSet<BTreeSet<Vec<u8>>>) -> String {
    let shown: Vec<String> = sets
        .iter()
        .map(|s| {
            format!(
                "{{{}}}",
                s.iter().map(|p| show(p)).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    format!("[{}]", shown.join(", "))
}

fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Dir => "directory".into(),
        Kind::File { size, .. } => format!("file of {size} bytes"),
        Kind::Symlink { target } => format!("symlink to {}", show(target)),
        Kind::Fifo => "fifo".into(),
        Kind::CharDevice { rdev } => format!("char device {}:{}", major(*rdev), minor(*rdev)),
        Kind::BlockDevice { rdev } => format!("block device {}:{}", major(*rdev), minor(*rdev)),
        Kind::Socket => "socket".into(),
    }
}

fn major(rdev: u64) -> u64 {
    libc::major(rdev) as u64
}

fn minor(rdev: u64) -> u64 {
    libc::minor(rdev) as u64
}

fn entry_differences(path: &str, e: &Entry, g: &Entry, out: &mut Vec<String>) {
    match (&e.kind, &g.kind) {
        (
            Kind::File {
                size: es,
                digest: ed,
            },
            Kind::File {
                size: gs,
                digest: gd,
            },
        ) => {
            if es != gs {
                out.push(format!("{path}: size expected {es}, got {gs}"));
            } else if ed != gd {
                out.push(format!(
                    "{path}: content differs (same size {es}; digest expected {}, got {})",
                    &ed[..12],
                    &gd[..12]
                ));
            }
        }
        (ek, gk) if ek != gk => out.push(format!(
            "{path}: expected {}, got {}",
            kind_name(ek),
            kind_name(gk)
        )),
        _ => {}
    }
    if e.mode != g.mode {
        out.push(format!(
            "{path}: mode expected {:04o}, got {:04o}",
            e.mode, g.mode
        ));
    }
    if (e.uid, e.gid) != (g.uid, g.gid) {
        out.push(format!(
            "{path}: owner expected {}:{}, got {}:{}",
            e.uid, e.gid, g.uid, g.gid
        ));
    }
    if e.xattrs != g.xattrs {
        out.push(format!(
            "{path}: xattrs expected {}, got {}",
            show_xattrs(&e.xattrs),
            show_xattrs(&g.xattrs)
        ));
    }
}

fn show_xattrs(x: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{}={}", show(k), show(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Xattrs that belong to the filesystem or the driver's machinery, not to the tree's content.
fn ignored_xattr(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.")
        || name.starts_with(b"user.overlay.")
        || name.starts_with(b"user.fuseoverlayfs.")
        || name == b"security.selinux"
        || name.starts_with(b"system.")
}

/// Takes the snapshot of the tree at `root` (which must be a directory).
pub fn snapshot(root: &Path) -> io::Result<Snapshot> {
    let croot = cstring(root.as_os_str().as_bytes())?;
    let fd = open_at(libc::AT_FDCWD, &croot, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut walker = Walker::default();
    let st = fstat(&fd)?;
    let root_entry = walker.entry_for_open(&fd, &st, b"/")?;
    walker.snap.entries.insert(b"/".to_vec(), root_entry);
    walker.walk(&fd, b"")?;
    let mut snap = walker.snap;
    for paths in walker.inodes.into_values() {
        if paths.len() > 1 {
            snap.hardlinks.insert(paths.into_iter().collect());
        }
    }
    Ok(snap)
}

#[derive(Default)]
struct Walker {
    snap: Snapshot,
    inodes: HashMap<(u64, u64), Vec<Vec<u8>>>,
}

impl Walker {
    fn walk(&mut self, dir: &OwnedFd, prefix: &[u8]) -> io::Result<()> {
        for name in read_dir_names(dir)? {
            let mut path = prefix.to_vec();
            path.push(b'/');
            path.extend_from_slice(&name);
            let cname = cstring(&name)?;
            let st = fstat_at(dir, &cname)?;
            let fmt = st.st_mode & libc::S_IFMT;
            let entry = match fmt {
                libc::S_IFDIR => {
                    let sub = open_at(
                        dir.as_raw_fd(),
                        &cname,
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    )?;
                    let e = self.entry_for_open(&sub, &st, &path)?;
                    self.snap.entries.insert(path.clone(), e);
                    self.walk(&sub, &path)?;
                    continue;
                }
                libc::S_IFREG => {
                    let f = open_at(dir.as_raw_fd(), &cname, libc::O_RDONLY | libc::O_NOFOLLOW)?;
                    self.entry_for_open(&f, &st, &path)?
                }
                libc::S_IFLNK => Entry {
                    kind: Kind::Symlink {
                        target: read_link_at(dir, &cname)?,
                    },
                    mode: st.st_mode & 0o7777,
                    uid: st.st_uid,
                    gid: st.st_gid,
                    xattrs: BTreeMap::new(),
                    allocated: st.st_blocks as u64 * 512,
                },
                _ => {
                    let f = open_at(dir.as_raw_fd(), &cname, libc::O_PATH | libc::O_NOFOLLOW)?;
                    self.entry_for_open(&f, &st, &path)?
                }
            };
            if fmt != libc::S_IFDIR && st.st_nlink > 1 {
                self.inodes
                    .entry((st.st_dev, st.st_ino))
                    .or_default()
                    .push(path.clone());
            }
            self.snap.entries.insert(path, entry);
        }
        Ok(())
    }

    fn entry_for_open(&mut self, fd: &OwnedFd, st: &libc::stat, path: &[u8]) -> io::Result<Entry> {
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFREG => Kind::File {
                size: st.st_size as u64,
                digest: sparse_digest(fd, st.st_size as u64).map_err(|e| annotate(e, path))?,
            },
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDevice { rdev: st.st_rdev },
            libc::S_IFBLK => Kind::BlockDevice { rdev: st.st_rdev },
            libc::S_IFSOCK => Kind::Socket,
            other => {
                return Err(io::Error::other(format!(
                    "{}: unknown file type {other:o}",
                    show(path)
                )))
            }
        };
        Ok(Entry {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            xattrs: read_xattrs(fd).map_err(|e| annotate(e, path))?,
            allocated: st.st_blocks as u64 * 512,
        })
    }
}

fn annotate(e: io::Error, path: &[u8]) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", show(path)))
}

pub(crate) fn cstring(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
}

pub(crate) fn open_at(dir: i32, name: &CStr, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: `name` is NUL-terminated; the returned fd is owned by the OwnedFd.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: `st` is written by the kernel before it is read.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

pub(crate) fn fstat_at(dir: &OwnedFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in `fstat`; `name` is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    } < 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn read_link_at(dir: &OwnedFd, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// The names in a directory, sorted, without `.` and `..`.
pub(crate) fn read_dir_names(dir: &OwnedFd) -> io::Result<Vec<Vec<u8>>> {
    // fdopendir takes ownership of the fd it is given, so give it a duplicate.
    let dup = dir.try_clone()?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: `raw` is an open directory fd that the DIR stream now owns.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so `raw` is still ours to close.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    // SAFETY: rewind so a directory read before (same open file description) is read whole.
    unsafe { libc::rewinddir(stream) };
    let mut names = Vec::new();
    loop {
        // SAFETY: `stream` is a valid DIR*; errno is reset to tell end from error.
        unsafe { *libc::__errno_location() = 0 };
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            let errno = io::Error::last_os_error();
            unsafe { libc::closedir(stream) };
            if errno.raw_os_error().unwrap_or(0) != 0 {
                return Err(errno);
            }
            break;
        }
        // SAFETY: d_name is NUL-terminated inside the dirent.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }
            .to_bytes()
            .to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn proc_fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a /proc path")
}

fn read_xattrs(fd: &OwnedFd) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    // Through /proc/self/fd so O_PATH descriptors (fifos, devices) work too.
    let path = proc_fd_path(fd);
    let mut names = vec![0u8; 4096];
    let n = loop {
        // SAFETY: `names` is valid for its length.
        let n = unsafe { libc::listxattr(path.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) => names.resize(names.len() * 4, 0),
            Some(libc::ENOTSUP) => return Ok(BTreeMap::new()),
            _ => return Err(e),
        }
    };
    let mut out = BTreeMap::new();
    for name in names[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        if ignored_xattr(name) {
            continue;
        }
        let cname = cstring(name)?;
        let mut value = vec![0u8; 256];
        loop {
            // SAFETY: `value` is valid for its length; names are NUL-terminated.
            let len = unsafe {
                libc::getxattr(
                    path.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            if len >= 0 {
                value.truncate(len as usize);
                break;
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                value.resize(value.len() * 16, 0);
                continue;
            }
            return Err(e);
        }
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

/// SHA-256 over `size`, then each non-zero 64 KiB chunk's index and bytes.
fn sparse_digest(fd: &OwnedFd, size: u64) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::from(fd.try_clone()?);
    let mut hasher = Sha256::new();
    hasher.update(size.to_le_bytes());
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0u64;
    while pos < size {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => pos,
            Err(e) => return Err(e),
        };
        let hole = match seek(fd, data, libc::SEEK_HOLE) {
            Ok(h) => h.min(size),
            Err(_) => size,
        };
        let mut chunk = data / CHUNK;
        while chunk * CHUNK < hole {
            let start = chunk * CHUNK;
            let len = CHUNK.min(size - start) as usize;
            file.read_exact_at(&mut buf[..len], start)?;
            if buf[..len].iter().any(|&b| b != 0) {
                hasher.update(chunk.to_le_bytes());
                hasher.update(&buf[..len]);
            }
            chunk += 1;
        }
        pos = chunk * CHUNK;
    }
    Ok(hex::encode(hasher.finalize()))
}

fn seek(fd: &OwnedFd, pos: u64, whence: i32) -> io::Result<u64> {
    // SAFETY: lseek on an fd we own.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), pos as libc::off_t, whence) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as u64)
}

/// The digest [`snapshot`] records for a file with these bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update((bytes.len() as u64).to_le_bytes());
    for (i, chunk) in bytes.chunks(CHUNK as usize).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            hasher.update((i as u64).to_le_bytes());
            hasher.update(chunk);
        }
    }
    hex::encode(hasher.finalize())
}

/// The file names directly in `dir` (for emptiness checks).
pub fn names_in(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| OsStr::as_bytes(&e.file_name()).to_vec()))
        .collect::<io::Result<_>>()?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_modes_owners_links_and_content() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::write(r.join("a"), b"hello").unwrap();
        std::fs::hard_link(r.join("a"), r.join("b")).unwrap();
        std::os::unix::fs::symlink("a", r.join("s")).unwrap();
        std::fs::create_dir(r.join("d")).unwrap();
        let snap = snapshot(r).unwrap();
        assert_eq!(snap.entries.len(), 5);
        match &snap.get("/a").unwrap().kind {
            Kind::File { size, digest } => {
                assert_eq!(*size, 5);
                assert_eq!(*digest, digest_of(b"hello"));
            }
            k => panic!("{k:?}"),
        }
        assert_eq!(snap.hardlinks.len(), 1);
        let mut other = snap.clone();
        other.entries.get_mut(b"/d".as_slice()).unwrap().mode = 0o1777;
        let d = snap.differences(&other);
        assert_eq!(d, vec!["/d: mode expected 0755, got 1777".to_string()]);
    }

    #[test]
    fn sparse_and_dense_zeros_digest_alike() {
        let t = tempfile::tempdir().unwrap();
        let sparse = std::fs::File::create(t.path().join("s")).unwrap();
        sparse.set_len(10 * CHUNK + 5).unwrap();
        use std::os::unix::fs::FileExt;
        sparse.write_all_at(b"x", 3 * CHUNK + 7).unwrap();
        let mut dense = vec![0u8; (10 * CHUNK + 5) as usize];
        dense[(3 * CHUNK + 7) as usize] = b'x';
        std::fs::write(t.path().join("d"), &dense).unwrap();
        let snap = snapshot(t.path()).unwrap();
        assert_eq!(snap.get("/s").unwrap().kind, snap.get("/d").unwrap().kind);
        match &snap.get("/d").unwrap().kind {
            Kind::File { digest, .. } => assert_eq!(*digest, digest_of(&dense)),
            k => panic!("{k:?}"),
        }
    }
}
