//! The change list read from a layer's own upper directory instead of walking the whole tree.
//!
//! Only paths present in the upper directory can differ from the parent, so each is compared
//! with the parent's view of the same path by the rules of core's naive walk
//! (`archive::naive_changes`): mode, owner, size (not for directories), device numbers, mtime to
//! the nanosecond, symlink target, the xattrs a layer tar carries, and for regular files that
//! are different inodes with equal metadata, the bytes. A 0/0 character device is a deletion;
//! an opaque directory (`trusted.overlay.opaque=y`) hides every parent entry it does not hold
//! itself, and each of those is listed as deleted, so the list equals the naive walk's.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use strata_core::{Change, ChangeKind, Error, Result};

const OPAQUE_XATTR: &CStr = c"trusted.overlay.opaque";
const COMPARE_CHUNK: usize = 256 * 1024;

/// Changes of the layer whose upper directory is `upper`, against `parent` (the parent's full
/// tree, e.g. its mount; None when the layer has no parent). Everything below the two roots
/// is reached relative to directory descriptors, so path length is never a limit.
pub fn changes(upper: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    let upper_fd = open_dir(None, upper.as_os_str()).map_err(|e| Error::io("open", upper, e))?;
    let parent_fd = match parent {
        Some(p) => Some(open_dir(None, p.as_os_str()).map_err(|e| Error::io("open", p, e))?),
        None => None,
    };
    let mut walk = Walk {
        upper,
        out: Vec::new(),
        a: vec![0u8; COMPARE_CHUNK],
        b: vec![0u8; COMPARE_CHUNK],
    };
    walk.run(upper_fd, parent_fd)?;
    let mut out = walk.out;
    strata_core::archive::add_ancestor_dirs(&mut out); // Docker's ancestor rule; sorts
    Ok(out)
}

/// Whether a stat is an overlay whiteout (a 0/0 character device).
fn is_whiteout(st: &FileStat) -> bool {
    kind(st) == SFlag::S_IFCHR && st.st_rdev == 0
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// Directory levels the walk descends at most (core's naive walk has the same cap, so both
/// paths refuse the same trees).
const MAX_DEPTH: usize = 1024;

/// What the walk does after listing an entry.
enum Visit {
    Dir { parent_is_dir: bool },
    Other,
}

/// One upper directory being walked, beside the parent's same directory (if it is one).
struct Frame {
    upper: OwnedFd,
    parent: Option<OwnedFd>,
    names: Vec<OsString>,
    next: usize,
    rel: PathBuf,
    opaque: bool,
    /// Names seen that are not whiteouts.
    present: HashSet<OsString>,
}

struct Walk<'a> {
    upper: &'a Path,
    out: Vec<Change>,
    a: Vec<u8>,
    b: Vec<u8>,
}

