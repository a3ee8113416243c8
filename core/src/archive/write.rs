//! Writing the OCI layer tar of a change list.
//!
//! Rules (so the same tree always gives the same bytes, whichever driver lists the changes):
//! - Entries are sorted by their tar name, byte order (directories end in `/`, so a directory
//!   always precedes its content). Changed paths are written, and every ancestor directory of
//!   a changed or deleted path (but the root) whether listed or not, as Docker does, so a
//!   rebuilt layer has each ancestor's own mode, owner and times.
//! - Headers carry mode (with setuid/setgid/sticky), uid, gid, size, mtime (PAX for
//!   nanoseconds), no uname/gname; see [`super::header`].
//! - A deletion is a regular empty file `.wh.NAME` (mode 0600, 0:0, mtime 0). A deletion below
//!   another deleted directory is dropped (the directory's whiteout covers it).
//! - Opaque rule: with `parent_root`, when a directory D exists (as a directory) in both the
//!   layer and the parent, and every entry the parent has in D is listed as deleted (at least
//!   one), one `D/.wh..wh..opq` (0600, 0:0, mtime 0) replaces those whiteouts. A driver with a
//!   native diff produces the same marker for a recreated directory, so both give equal bytes.
//! - Hard links among the written entries: the first path in tar order carries the data, later
//!   ones are link entries to it.
//! - A layer path whose name starts with `.wh.` cannot be represented (readers would take it
//!   for a whiteout) and is refused with InvalidInput. `.whatever` is fine.
//! - Sockets are skipped (tar cannot carry them; Docker skips them too). The root is skipped.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::CStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::sync_channel;

use super::changes::{carried_xattrs, change_components};
use super::fsat::{self, cname};
use super::header::{self, kind, EntryMeta, BLOCK};
use super::path_safety::{components, join, open_dir_beneath, ResolveError};
use super::tarout::{Sink, TarOut};
use crate::error::{Error, Result};
use crate::layer::{Change, ChangeKind};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OUT_BUF: usize = 1024 * 1024;

enum Item {
    /// A path of the layer (relative key) with its lstat.
    Path(Vec<u8>, Box<libc::stat>),
    Marker,
}

/// Directory fds by key, remembering the last one (entries come grouped by directory).
struct Dirs<'a> {
    root: &'a OwnedFd,
    root_path: &'a Path,
    last: Option<(Vec<u8>, Rc<OwnedFd>)>,
}

impl Dirs<'_> {
    fn open(&mut self, comps: &[&[u8]]) -> Result<Rc<OwnedFd>> {
        let key = join(comps);
        if let Some((k, fd)) = &self.last {
            if *k == key {
                return Ok(fd.clone());
            }
        }
        let path = || self.root_path.join(bytes_path(&key));
        let fd = match open_dir_beneath(self.root.as_fd(), comps) {
            Ok(fd) => Rc::new(fd),
            Err(ResolveError::Missing) => {
                return Err(Error::io(
                    "open",
                    path(),
                    std::io::Error::from_raw_os_error(libc::ENOENT),
                ))
            }
            Err(ResolveError::Unsafe) => {
                return Err(Error::invalid(format!(
                    "layer path {:?} is reached through a symlink",
                    String::from_utf8_lossy(&key)
                )))
            }
            Err(ResolveError::Io(e)) => return Err(Error::io("open", path(), e)),
        };
        self.last = Some((key, fd.clone()));
        Ok(fd)
    }
}

fn split(key: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let comps: Vec<&[u8]> = key.split(|b| *b == b'/').collect();
    let (name, parent) = comps
        .split_last()
        .map(|(n, p)| (*n, p.to_vec()))
        .unwrap_or((key, Vec::new()));
    (parent, name)
}

