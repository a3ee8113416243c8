//! Naive change detection: walk a layer's tree beside its parent's and compare, as moby's
//! NaiveDiffDriver does, but stricter: when metadata cannot tell two regular files apart (same
//! size and mtime), their bytes are compared.
//!
//! Paths are absolute inside the layer (`/a/b`), raw bytes. A deleted directory is listed
//! alone, not with its children; a new directory is listed with everything under it (the tar
//! needs them all). A directory counts as modified when its own mode, owner, mtime or xattrs
//! changed, and also whenever anything below it changed ([`add_ancestor_dirs`]: Docker's
//! `addChanges`, so the tar carries every ancestor's mode and owner). A non-directory whose link
//! count grew is modified (a new hard link to it: the tar must carry it for the link set to
//! survive). The walk never descends into another filesystem mounted inside either tree.

use std::collections::HashSet;
use std::ffi::{CStr, CString, OsString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::fsat::{self, cname};
use super::path_safety::{components, open_dir_beneath, ResolveError};
use crate::error::{Error, Result};
use crate::layer::{Change, ChangeKind};

const COMPARE_CHUNK: usize = 256 * 1024;

/// Whether an xattr travels in layer tars: user.*, security.capability and trusted.* except
/// the overlay driver's own trusted.overlay.* (those describe the storage, not the content).
pub(crate) fn carried_xattr(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || (name.starts_with(b"trusted.") && !name.starts_with(b"trusted.overlay."))
}

/// The carried xattrs of `name` in `dir`, sorted by name.
pub(crate) fn carried_xattrs(
    dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut all = fsat::list_xattrs_at(dir, name)?;
    all.retain(|(k, _)| carried_xattr(k));
    Ok(all)
}

pub(crate) fn naive_changes(layer_root: &Path, parent_root: Option<&Path>) -> Result<Vec<Change>> {
    let layer = fsat::open_root(layer_root).map_err(|e| Error::io("open", layer_root, e))?;
    let layer_dev = fsat::fstat(layer.as_fd())
        .map_err(|e| Error::io("stat", layer_root, e))?
        .st_dev;
    let parent = match parent_root {
        Some(p) => {
            let fd = fsat::open_root(p).map_err(|e| Error::io("open", p, e))?;
            let dev = fsat::fstat(fd.as_fd())
                .map_err(|e| Error::io("stat", p, e))?
                .st_dev;
            Some((fd, dev))
        }
        None => None,
    };
    let mut walker = Walker {
        out: Vec::new(),
        layer_root,
        layer_dev,
        parent_dev: parent.as_ref().map(|(_, d)| *d).unwrap_or(0),
        a: vec![0u8; COMPARE_CHUNK],
        b: vec![0u8; COMPARE_CHUNK],
    };
    walker.walk(layer.as_fd(), parent.as_ref().map(|(fd, _)| fd.as_fd()))?;
    let mut out = walker.out;
    add_ancestor_dirs(&mut out);
    Ok(out)
}

/// Docker's rule (`addChanges` in moby's pkg/archive, containers/storage alike): every ancestor
/// directory of a listed path (Add, Modify or Delete), except `/`, is listed as Modify unless
/// it is listed already. Sorts the list. Every change list (naive or native) goes through this
/// so that all drivers list, and diff, the same paths.
pub(crate) fn add_ancestor_dirs(changes: &mut Vec<Change>) {
    use std::os::unix::ffi::OsStrExt;
    let listed: HashSet<Vec<u8>> = changes
        .iter()
        .map(|c| c.path.as_os_str().as_bytes().to_vec())
        .collect();
    let mut added: HashSet<Vec<u8>> = HashSet::new();
    for c in changes.iter() {
        let path = c.path.as_os_str().as_bytes();
        for (i, b) in path.iter().enumerate().skip(1) {
            if *b != b'/' {
                continue;
            }
            let ancestor = &path[..i];
            if ancestor.ends_with(b"/") || listed.contains(ancestor) {
                continue;
            }
            added.insert(ancestor.to_vec());
        }
    }
    changes.extend(added.into_iter().map(|a| change(&a, ChangeKind::Modify)));
    changes.sort();
}

/// One directory being walked: its fd, the parent tree's same directory (if any), its names
/// and how far through them the walk is.
struct Frame {
    dir: OwnedFd,
    pdir: Option<OwnedFd>,
    names: Vec<CString>,
    next: usize,
    /// Length of the directory's own path in `rel`.
    rel_len: usize,
}

struct Walker<'a> {
    out: Vec<Change>,
    layer_root: &'a Path,
    layer_dev: u64,
    parent_dev: u64,
    a: Vec<u8>,
    b: Vec<u8>,
}