impl Walk<'_> {
    fn err(&self, op: &'static str, rel: &Path, e: std::io::Error) -> Error {
        Error::io(op, self.upper.join(rel.strip_prefix("/").unwrap_or(rel)), e)
    }

    fn push(&mut self, path: PathBuf, kind: ChangeKind) {
        self.out.push(Change { path, kind });
    }

    /// Depth-first over the upper tree with an explicit stack (no recursion: a container can
    /// make a tree deep enough to overflow a thread's stack), capped at [`MAX_DEPTH`] levels
    /// as core's walk is.
    fn run(&mut self, upper: OwnedFd, parent: Option<OwnedFd>) -> Result<()> {
        let mut stack = vec![self.frame(upper, parent, PathBuf::from("/"))?];
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            let Some(name) = top.names.get(top.next).cloned() else {
                let done = stack
                    .pop()
                    .ok_or_else(|| Error::Other("walk stack".into()))?;
                self.hidden_by_opaque(&done)?;
                continue;
            };
            top.next += 1;
            let rel = top.rel.join(&name);
            let (upper, parent, opaque) = (
                top.upper.as_fd(),
                top.parent.as_ref().map(|f| f.as_fd()),
                top.opaque,
            );
            let Some(visit) = self.entry(upper, parent, &name, opaque, &rel)? else {
                continue;
            };
            top.present.insert(name.clone());
            let Visit::Dir { parent_is_dir } = visit else {
                continue;
            };
            if depth >= MAX_DEPTH {
                return Err(self.err(
                    "walk",
                    &rel,
                    std::io::Error::other(format!("deeper than {MAX_DEPTH} directory levels")),
                ));
            }
            let child = open_dir(Some(upper), &name).map_err(|e| self.err("open", &rel, e))?;
            let child_parent = match (parent_is_dir, parent) {
                (true, Some(p)) => {
                    Some(open_dir(Some(p), &name).map_err(|e| self.err("open parent's", &rel, e))?)
                }
                _ => None,
            };
            let frame = self.frame(child, child_parent, rel)?;
            stack.push(frame);
        }
        Ok(())
    }

    fn frame(&self, upper: OwnedFd, parent: Option<OwnedFd>, rel: PathBuf) -> Result<Frame> {
        let opaque = has_xattr(upper.as_fd(), OPAQUE_XATTR, b"y")
            .map_err(|e| self.err("read opaque flag of", &rel, e))?;
        let names = list_dir(upper.as_fd()).map_err(|e| self.err("list", &rel, e))?;
        Ok(Frame {
            upper,
            parent,
            names,
            next: 0,
            rel,
            opaque,
            present: HashSet::new(),
        })
    }

    /// An opaque directory hides every parent entry it does not hold itself.
    fn hidden_by_opaque(&mut self, done: &Frame) -> Result<()> {
        let (true, Some(parent)) = (done.opaque, &done.parent) else {
            return Ok(());
        };
        for name in list_dir(parent.as_fd()).map_err(|e| self.err("list parent's", &done.rel, e))? {
            if !done.present.contains(&name) {
                self.push(done.rel.join(name), ChangeKind::Delete);
            }
        }
        Ok(())
    }

    /// Lists one upper entry's change; None for a whiteout (it hides, it is not there).
    fn entry(
        &mut self,
        upper: BorrowedFd<'_>,
        parent: Option<BorrowedFd<'_>>,
        name: &OsStr,
        opaque: bool,
        rel: &Path,
    ) -> Result<Option<Visit>> {
        let Some(new) = lstat_at(upper, name).map_err(|e| self.err("stat", rel, e))? else {
            return Err(Error::Other(format!(
                "{} vanished while its layer was being compared (is the layer being written?)",
                rel.display()
            )));
        };
        let old = match parent {
            Some(p) => lstat_at(p, name).map_err(|e| self.err("stat parent's", rel, e))?,
            None => None,
        };
        if is_whiteout(&new) {
            // In an opaque dir the parent's entries are all listed by hidden_by_opaque.
            if !opaque && old.is_some() {
                self.push(rel.to_path_buf(), ChangeKind::Delete);
            }
            return Ok(None);
        }
        match (&old, parent) {
            (Some(old_st), Some(p)) => {
                if self.differs(upper, p, name, &new, old_st, rel)? {
                    self.push(rel.to_path_buf(), ChangeKind::Modify);
                }
            }
            _ => self.push(rel.to_path_buf(), ChangeKind::Add),
        }
        Ok(Some(if kind(&new) == SFlag::S_IFDIR {
            Visit::Dir {
                parent_is_dir: old.is_some_and(|o| kind(&o) == SFlag::S_IFDIR),
            }
        } else {
            Visit::Other
        }))
    }

    /// core's naive `differs`: mode, owner, size (not for dirs), device numbers, mtime, symlink
    /// target, carried xattrs, and the bytes of distinct regular files.
    fn differs(
        &mut self,
        upper: BorrowedFd<'_>,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        new: &FileStat,
        old: &FileStat,
        rel: &Path,
    ) -> Result<bool> {
        if new.st_mode != old.st_mode || new.st_uid != old.st_uid || new.st_gid != old.st_gid {
            return Ok(true);
        }
        let k = kind(new);
        if k != SFlag::S_IFDIR && new.st_size != old.st_size {
            return Ok(true);
        }
        if k != SFlag::S_IFDIR && new.st_nlink > old.st_nlink {
            return Ok(true); // a new hard link to it, as core's naive walk rules
        }
        if (k == SFlag::S_IFCHR || k == SFlag::S_IFBLK) && new.st_rdev != old.st_rdev {
            return Ok(true);
        }
        if new.st_mtime != old.st_mtime || new.st_mtime_nsec != old.st_mtime_nsec {
            return Ok(true);
        }
        if k == SFlag::S_IFLNK {
            let a = nix::fcntl::readlinkat(Some(upper.as_raw_fd()), name)
                .map_err(|e| self.err("readlink", rel, e.into()))?;
            let b = nix::fcntl::readlinkat(Some(parent.as_raw_fd()), name)
                .map_err(|e| self.err("readlink parent's", rel, e.into()))?;
            if a != b {
                return Ok(true);
            }
        }
        let xa = carried_xattrs(upper, name).map_err(|e| self.err("list xattrs of", rel, e))?;
        let xb = carried_xattrs(parent, name)
            .map_err(|e| self.err("list parent's xattrs of", rel, e))?;
        if xa != xb {
            return Ok(true);
        }
        if k == SFlag::S_IFREG && !(new.st_dev == old.st_dev && new.st_ino == old.st_ino) {
            return self.content_differs(upper, parent, name, rel);
        }
        Ok(false)
    }

    /// Same size and mtime: only the bytes can tell.
    fn content_differs(
        &mut self,
        upper: BorrowedFd<'_>,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        rel: &Path,
    ) -> Result<bool> {
        let mut fa = open_file(upper, name).map_err(|e| self.err("open", rel, e))?;
        let mut fb = open_file(parent, name).map_err(|e| self.err("open parent's", rel, e))?;
        loop {
            let n = read_full(&mut fa, &mut self.a).map_err(|e| self.err("read", rel, e))?;
            let m =
                read_full(&mut fb, &mut self.b).map_err(|e| self.err("read parent's", rel, e))?;
            if n != m || self.a[..n] != self.b[..m] {
                return Ok(true);
            }
            if n < self.a.len() {
                return Ok(false);
            }
        }
    }
}

