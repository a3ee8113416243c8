//! Native change detection, as overlay2 does it: read the layer's upper (diff) directory
//! instead of walking the whole tree. A 0/0 character device is a deletion; an opaque directory
//! hides everything its parent had there, so the parent's entries it hides are listed as
//! deletions, which makes the list equal to the naive walk's. Entries present in the diff
//! directory are compared with the parent (mounted read-only) by the naive walk's rules, so a
//! copied-up but unchanged file is not reported.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use strata_core::{Change, ChangeKind, Error, Result};

use crate::fs::sys;

const OPAQUE: &CStr = c"trusted.overlay.opaque";

/// Lists what the layer whose upper directory is `diff` changed against `parent` (the parent's
/// full tree, or None for a base layer). Sorted, paths absolute inside the layer. Works on
/// directory fds, so paths longer than PATH_MAX are fine.
pub fn native_changes(diff: &Path, parent: Option<&Path>) -> Result<Vec<Change>> {
    let open = |p: &Path| -> Result<OwnedFd> {
        let c = CString::new(p.as_os_str().as_bytes())
            .map_err(|_| Error::invalid(format!("path {} holds a NUL", p.display())))?;
        sys::open_dir(libc::AT_FDCWD, &c).map_err(|e| Error::io("open", p, e))
    };
    let root = open(diff)?;
    let proot = parent.map(open).transpose()?;
    let mut w = Walker {
        diff,
        out: Vec::new(),
        links: HashMap::new(),
    };
    let root_hides = proot.is_some() && is_opaque(root.as_raw_fd());
    let mut rel = Vec::new();
    w.walk(
        root.as_raw_fd(),
        proot.as_ref().map(|f| f.as_raw_fd()),
        &mut rel,
        root_hides,
    )?;
    let mut out = w.out;
    for names in w.links.into_values() {
        if names.iter().any(|(_, listed)| *listed) {
            for (rel, listed) in names {
                if !listed {
                    out.push(change(&rel, ChangeKind::Modify));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

fn is_opaque(dir: RawFd) -> bool {
    let mut buf = [0u8; 4];
    matches!(sys::fgetxattr(dir, OPAQUE, &mut buf), Ok(1) if buf[0] == b'y')
}

fn stat_opt(dir: RawFd, name: &CStr) -> std::io::Result<Option<libc::stat>> {
    match sys::fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The xattrs a layer tar carries (the naive diff's rule), sorted.
fn carried_xattrs(dir: RawFd, name: &CStr) -> std::io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let name = OsStr::from_bytes(name.to_bytes());
    sys::with_proc_path(dir, name, |p| {
        let names = match sys::list_xattr_vec(p) {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let carried = n.starts_with(b"user.")
                || n == b"security.capability"
                || (n.starts_with(b"trusted.") && !n.starts_with(b"trusted.overlay."));
            if !carried {
                continue;
            }
            let cn =
                CString::new(n).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
            if let Some(v) = sys::get_xattr_vec(p, &cn)? {
                out.push((n.to_vec(), v));
            }
        }
        out.sort();
        Ok(out)
    })
}

fn content_differs(dir: RawFd, pdir: RawFd, name: &CStr) -> std::io::Result<bool> {
    let a = sys::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    let b = sys::openat(pdir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    let mut ba = vec![0u8; 256 * 1024];
    let mut bb = vec![0u8; 256 * 1024];
    let mut off = 0u64;
    loop {
        let n = sys::pread(a.as_raw_fd(), &mut ba, off)?;
        let k = sys::pread(b.as_raw_fd(), &mut bb, off)?;
        if n != k || ba[..n] != bb[..k] {
            return Ok(true);
        }
        if n < ba.len() {
            return Ok(false);
        }
        off += n as u64;
    }
}

fn differs(
    dir: RawFd,
    pdir: RawFd,
    name: &CStr,
    st: &libc::stat,
    pst: &libc::stat,
) -> std::io::Result<bool> {
    if st.st_mode != pst.st_mode || st.st_uid != pst.st_uid || st.st_gid != pst.st_gid {
        return Ok(true);
    }
    let ty = st.st_mode & libc::S_IFMT;
    if ty != libc::S_IFDIR && st.st_size != pst.st_size {
        return Ok(true);
    }
    if (ty == libc::S_IFCHR || ty == libc::S_IFBLK) && st.st_rdev != pst.st_rdev {
        return Ok(true);
    }
    if st.st_mtime != pst.st_mtime || st.st_mtime_nsec != pst.st_mtime_nsec {
        return Ok(true);
    }
    if ty == libc::S_IFLNK && sys::readlinkat(dir, name)? != sys::readlinkat(pdir, name)? {
        return Ok(true);
    }
    if carried_xattrs(dir, name)? != carried_xattrs(pdir, name)? {
        return Ok(true);
    }
    if ty == libc::S_IFREG {
        return content_differs(dir, pdir, name);
    }
    Ok(false)
}

struct Walker<'a> {
    diff: &'a Path,
    out: Vec<Change>,
    /// Names of multiply-linked files in the upper directory, by inode, and whether each was
    /// listed: a link set must travel whole, or applying the diff splits it.
    links: HashMap<u64, Vec<(Vec<u8>, bool)>>,
}

fn change(rel: &[u8], kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(OsString::from_vec(rel.to_vec())),
        kind,
    }
}

impl Walker<'_> {
    fn err(&self, op: &'static str, rel: &[u8], e: std::io::Error) -> Error {
        let rel = OsStr::from_bytes(rel.strip_prefix(b"/").unwrap_or(rel));
        Error::io(op, self.diff.join(rel), e)
    }

    fn walk(
        &mut self,
        dir: RawFd,
        pdir: Option<RawFd>,
        rel: &mut Vec<u8>,
        hides_parent: bool,
    ) -> Result<()> {
        let mut entries = sys::read_dir(dir).map_err(|e| self.err("list", rel, e))?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        for e in &entries {
            let base = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(&e.name);
            let name =
                CString::new(e.name.clone()).map_err(|_| Error::Other("NUL in a name".into()))?;
            let Some(st) = stat_opt(dir, &name).map_err(|x| self.err("stat", rel, x))? else {
                rel.truncate(base);
                continue;
            };
            let pst = match pdir {
                Some(p) => stat_opt(p, &name).map_err(|x| self.err("stat parent's", rel, x))?,
                None => None,
            };
            if sys::is_whiteout(&st) {
                if pst.is_some() {
                    self.out.push(change(rel, ChangeKind::Delete));
                }
                rel.truncate(base);
                continue;
            }
            let listed = match (&pst, pdir) {
                (Some(p), Some(pd)) => {
                    let d =
                        differs(dir, pd, &name, &st, p).map_err(|x| self.err("compare", rel, x))?;
                    if d {
                        self.out.push(change(rel, ChangeKind::Modify));
                    }
                    d
                }
                _ => {
                    self.out.push(change(rel, ChangeKind::Add));
                    true
                }
            };
            if !sys::is_dir(&st) && st.st_nlink > 1 {
                self.links
                    .entry(st.st_ino)
                    .or_default()
                    .push((rel.clone(), listed));
            }
            if sys::is_dir(&st) {
                let child = sys::open_dir(dir, &name).map_err(|x| self.err("open", rel, x))?;
                let pchild = match (pdir, &pst) {
                    (Some(p), Some(ps)) if sys::is_dir(ps) => Some(
                        sys::open_dir(p, &name).map_err(|x| self.err("open parent's", rel, x))?,
                    ),
                    _ => None,
                };
                let hides = pchild.is_some() && (hides_parent || is_opaque(child.as_raw_fd()));
                self.walk(
                    child.as_raw_fd(),
                    pchild.as_ref().map(|f| f.as_raw_fd()),
                    rel,
                    hides,
                )?;
            }
            rel.truncate(base);
        }
        if let (true, Some(p)) = (hides_parent, pdir) {
            let present: HashSet<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
            let mut pentries = sys::read_dir(p).map_err(|x| self.err("list parent's", rel, x))?;
            pentries.sort_by(|a, b| a.name.cmp(&b.name));
            for pe in pentries {
                if !present.contains(pe.name.as_slice()) {
                    let base = rel.len();
                    rel.push(b'/');
                    rel.extend_from_slice(&pe.name);
                    self.out.push(change(rel, ChangeKind::Delete));
                    rel.truncate(base);
                }
            }
        }
        Ok(())
    }
}