fn change(rel: &[u8], kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(OsString::from_vec(rel.to_vec())),
        kind,
    }
}

impl Walker<'_> {
    fn err(&self, op: &'static str, rel: &[u8], e: io::Error) -> Error {
        let rel = PathBuf::from(OsString::from_vec(rel.to_vec()));
        Error::io(
            op,
            self.layer_root.join(rel.strip_prefix("/").unwrap_or(&rel)),
            e,
        )
    }

    /// Depth-first walk with an explicit stack (no recursion: a hostile tree cannot overflow
    /// the thread's stack), at most [`fsat::MAX_DEPTH`] levels.
    fn walk(&mut self, root: BorrowedFd<'_>, proot: Option<BorrowedFd<'_>>) -> Result<()> {
        let mut rel = Vec::new();
        let dup = |fd: BorrowedFd<'_>| fsat::dup(fd).map_err(|e| self.err("dup", b"", e));
        let first = self.frame(dup(root)?, proot.map(dup).transpose()?, &rel)?;
        let mut stack = vec![first];
        loop {
            let depth = stack.len();
            let Some(top) = stack.last_mut() else { break };
            let Some(name) = top.names.get(top.next).cloned() else {
                // Directory done: what the parent has here and the layer has not is deleted.
                rel.truncate(top.rel_len);
                let frame = stack
                    .pop()
                    .ok_or_else(|| Error::Other("walk stack".into()))?;
                self.deletions(&frame, &mut rel)?;
                continue;
            };
            top.next += 1;
            rel.truncate(top.rel_len);
            rel.push(b'/');
            rel.extend_from_slice(name.to_bytes());
            let (dir, pdir) = (top.dir.as_fd(), top.pdir.as_ref().map(|f| f.as_fd()));
            let Some(st) = fsat::lstat_at_opt(dir, &name).map_err(|e| self.err("stat", &rel, e))?
            else {
                continue; // removed while we walk
            };
            let pst = match pdir {
                Some(p) => {
                    fsat::lstat_at_opt(p, &name).map_err(|e| self.err("stat parent's", &rel, e))?
                }
                None => None,
            };
            match &pst {
                None => self.out.push(change(&rel, ChangeKind::Add)),
                Some(p) => {
                    if self.differs(dir, pdir, &name, &st, p, &rel)? {
                        self.out.push(change(&rel, ChangeKind::Modify));
                    }
                }
            }
            if !(fsat::is_dir(&st) && st.st_dev == self.layer_dev) {
                continue;
            }
            if depth >= fsat::MAX_DEPTH {
                return Err(self.err("walk", &rel, fsat::too_deep()));
            }
            let child = fsat::open_dir_at(dir, &name).map_err(|e| self.err("open", &rel, e))?;
            let pchild = match (pdir, &pst) {
                (Some(p), Some(ps)) if fsat::is_dir(ps) && ps.st_dev == self.parent_dev => Some(
                    fsat::open_dir_at(p, &name).map_err(|e| self.err("open parent's", &rel, e))?,
                ),
                _ => None,
            };
            let frame = self.frame(child, pchild, &rel)?;
            stack.push(frame);
        }
        Ok(())
    }

    fn frame(&self, dir: OwnedFd, pdir: Option<OwnedFd>, rel: &[u8]) -> Result<Frame> {
        let names = fsat::list_dir(dir.as_fd()).map_err(|e| self.err("list", rel, e))?;
        Ok(Frame {
            dir,
            pdir,
            names,
            next: 0,
            rel_len: rel.len(),
        })
    }

    fn deletions(&mut self, frame: &Frame, rel: &mut Vec<u8>) -> Result<()> {
        let Some(p) = &frame.pdir else { return Ok(()) };
        let present: HashSet<&CStr> = frame.names.iter().map(|n| n.as_c_str()).collect();
        for pname in fsat::list_dir(p.as_fd()).map_err(|e| self.err("list parent's", rel, e))? {
            if !present.contains(pname.as_c_str()) {
                let base = rel.len();
                rel.push(b'/');
                rel.extend_from_slice(pname.to_bytes());
                self.out.push(change(rel, ChangeKind::Delete));
                rel.truncate(base);
            }
        }
        Ok(())
    }

    fn differs(
        &mut self,
        dir: BorrowedFd<'_>,
        pdir: Option<BorrowedFd<'_>>,
        name: &CStr,
        st: &libc::stat,
        pst: &libc::stat,
        rel: &[u8],
    ) -> Result<bool> {
        let Some(pdir) = pdir else { return Ok(true) };
        if st.st_mode != pst.st_mode || st.st_uid != pst.st_uid || st.st_gid != pst.st_gid {
            return Ok(true);
        }
        let ty = st.st_mode & libc::S_IFMT;
        if ty != libc::S_IFDIR && st.st_size != pst.st_size {
            return Ok(true);
        }
        if ty != libc::S_IFDIR && st.st_nlink > pst.st_nlink {
            return Ok(true); // a new hard link to it (containerd's HardlinkUnmodified)
        }
        if (ty == libc::S_IFCHR || ty == libc::S_IFBLK) && st.st_rdev != pst.st_rdev {
            return Ok(true);
        }
        if st.st_mtime != pst.st_mtime || st.st_mtime_nsec != pst.st_mtime_nsec {
            return Ok(true);
        }
        if ty == libc::S_IFLNK {
            let a = fsat::readlink_at(dir, name).map_err(|e| self.err("readlink", rel, e))?;
            let b =
                fsat::readlink_at(pdir, name).map_err(|e| self.err("readlink parent's", rel, e))?;
            if a != b {
                return Ok(true);
            }
        }
        let xa = carried_xattrs(dir, name).map_err(|e| self.err("list xattrs of", rel, e))?;
        let xb =
            carried_xattrs(pdir, name).map_err(|e| self.err("list xattrs of parent's", rel, e))?;
        if xa != xb {
            return Ok(true);
        }
        if ty == libc::S_IFREG && !(st.st_dev == pst.st_dev && st.st_ino == pst.st_ino) {
            return self.content_differs(dir, pdir, name, rel);
        }
        Ok(false)
    }

    /// Same size, same mtime: only the bytes can tell.
    fn content_differs(
        &mut self,
        dir: BorrowedFd<'_>,
        pdir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
    ) -> Result<bool> {
        let mut fa = fsat::open_read_at(dir, name).map_err(|e| self.err("open", rel, e))?;
        let mut fb =
            fsat::open_read_at(pdir, name).map_err(|e| self.err("open parent's", rel, e))?;
        loop {
            let n = read_full(&mut fa, &mut self.a).map_err(|e| self.err("read", rel, e))?;
            let m = read_full(&mut fb, &mut self.b[..])
                .map_err(|e| self.err("read parent's", rel, e))?;
            if n != m || self.a[..n] != self.b[..m] {
                return Ok(true);
            }
            if n < self.a.len() {
                return Ok(false);
            }
        }
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
pub(crate) fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read(&mut buf[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// A change path as tar-relative components; `/` itself gives no components.
pub(crate) fn change_components(path: &Path) -> Result<Vec<&[u8]>> {
    use std::os::unix::ffi::OsStrExt;
    components(path.as_os_str().as_bytes())
        .map_err(|why| Error::invalid(format!("change path {}: {why}", path.display())))
}

pub(crate) fn changes_size(layer_root: &Path, changes: &[Change]) -> Result<u64> {
    let root = fsat::open_root(layer_root).map_err(|e| Error::io("open", layer_root, e))?;
    let mut seen = HashSet::new();
    let mut total = 0u64;
    for c in changes {
        if c.kind == ChangeKind::Delete {
            continue;
        }
        let comps = change_components(&c.path)?;
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let full = || layer_root.join(c.path.strip_prefix("/").unwrap_or(&c.path));
        let dir = match open_dir_beneath(root.as_fd(), parent) {
            Ok(d) => d,
            Err(ResolveError::Missing) => {
                return Err(Error::io(
                    "stat",
                    full(),
                    io::Error::from_raw_os_error(libc::ENOENT),
                ))
            }
            Err(ResolveError::Unsafe) => {
                return Err(Error::invalid(format!(
                    "change path {}: a parent is a symlink",
                    c.path.display()
                )))
            }
            Err(ResolveError::Io(e)) => return Err(Error::io("open", full(), e)),
        };
        let cn = cname(name).map_err(|_| Error::invalid("NUL in change path"))?;
        let st = fsat::lstat_at(dir.as_fd(), &cn).map_err(|e| Error::io("stat", full(), e))?;
        if fsat::is_reg(&st) && seen.insert((st.st_dev, st.st_ino)) {
            total += st.st_size as u64;
        }
    }
    Ok(total)
}