fn open_dir(at: Option<BorrowedFd<'_>>, name: &OsStr) -> std::io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = match at {
        Some(dir) => nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?,
        None => nix::fcntl::open(name, flags & !OFlag::O_NOFOLLOW, Mode::empty())?,
    };
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn open_file(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), name, flags, Mode::empty())?;
    // SAFETY: as in open_dir.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Option<FileStat>> {
    match nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Entry names of a directory, without `.` and `..`.
fn list_dir(dir: BorrowedFd<'_>) -> std::io::Result<Vec<OsString>> {
    let dup = nix::unistd::dup(dir.as_raw_fd())?;
    let mut d = nix::dir::Dir::from_fd(dup)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsString::from_vec(name.to_vec()));
        }
    }
    Ok(names)
}

/// A path that names `name` in `dir` without walking a long path: the kernel resolves the
/// `/proc/self/fd` link to the directory, and the l*xattr calls do not follow `name`.
fn proc_path(dir: BorrowedFd<'_>, name: &OsStr) -> CString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    CString::new(p).unwrap_or_default()
}

fn has_xattr(dir: BorrowedFd<'_>, name: &CStr, want: &[u8]) -> std::io::Result<bool> {
    let mut buf = [0u8; 8];
    // SAFETY: buf is valid for its length; the name is NUL-terminated.
    let n = unsafe {
        libc::fgetxattr(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) | Some(libc::ERANGE) => Ok(false),
            _ => Err(e),
        };
    }
    Ok(&buf[..n as usize] == want)
}