pub(crate) fn write_diff(
    out: Sink<'_>,
    layer_root: &Path,
    changes: &[Change],
    parent_root: Option<&Path>,
) -> Result<()> {
    let layer = fsat::open_root(layer_root).map_err(|e| Error::io("open", layer_root, e))?;
    let mut present = BTreeSet::new();
    let mut deleted = BTreeSet::new();
    for c in changes {
        let comps = change_components(&c.path)?;
        let Some(name) = comps.last() else { continue };
        if name.starts_with(WHITEOUT_PREFIX) {
            return Err(Error::invalid(format!(
                "layer path {} cannot be represented in an OCI layer tar: names starting with \
                 `.wh.` are whiteout markers; rename the file",
                c.path.display()
            )));
        }
        let key = join(&comps);
        if key.contains(&0) {
            return Err(Error::invalid(format!(
                "change path {:?} contains a NUL byte",
                c.path
            )));
        }
        match c.kind {
            ChangeKind::Delete => deleted.insert(key),
            ChangeKind::Add | ChangeKind::Modify => present.insert(key),
        };
    }
    deleted.retain(|k| !present.contains(k));
    // A deletion inside a deleted directory is covered by the directory's whiteout.
    let covered: Vec<Vec<u8>> = deleted
        .iter()
        .filter(|k| ancestors(k).any(|a| deleted.contains(a)))
        .cloned()
        .collect();
    for k in covered {
        deleted.remove(&k);
    }
    // Every ancestor of a written or deleted path is written as a directory entry (Docker's
    // rule, see `changes::add_ancestor_dirs`), also when the caller's list lacks it.
    let ancestors_needed: Vec<Vec<u8>> = present
        .iter()
        .chain(deleted.iter())
        .flat_map(|k| ancestors(k))
        .filter(|a| !present.contains(*a) && !deleted.contains(*a))
        .map(|a| a.to_vec())
        .collect();
    present.extend(ancestors_needed);

    let mut items: Vec<(Vec<u8>, Item)> = Vec::with_capacity(present.len() + deleted.len());
    let parent = match parent_root {
        Some(p) => Some(fsat::open_root(p).map_err(|e| Error::io("open", p, e))?),
        None => None,
    };
    // Group deletions by directory for the opaque rule.
    let mut by_dir: HashMap<Vec<u8>, Vec<&[u8]>> = HashMap::new();
    for k in &deleted {
        let (dir, name) = match k.iter().rposition(|b| *b == b'/') {
            Some(i) => (k[..i].to_vec(), &k[i + 1..]),
            None => (Vec::new(), &k[..]),
        };
        by_dir.entry(dir).or_default().push(name);
    }
    for (dir, names) in &by_dir {
        // A directory replaced by a file (or symlink...) in the layer hides everything below
        // it already; whiteouts inside it could not even be applied.
        if replaced_by_non_dir(&layer, dir)? {
            continue;
        }
        let opaque = match &parent {
            Some(p) => is_opaque(&layer, p, dir, names)?,
            None => false,
        };
        if opaque {
            items.push((marker_name(dir, OPAQUE_MARKER), Item::Marker));
        } else {
            for n in names {
                let mut wh = WHITEOUT_PREFIX.to_vec();
                wh.extend_from_slice(n);
                items.push((marker_name(dir, &wh), Item::Marker));
            }
        }
    }

    let mut dirs = Dirs {
        root: &layer,
        root_path: layer_root,
        last: None,
    };
    for key in present {
        let (pcomps, name) = split(&key);
        let dir = dirs.open(&pcomps)?;
        let cn = cname(name).map_err(|_| Error::invalid("NUL in change path"))?;
        let st = fsat::lstat_at(dir.as_fd(), &cn)
            .map_err(|e| Error::io("stat", layer_root.join(bytes_path(&key)), e))?;
        let ty = st.st_mode & libc::S_IFMT;
        if ty == libc::S_IFSOCK {
            tracing::debug!(path = %String::from_utf8_lossy(&key), "socket not written to layer tar");
            continue;
        }
        let mut tar_name = key.clone();
        if ty == libc::S_IFDIR {
            tar_name.push(b'/');
        }
        items.push((tar_name, Item::Path(key, Box::new(st))));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));

    drop(dirs);
    let mut w = TarOut::new(OUT_BUF, out);
    let werr = |e| Error::io("write", "layer tar", e);
    // A second thread opens what the entries need (xattr lists, symlink targets, open files
    // with their fstat) a little ahead, in tar order; this one writes headers and content.
    std::thread::scope(|scope| -> Result<()> {
        let (tx, rx) = sync_channel::<Result<Option<Prepared>>>(PREFETCH);
        let (items_ref, layer_ref) = (&items, &layer);
        std::thread::Builder::new()
            .name("layer-prefetch".into())
            .spawn_scoped(scope, move || {
                let mut dirs = Dirs {
                    root: layer_ref,
                    root_path: layer_root,
                    last: None,
                };
                let mut seen_links = HashSet::new();
                for (_, item) in items_ref {
                    let msg = match item {
                        Item::Marker => Ok(None),
                        Item::Path(key, st) => {
                            prepare(&mut dirs, layer_root, key, st, &mut seen_links).map(Some)
                        }
                    };
                    let failed = msg.is_err();
                    if tx.send(msg).is_err() || failed {
                        return;
                    }
                }
            })
            .map_err(|e| Error::io("start a thread for", layer_root, e))?;
        let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        let stopped = || Error::Other("layer tar: the prefetch thread stopped".into());
        for (tar_name, item) in &items {
            let prepared = rx.recv().map_err(|_| stopped())??;
            match (item, prepared) {
                (Item::Marker, _) => {
                    let meta = EntryMeta {
                        kind: kind::REG,
                        mode: 0o600,
                        ..EntryMeta::default()
                    };
                    header::write_header(&mut w, tar_name, &meta).map_err(werr)?;
                }
                (Item::Path(key, st), Some(p)) => {
                    write_path(&mut w, layer_root, tar_name, key, st, &mut links, p)?;
                }
                (Item::Path(..), None) => return Err(stopped()),
            }
        }
        Ok(())
    })?;
    w.write_all(&[0u8; 2 * BLOCK]).map_err(werr)?;
    w.flush().map_err(werr)?;
    Ok(())
}

/// Entries prepared ahead of the writer (bounds the open files in flight).
const PREFETCH: usize = 64;

/// What writing one path needs from the filesystem besides its lstat.
struct Prepared {
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Symlink target.
    link: Vec<u8>,
    /// A regular file, open, with its fstat (`None` for other types and for hard links
    /// after the first, which carry no content).
    file: Option<(std::fs::File, libc::stat)>,
}

fn prepare(
    dirs: &mut Dirs<'_>,
    layer_root: &Path,
    key: &[u8],
    st: &libc::stat,
    seen_links: &mut HashSet<(u64, u64)>,
) -> Result<Prepared> {
    let (pcomps, name) = split(key);
    let dir = dirs.open(&pcomps)?;
    let cn: std::ffi::CString = cname(name).map_err(|_| Error::invalid("NUL in change path"))?;
    let full = || layer_root.join(bytes_path(key));
    let ty = st.st_mode & libc::S_IFMT;
    let mut prepared = Prepared {
        xattrs: carried_xattrs(dir.as_fd(), &cn)
            .map_err(|e| Error::io("list xattrs of", full(), e))?,
        link: Vec::new(),
        file: None,
    };
    // The same rule as write_path's: only the first path of a hard-linked inode has content.
    if ty != libc::S_IFDIR && st.st_nlink > 1 && !seen_links.insert((st.st_dev, st.st_ino)) {
        return Ok(prepared);
    }
    match ty {
        libc::S_IFLNK => {
            prepared.link = fsat::readlink_at(dir.as_fd(), &cn)
                .map_err(|e| Error::io("readlink", full(), e))?;
        }
        libc::S_IFREG => {
            let file =
                fsat::open_read_at(dir.as_fd(), &cn).map_err(|e| Error::io("open", full(), e))?;
            let now = fsat::fstat(file.as_fd()).map_err(|e| Error::io("stat", full(), e))?;
            prepared.file = Some((file, now));
        }
        _ => {}
    }
    Ok(prepared)
}

fn bytes_path(key: &[u8]) -> &Path {
    Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(key))
}