/// The xattrs a layer tar carries (as core's `carried_xattr`): user.*, security.capability
/// and trusted.* except the overlay's own trusted.overlay.*; sorted by name.
fn carried_xattrs(dir: BorrowedFd<'_>, name: &OsStr) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = OsStr::from_bytes(proc_path(dir, name).to_bytes()).to_os_string();
    let names = match xattr::list(&path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for key in names {
        let k = key.as_bytes();
        let carried = k.starts_with(b"user.")
            || k == b"security.capability"
            || (k.starts_with(b"trusted.") && !k.starts_with(b"trusted.overlay."));
        if carried {
            if let Some(value) = xattr::get(&path, &key)? {
                out.push((k.to_vec(), value));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(changes: &[Change]) -> Vec<(String, ChangeKind)> {
        changes
            .iter()
            .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
            .collect()
    }

    #[test]
    fn whiteouts_opaque_dirs_and_modifications() {
        let t = tempfile::tempdir().unwrap();
        let (upper, parent) = (t.path().join("upper"), t.path().join("parent"));
        for d in ["parent/dir/sub", "parent/keep", "upper/dir", "upper/keep"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        for f in [
            "parent/dir/a",
            "parent/dir/b",
            "parent/gone",
            "parent/keep/same",
        ] {
            std::fs::write(t.path().join(f), b"old").unwrap();
        }
        // Same metadata as the parent's copy but other bytes: only content tells.
        std::fs::write(upper.join("keep/same"), b"new").unwrap();
        let mtime = std::fs::metadata(parent.join("keep/same"))
            .unwrap()
            .modified()
            .unwrap();
        std::fs::File::options()
            .write(true)
            .open(upper.join("keep/same"))
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        nix::sys::stat::mknod(
            &upper.join("gone"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        nix::sys::stat::mknod(
            &upper.join("never-was"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        xattr::set(upper.join("dir"), "trusted.overlay.opaque", b"y").unwrap();
        std::fs::write(upper.join("dir/b"), b"recreated").unwrap();
        std::fs::write(upper.join("dir/c"), b"new").unwrap();

        // The directories themselves equal the parent's (set last: entries change mtimes).
        for d in ["keep", "dir"] {
            let m = std::fs::metadata(parent.join(d)).unwrap();
            std::fs::set_permissions(upper.join(d), m.permissions()).unwrap();
            std::fs::File::open(upper.join(d))
                .unwrap()
                .set_modified(m.modified().unwrap())
                .unwrap();
        }
        let got = paths(&changes(&upper, Some(&parent)).unwrap());
        use ChangeKind::*;
        // `/dir` and `/keep` equal the parent's but hold changes: Docker's ancestor rule.
        let want: Vec<(String, ChangeKind)> = [
            ("/dir", Modify),
            ("/dir/a", Delete),
            ("/dir/b", Modify),
            ("/dir/c", Add),
            ("/dir/sub", Delete),
            ("/gone", Delete),
            ("/keep", Modify),
            ("/keep/same", Modify),
        ]
        .into_iter()
        .map(|(p, k)| (p.to_string(), k))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn trees_deeper_than_the_cap_are_refused_not_overflowed() {
        let t = tempfile::tempdir().unwrap();
        let deep: PathBuf = std::iter::repeat_n("d", MAX_DEPTH + 10).collect();
        std::fs::create_dir_all(t.path().join(&deep)).unwrap();
        let err = changes(t.path(), None).unwrap_err();
        assert!(err.to_string().contains("deeper than 1024"), "{err}");
        let ok: PathBuf = std::iter::repeat_n("d", MAX_DEPTH - 1).collect();
        let t2 = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t2.path().join(&ok)).unwrap();
        assert_eq!(changes(t2.path(), None).unwrap().len(), MAX_DEPTH - 1);
    }
}