fn write_path(
    w: &mut TarOut<'_>,
    layer_root: &Path,
    tar_name: &[u8],
    key: &[u8],
    st: &libc::stat,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    prepared: Prepared,
) -> Result<()> {
    let full = || layer_root.join(bytes_path(key));
    let werr = |e| Error::io("write", "layer tar", e);
    let ty = st.st_mode & libc::S_IFMT;
    let mut meta = EntryMeta {
        kind: kind::REG,
        mode: st.st_mode & 0o7777,
        uid: u64::from(st.st_uid),
        gid: u64::from(st.st_gid),
        size: 0,
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        link: Vec::new(),
        devmajor: 0,
        devminor: 0,
        xattrs: prepared.xattrs,
    };
    if ty != libc::S_IFDIR && st.st_nlink > 1 {
        let id = (st.st_dev, st.st_ino);
        if let Some(first) = links.get(&id) {
            meta.kind = kind::LINK;
            meta.link = first.clone();
            header::write_header(w, tar_name, &meta).map_err(werr)?;
            return Ok(());
        }
        links.insert(id, tar_name.to_vec());
    }
    match ty {
        libc::S_IFDIR => meta.kind = kind::DIR,
        libc::S_IFLNK => {
            meta.kind = kind::SYMLINK;
            meta.link = prepared.link;
        }
        libc::S_IFCHR | libc::S_IFBLK => {
            meta.kind = if ty == libc::S_IFCHR {
                kind::CHAR
            } else {
                kind::BLOCK
            };
            meta.devmajor = libc::major(st.st_rdev);
            meta.devminor = libc::minor(st.st_rdev);
        }
        libc::S_IFIFO => meta.kind = kind::FIFO,
        _ => {
            meta.size = st.st_size as u64;
            let (file, now) = prepared.file.ok_or_else(|| {
                Error::Other(format!(
                    "{} was not opened for the layer tar",
                    full().display()
                ))
            })?;
            if !fsat::is_reg(&now) || now.st_ino != st.st_ino {
                return Err(Error::Other(format!(
                    "{} was replaced while its layer tar was written; retry when the layer is \
                     not in use",
                    full().display()
                )));
            }
            header::write_header(w, tar_name, &meta).map_err(werr)?;
            // Fewer allocated blocks than bytes: the file has holes worth skipping.
            let sparse = (now.st_blocks as u64) * 512 < meta.size;
            copy_exact(file, w, meta.size, sparse, &full())?;
            header::write_padding(w, meta.size).map_err(werr)?;
            return Ok(());
        }
    }
    header::write_header(w, tar_name, &meta).map_err(werr)?;
    Ok(())
}

/// Copies exactly `size` bytes; a file that shrank or grew since its lstat is an error (the
/// tar would be corrupt otherwise). A file with holes (fewer blocks than its size) is read
/// segment by segment with SEEK_DATA/SEEK_HOLE and its holes written as zeros unread. The
/// last read asks for one byte more than is left, so that seeing the end costs no extra read.
fn copy_exact(
    file: std::fs::File,
    w: &mut TarOut<'_>,
    size: u64,
    sparse: bool,
    path: &Path,
) -> Result<()> {
    let shrank = || {
        Error::Other(format!(
            "{} shrank while its layer tar was written; retry when the layer is not in use",
            path.display()
        ))
    };
    let grew = || {
        Error::Other(format!(
            "{} grew while its layer tar was written; retry when the layer is not in use",
            path.display()
        ))
    };
    let werr = |e| Error::io("write", "layer tar", e);
    let rerr = |e| Error::io("read", path, e);
    let mut pos = 0u64;
    let mut end_seen = false;
    while pos < size {
        let (data, hole) = if sparse {
            next_data(&file, pos, size)
        } else {
            (pos, size)
        };
        write_zeros(w, data - pos).map_err(werr)?;
        pos = data;
        while pos < hole {
            let left = hole - pos;
            let ask = if hole == size { left + 1 } else { left };
            let (n, asked) = w.read_from(&file, pos, ask).map_err(rerr)?;
            let (n, asked) = (n as u64, asked as u64);
            if n == 0 {
                return Err(shrank());
            }
            if n > left {
                w.unread((n - left) as usize);
                return Err(grew());
            }
            pos += n;
            // All that was left, on a read that asked for one byte more: the end of the file.
            end_seen = asked == ask && ask > left && n == left;
        }
    }
    if !end_seen && w.read_from(&file, size, 1).map_err(rerr)?.0 != 0 {
        w.unread(1);
        return Err(grew());
    }
    if sparse {
        // A hole reaches to the end of the file, so a shrink there would read as zeros.
        let now = fsat::fstat(file.as_fd()).map_err(|e| Error::io("stat", path, e))?;
        if (now.st_size as u64) < size {
            return Err(shrank());
        }
    }
    Ok(())
}

/// The next data segment `[data, hole)` at or after `pos`, clamped to `size`. Without
/// SEEK_DATA support, everything from `pos` is data.
fn next_data(file: &std::fs::File, pos: u64, size: u64) -> (u64, u64) {
    use std::os::fd::AsRawFd;
    let seek = |whence| {
        // SAFETY: valid fd; lseek has no memory effects.
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let data = match seek(libc::SEEK_DATA) {
        Ok(d) => d.min(size),
        // ENXIO: only a hole from here to the end.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => size,
        Err(_) => return (pos, size),
    };
    if data >= size {
        return (size, size);
    }
    let hole = {
        // SAFETY: as above.
        let r = unsafe { libc::lseek(file.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE) };
        if r < 0 {
            size
        } else {
            (r as u64).min(size)
        }
    };
    (data, hole.max(data))
}

fn write_zeros(w: &mut dyn Write, mut len: u64) -> std::io::Result<()> {
    static ZEROS: [u8; 64 * 1024] = [0u8; 64 * 1024];
    while len > 0 {
        let n = (ZEROS.len() as u64).min(len) as usize;
        w.write_all(&ZEROS[..n])?;
        len -= n as u64;
    }
    Ok(())
}

fn marker_name(dir: &[u8], marker: &[u8]) -> Vec<u8> {
    let mut n = dir.to_vec();
    if !n.is_empty() {
        n.push(b'/');
    }
    n.extend_from_slice(marker);
    n
}

/// Proper ancestors of a key (`a/b/c` gives `a/b`, `a`).
fn ancestors(key: &[u8]) -> impl Iterator<Item = &[u8]> {
    key.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .map(move |(i, _)| &key[..i])
}

/// Whether `dir` exists in the layer as something other than a directory.
fn replaced_by_non_dir(layer: &OwnedFd, dir: &[u8]) -> Result<bool> {
    let comps = components(dir).map_err(|why| Error::invalid(format!("change path: {why}")))?;
    match open_dir_beneath(layer.as_fd(), &comps) {
        Ok(_) | Err(ResolveError::Missing) => Ok(false),
        Err(ResolveError::Unsafe) => Ok(true),
        Err(ResolveError::Io(e)) => Err(Error::io("open", bytes_path(dir), e)),
    }
}

/// The opaque rule: D is a directory in both trees and all of the parent's entries in D are
/// among `deleted` (the names deleted in D).
fn is_opaque(layer: &OwnedFd, parent: &OwnedFd, dir: &[u8], deleted: &[&[u8]]) -> Result<bool> {
    let comps = components(dir).map_err(|why| Error::invalid(format!("change path: {why}")))?;
    let open = |root: &OwnedFd| match open_dir_beneath(root.as_fd(), &comps) {
        Ok(fd) => Ok(Some(fd)),
        Err(ResolveError::Missing) | Err(ResolveError::Unsafe) => Ok(None),
        Err(ResolveError::Io(e)) => Err(Error::io("open", bytes_path(dir), e)),
    };
    if open(layer)?.is_none() {
        return Ok(false);
    }
    let Some(pdir) = open(parent)? else {
        return Ok(false);
    };
    let names =
        fsat::list_dir(pdir.as_fd()).map_err(|e| Error::io("list parent's", bytes_path(dir), e))?;
    let deleted: std::collections::HashSet<&[u8]> = deleted.iter().copied().collect();
    Ok(!names.is_empty()
        && names
            .iter()
            .all(|n: &std::ffi::CString| deleted.contains(CStr::to_bytes(n))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `copy_exact` of a file against the size its lstat gave: equal, grown or shrunk since;
    /// dense and sparse, with every end-of-file position relative to the output buffer.
    #[test]
    fn copy_exact_sees_a_file_that_grew_or_shrank() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("f");
        for (len, sparse) in [(0usize, false), (5000, false), (4096, false), (9000, true)] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8 | 1).collect();
            std::fs::write(&path, &data).unwrap();
            for cap in [1024usize, 4096, 8192, 1 << 20] {
                let run = |size: u64| {
                    let mut sink = Vec::new();
                    let file = std::fs::File::open(&path).unwrap();
                    let mut out = TarOut::new(cap, Sink::Writer(&mut sink));
                    let r = copy_exact(file, &mut out, size, sparse, &path);
                    out.flush().unwrap();
                    (r, sink)
                };
                let (r, sink) = run(len as u64);
                r.unwrap();
                assert_eq!(sink, data, "len {len} cap {cap}");
                if len > 0 {
                    let err = run(len as u64 - 1).0.unwrap_err().to_string();
                    assert!(err.contains("grew"), "len {len} cap {cap}: {err}");
                }
                let err = run(len as u64 + 1).0.unwrap_err().to_string();
                assert!(err.contains("shrank"), "len {len} cap {cap}: {err}");
            }
        }
    }
}
