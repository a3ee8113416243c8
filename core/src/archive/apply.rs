//! Applying a layer tar to a directory, safely and in one streaming pass.
//!
//! Every entry is created by us with `*at` calls relative to its parent directory's fd (the
//! `tar` crate would write devices and fifos as regular files and knows no whiteouts). The
//! parent is opened with the rules of [`super::path_safety`], so nothing outside `dest` can be
//! touched: not through `..`, a symlink (old or made by this same tar), a hard link target, or
//! a whiteout. Absolute names and link targets are refused (Docker never writes them; a tar
//! that has them was not made as a layer), and so is a `.wh.*` name used as a directory
//! (`.wh../x`: a whiteout is a file, and one naming `..` could only aim outside).
//!
//! Order of metadata: content, then `lchown` (it clears setuid/setgid and file capabilities),
//! then the mode, then xattrs (security.capability must come after chown), then times.
//! Directory times are set at the very end, since creating children changes them.
//!
//! Whiteouts ([`WhiteoutMode`]):
//! - `.wh.NAME`: Delete removes `NAME` (a whole tree); OverlayMarkers makes `NAME` a 0/0 char
//!   device (owned like the whiteout entry).
//! - `DIR/.wh..wh..opq`: both modes remove everything in `DIR` this tar did not write itself
//!   (recursively: a directory the tar wrote keeps only what the tar wrote in it);
//!   OverlayMarkers then sets `trusted.overlay.opaque=y` on `DIR`.
//! - `trusted.overlay.*` xattrs in the tar are never applied: only the markers above make them.
//!
//! Also: missing parent directories are created 0755 root-owned (as Docker does); an entry
//! over an existing path of another type replaces it, a directory over a directory keeps its
//! content; aligned all-zero 4 KiB blocks of file data become holes; an xattr refused with
//! EPERM is a warning, EOPNOTSUPP an error unless `best_effort_xattrs`; paths deeper than
//! [`fsat::MAX_DEPTH`] levels are refused. Nothing is fsync'ed: durability is the caller's
//! (one syncfs for the whole layer beats one fsync per file).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, OsStr};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::compression::{decompressed, HashingReader};
use super::dircache::{CachedDir, DirCache, NewFileGroup};
use super::filewriter::{self, FileJob, FileWriter, MAX_DEFERRED};
use super::fsat::{self, cname, Time};
use super::header::kind;
use super::path_safety::{components, join, open_dir_beneath, ResolveError};
use super::reader::{Entry, TarReader};
use super::xattrs::{set_xattrs, XattrTarget};
use super::{ApplyConfig, ApplyStats, WhiteoutMode};
use crate::error::{Error, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Size of each chunk of a big file's data (the input is read in chunks by HashingReader).
const DATA_CHUNK: usize = 1024 * 1024;
/// Default ACLs override the umask for new files; with one around, creation's mode is not
/// predictable and every file gets its explicit chmod.
const DEFAULT_ACL_XATTR: &[u8] = b"system.posix_acl_default";

pub(crate) fn apply_layer(
    dest: &Path,
    input: &mut dyn Read,
    opts: &ApplyConfig,
) -> Result<ApplyStats> {
    let root = fsat::open_root(dest).map_err(|e| Error::io("open layer directory", dest, e))?;
    let (_, decoded) = decompressed(input)?;
    let mut tar = TarReader::new(HashingReader::new(decoded, opts.diff_id));
    let creation = Creation::probe(root.as_fd());
    let mut applier = Applier {
        root,
        dest,
        mode: opts.whiteouts,
        best_effort_xattrs: opts.best_effort_xattrs,
        written: Written::default(),
        dir_times: BTreeMap::new(),
        cache: DirCache::default(),
        buf: vec![0u8; DATA_CHUNK],
        content_bytes: 0,
        writer: FileWriter::start(),
        creation,
    };
    while let Some(entry) = tar.next_entry()? {
        applier.apply(&mut tar, &entry)?;
    }
    if let Some(w) = applier.writer.as_mut() {
        w.finish()?;
    }
    applier.finish()?;
    // Bytes of the current chunk not read yet were hashed with it.
    let (tar_bytes, diff_id) = tar.into_inner().finish()?;
    Ok(ApplyStats {
        tar_bytes,
        diff_id,
        content_bytes: applier.content_bytes,
    })
}

struct Applier<'a> {
    root: OwnedFd,
    dest: &'a Path,
    mode: WhiteoutMode,
    best_effort_xattrs: bool,
    /// Every path this tar created or wrote over (keys: components joined by `/`).
    written: Written,
    /// Directory times to set at the end.
    dir_times: BTreeMap<Vec<u8>, (Time, Time)>,
    /// Directories opened so far, by key.
    cache: DirCache,
    buf: Vec<u8>,
    content_bytes: u64,
    /// Finishes regular files on a second thread (`None`: in place).
    writer: Option<FileWriter>,
    creation: Creation,
}

/// What creating a file gives without being asked, so that chown and chmod run only when an
/// entry wants something else (GNU tar always runs both).
struct Creation {
    euid: u32,
    egid: u32,
    /// The umask (Linux reports it in /proc/self/status); `None`: unknown, always chmod.
    umask: Option<u32>,
    /// A default ACL on the target, or one set by this tar: creation modes are not
    /// predictable, always chmod.
    default_acls: bool,
}

impl Creation {
    fn probe(root: BorrowedFd<'_>) -> Self {
        // SAFETY: geteuid and getegid cannot fail.
        let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Self {
            euid,
            egid,
            umask: read_umask(),
            // An unsupported or unreadable xattr counts as "maybe": only a clear "no" lets
            // creation's mode stand.
            default_acls: !matches!(fsat::has_xattr(root, DEFAULT_ACL_XATTR), Ok(false)),
        }
    }

    /// The mode to create a regular file with, and whether it still needs its chmod.
    fn file_mode(&self, mode: u32) -> (u32, bool) {
        let perm = mode & 0o777;
        match self.umask {
            Some(umask) if !self.default_acls && mode & 0o7000 == 0 && perm & umask == 0 => {
                (perm, false)
            }
            _ => (0o600, true),
        }
    }

    /// Whether a file created in a directory with `group` needs a chown to be `uid:gid`.
    fn needs_chown(&self, uid: u32, gid: u32, group: NewFileGroup) -> bool {
        let created_gid = match group {
            NewFileGroup::Creator => self.egid,
            NewFileGroup::Dir(g) => g,
            NewFileGroup::Unknown => return true,
        };
        uid != self.euid || gid != created_gid
    }
}

fn read_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/thread-self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// The set of paths written so far, kept as 64-bit keyed hashes: a layer of a million files
/// costs 16 MB here instead of ~100 MB of path copies. The hash key is random per apply, so a
/// tar cannot aim at a collision; a chance one only spares a lower-layer entry from an opaque
/// marker's purge (never a write outside the target).
#[derive(Default)]
struct Written {
    state: std::collections::hash_map::RandomState,
    set: HashSet<u64>,
}

impl Written {
    fn hash(&self, key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.state, key)
    }
    fn insert(&mut self, key: &[u8]) {
        let h = self.hash(key);
        self.set.insert(h);
    }
    fn contains(&self, key: &[u8]) -> bool {
        self.set.contains(&self.hash(key))
    }
}

fn refuse(e: &Entry, why: impl std::fmt::Display) -> Error {
    Error::invalid(format!("layer tar entry {:?}: {why}", e.display()))
}

fn ids(e: &Entry) -> Result<(u32, u32)> {
    let uid = u32::try_from(e.uid).map_err(|_| refuse(e, format!("uid {} is too large", e.uid)))?;
    let gid = u32::try_from(e.gid).map_err(|_| refuse(e, format!("gid {} is too large", e.gid)))?;
    Ok((uid, gid))
}

impl Applier<'_> {
    fn path_of(&self, key: &[u8]) -> PathBuf {
        self.dest.join(OsStr::from_bytes(key))
    }

    fn apply(&mut self, tar: &mut TarReader<impl Read>, e: &Entry) -> Result<()> {
        if e.xattrs.iter().any(|(n, _)| n == DEFAULT_ACL_XATTR) {
            self.creation.default_acls = true;
        }
        if e.path.starts_with(b"/") {
            return Err(refuse(e, "absolute names are not allowed in a layer tar"));
        }
        let comps = components(&e.path).map_err(|why| refuse(e, why))?;
        if comps.len() > fsat::MAX_DEPTH {
            return Err(refuse(
                e,
                format!("nested deeper than {} levels", fsat::MAX_DEPTH),
            ));
        }
        let Some((name, parent)) = comps.split_last() else {
            return self.root_entry(e);
        };
        if parent.iter().any(|c| c.starts_with(WHITEOUT_PREFIX)) {
            // `.wh..` or `.wh.x` as a directory: whiteouts are files, and a marker that
            // names `..` could only aim outside its directory.
            return Err(refuse(e, "a whiteout marker cannot be a directory"));
        }
        if name.starts_with(WHITEOUT_PREFIX) {
            return self.whiteout(e, parent, name);
        }
        let key = join(&comps);
        let cn = cname(name).map_err(|_| refuse(e, "NUL in name"))?;
        match e.kind {
            kind::REG => self.regular(tar, e, parent, &cn, key),
            kind::DIR => self.directory(e, parent, &cn, key),
            kind::SYMLINK => self.symlink(e, parent, &cn, key),
            kind::LINK => self.hardlink(e, parent, &cn, key),
            kind::CHAR | kind::BLOCK | kind::FIFO => self.special(e, parent, &cn, key),
            b'S' => Err(refuse(
                e,
                "GNU sparse entries are not supported in layer tars",
            )),
            other => Err(refuse(
                e,
                format!("unsupported tar entry type {:?}", other as char),
            )),
        }
    }

    /// Opens the directory `comps` beneath the root. `create`: make missing directories
    /// (0755, owned by the caller, as Docker does); otherwise a missing one is `None`.
    fn dir(
        &mut self,
        e: &Entry,
        comps: &[&[u8]],
        create: bool,
        what: &str,
    ) -> Result<Option<Rc<OwnedFd>>> {
        Ok(self.cached_dir(e, comps, create, what)?.map(|d| d.fd))
    }

    /// [`Self::dir`] with what the cache knows about the directory.
    fn cached_dir(
        &mut self,
        e: &Entry,
        comps: &[&[u8]],
        create: bool,
        what: &str,
    ) -> Result<Option<CachedDir>> {
        let key = join(comps);
        if let Some(d) = self.cache.get(&key) {
            return Ok(Some(d));
        }
        let fd = match open_dir_beneath(self.root.as_fd(), comps) {
            Ok(fd) => fd,
            Err(ResolveError::Missing) if create => self.create_dirs(e, comps, what)?,
            Err(ResolveError::Missing) => return Ok(None),
            Err(ResolveError::Unsafe) => return Err(unsafe_parent(e, what, &key)),
            Err(ResolveError::Io(err)) => return Err(Error::io("open", self.path_of(&key), err)),
        };
        let dir = CachedDir::new(fd);
        self.cache.insert(key, dir.clone());
        Ok(Some(dir))
    }

    fn create_dirs(&mut self, e: &Entry, comps: &[&[u8]], what: &str) -> Result<OwnedFd> {
        let mut cur =
            fsat::dup(self.root.as_fd()).map_err(|err| Error::io("dup", self.dest, err))?;
        for i in 0..comps.len() {
            let c = cname(comps[i]).map_err(|_| refuse(e, "NUL in name"))?;
            let key = join(&comps[..=i]);
            let next = match fsat::open_dir_at(cur.as_fd(), &c) {
                Ok(fd) => fd,
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {
                    match fsat::mkdir_at(cur.as_fd(), &c, 0o755) {
                        Ok(()) => {}
                        Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(err) => {
                            return Err(Error::io("create directory", self.path_of(&key), err))
                        }
                    }
                    self.written.insert(&key);
                    let fd = fsat::open_dir_at(cur.as_fd(), &c)
                        .map_err(|err| Error::io("open", self.path_of(&key), err))?;
                    // 0755 whatever the umask, so the result does not depend on the caller.
                    fsat::fchmod(fd.as_fd(), 0o755)
                        .map_err(|err| Error::io("chmod", self.path_of(&key), err))?;
                    fd
                }
                Err(err) if matches!(err.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => {
                    return Err(unsafe_parent(e, what, &key))
                }
                Err(err) => return Err(Error::io("open", self.path_of(&key), err)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Creates an entry with `make`; if the name is taken, removes what is there (a whole tree
    /// for a directory) and tries again. With `keep_dir`, an existing directory is kept
    /// instead (`Ok(false)`): a directory entry over a directory updates its metadata only.
    fn create(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        key: &[u8],
        keep_dir: bool,
        op: &'static str,
        mut make: impl FnMut() -> std::io::Result<()>,
    ) -> Result<bool> {
        match make() {
            Ok(()) => return Ok(true),
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
            Err(err) => return Err(Error::io(op, self.path_of(key), err)),
        }
        if keep_dir {
            let st = fsat::lstat_at(parent, name)
                .map_err(|err| Error::io("stat", self.path_of(key), err))?;
            if fsat::is_dir(&st) {
                return Ok(false);
            }
        }
        self.remove(parent, name, key)?;
        make().map_err(|err| Error::io(op, self.path_of(key), err))?;
        Ok(true)
    }

    fn remove(&mut self, parent: BorrowedFd<'_>, name: &CStr, key: &[u8]) -> Result<()> {
        fsat::remove_at(parent, name).map_err(|err| Error::io("remove", self.path_of(key), err))?;
        self.forget_tree(key);
        Ok(())
    }

    /// `key` and everything below it is gone: drop cached fds and pending times for them.
    fn forget_tree(&mut self, key: &[u8]) {
        self.cache.forget_tree(key);
        self.dir_times.remove(key);
        let mut prefix = key.to_vec();
        prefix.push(b'/');
        let doomed: Vec<Vec<u8>> = self
            .dir_times
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.dir_times.remove(&k);
        }
    }

    fn set_xattrs(&self, e: &Entry, key: &[u8], target: XattrTarget<'_>) -> Result<()> {
        if e.xattrs.is_empty() {
            return Ok(());
        }
        set_xattrs(
            &e.xattrs,
            self.best_effort_xattrs,
            &|| self.path_of(key),
            target,
        )
    }

    fn regular(
        &mut self,
        tar: &mut TarReader<impl Read>,
        e: &Entry,
        parent: &[&[u8]],
        name: &CStr,
        key: Vec<u8>,
    ) -> Result<()> {
        let (uid, gid) = ids(e)?;
        let pdir = self
            .cached_dir(e, parent, true, "its parent directory")?
            .ok_or_else(|| Error::Other("parent directory not created".into()))?;
        let pfd = pdir.fd.as_fd();
        let (create_mode, needs_chmod) = self.creation.file_mode(e.mode);
        let mut file = None;
        self.create(pfd, name, &key, false, "create", || {
            file = Some(fsat::create_file_mode_at(pfd, name, create_mode)?);
            Ok(())
        })?;
        let file = file.ok_or_else(|| Error::Other("file not created".into()))?;
        let mut job = FileJob {
            file,
            data: Vec::new(),
            chown: self
                .creation
                .needs_chown(uid, gid, pdir.new_file_group)
                .then_some((uid, gid)),
            chmod: needs_chmod.then_some(e.mode),
            xattrs: e.xattrs.clone(),
            best_effort_xattrs: self.best_effort_xattrs,
            times: (e.atime.unwrap_or(e.mtime), e.mtime),
            path: self.path_of(&key),
        };
        match self.writer.as_mut() {
            Some(writer) if e.size <= MAX_DEFERRED => {
                job.data = writer.buffer();
                // A recycled buffer keeps its old bytes: only growth is zero-filled, and
                // everything is overwritten by the read below.
                job.data.resize(e.size as usize, 0);
                tar.read_data_exact(&mut job.data)?;
                writer.submit(job)?;
            }
            _ => {
                write_sparse(tar, &job.file, e.size, &mut self.buf).map_err(|err| match err {
                    DataError::Tar(t) => t,
                    DataError::Io(io) => Error::io("write", self.path_of(&key), io),
                })?;
                filewriter::finish_metadata(&job)?;
            }
        }
        self.content_bytes += e.size;
        self.written.insert(&key);
        Ok(())
    }

    /// The parent directory of a new entry (created if missing).
    fn parent(&mut self, e: &Entry, parent: &[&[u8]]) -> Result<Rc<OwnedFd>> {
        self.dir(e, parent, true, "its parent directory")?
            .ok_or_else(|| Error::Other("parent directory not created".into()))
    }

    fn directory(&mut self, e: &Entry, parent: &[&[u8]], name: &CStr, key: Vec<u8>) -> Result<()> {
        let (uid, gid) = ids(e)?;
        let pfd = self.parent(e, parent)?;
        self.create(pfd.as_fd(), name, &key, true, "create directory", || {
            fsat::mkdir_at(pfd.as_fd(), name, 0o700)
        })?;
        let fd = fsat::open_dir_at(pfd.as_fd(), name)
            .map_err(|err| Error::io("open", self.path_of(&key), err))?;
        self.dir_metadata(e, &key, fd.as_fd(), uid, gid)?;
        self.written.insert(&key);
        Ok(())
    }

    fn dir_metadata(
        &mut self,
        e: &Entry,
        key: &[u8],
        fd: BorrowedFd<'_>,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        // Its group and setgid bit decide new files' group: what the cache knew is stale.
        self.cache.invalidate(key);
        let p = || self.path_of(key);
        fsat::fchown(fd, uid, gid).map_err(|err| Error::io("chown", p(), err))?;
        fsat::fchmod(fd, e.mode).map_err(|err| Error::io("chmod", p(), err))?;
        self.set_xattrs(e, key, XattrTarget::Fd(fd))?;
        self.dir_times
            .insert(key.to_vec(), (e.atime.unwrap_or(e.mtime), e.mtime));
        Ok(())
    }

    /// `./` or `/`: the layer directory itself; only its metadata can change.
    fn root_entry(&mut self, e: &Entry) -> Result<()> {
        if e.kind != kind::DIR {
            return Err(refuse(e, "names the layer root but is not a directory"));
        }
        let (uid, gid) = ids(e)?;
        let fd = fsat::dup(self.root.as_fd()).map_err(|err| Error::io("dup", self.dest, err))?;
        self.dir_metadata(e, b"", fd.as_fd(), uid, gid)
    }

    fn symlink(&mut self, e: &Entry, parent: &[&[u8]], name: &CStr, key: Vec<u8>) -> Result<()> {
        let (uid, gid) = ids(e)?;
        if e.link.is_empty() {
            return Err(refuse(e, "symlink with an empty target"));
        }
        let target = cname(&e.link).map_err(|_| refuse(e, "NUL in link target"))?;
        let pfd = self.parent(e, parent)?;
        self.create(pfd.as_fd(), name, &key, false, "create symlink", || {
            fsat::symlink_at(&target, pfd.as_fd(), name)
        })?;
        self.finish_at(e, &key, pfd.as_fd(), name, uid, gid, None)
    }

    fn special(&mut self, e: &Entry, parent: &[&[u8]], name: &CStr, key: Vec<u8>) -> Result<()> {
        let (uid, gid) = ids(e)?;
        let (ty, dev) = match e.kind {
            kind::CHAR => (libc::S_IFCHR, libc::makedev(e.devmajor, e.devminor)),
            kind::BLOCK => (libc::S_IFBLK, libc::makedev(e.devmajor, e.devminor)),
            _ => (libc::S_IFIFO, 0),
        };
        let pfd = self.parent(e, parent)?;
        self.create(pfd.as_fd(), name, &key, false, "mknod", || {
            fsat::mknod_at(pfd.as_fd(), name, ty | (e.mode & 0o777), dev)
        })?;
        self.finish_at(e, &key, pfd.as_fd(), name, uid, gid, Some(e.mode))
    }

    /// Ownership, mode (not for symlinks), xattrs and times of an entry reached by name.
    #[allow(clippy::too_many_arguments)]
    fn finish_at(
        &mut self,
        e: &Entry,
        key: &[u8],
        dir: BorrowedFd<'_>,
        name: &CStr,
        uid: u32,
        gid: u32,
        mode: Option<u32>,
    ) -> Result<()> {
        let p = || self.path_of(key);
        fsat::lchown_at(dir, name, uid, gid).map_err(|err| Error::io("chown", p(), err))?;
        if let Some(mode) = mode {
            fsat::chmod_at(dir, name, mode).map_err(|err| Error::io("chmod", p(), err))?;
        }
        self.set_xattrs(e, key, XattrTarget::At(dir, name))?;
        fsat::lutimes_at(dir, name, e.atime.unwrap_or(e.mtime), e.mtime)
            .map_err(|err| Error::io("set times", p(), err))?;
        self.written.insert(key);
        Ok(())
    }

    fn hardlink(&mut self, e: &Entry, parent: &[&[u8]], name: &CStr, key: Vec<u8>) -> Result<()> {
        if e.link.starts_with(b"/") {
            return Err(refuse(
                e,
                "an absolute hard link target is not allowed in a layer tar",
            ));
        }
        let tcomps = components(&e.link).map_err(|why| {
            refuse(
                e,
                format!(
                    "hard link target {:?}: {why}",
                    String::from_utf8_lossy(&e.link)
                ),
            )
        })?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(refuse(e, "hard link to the layer root"));
        };
        let tkey = join(&tcomps);
        if tkey == key {
            return Err(refuse(e, "hard link to itself"));
        }
        let what = "its hard link target";
        let missing = || {
            refuse(
                e,
                format!(
                    "hard link target {:?} does not exist",
                    String::from_utf8_lossy(&tkey)
                ),
            )
        };
        let tdir = self.dir(e, tparent, false, what)?.ok_or_else(missing)?;
        let tcn = cname(tname).map_err(|_| refuse(e, "NUL in link target"))?;
        let tst = fsat::lstat_at_opt(tdir.as_fd(), &tcn)
            .map_err(|err| Error::io("stat", self.path_of(&tkey), err))?
            .ok_or_else(missing)?;
        if fsat::is_dir(&tst) {
            return Err(refuse(e, "hard link to a directory"));
        }
        let pfd = self.parent(e, parent)?;
        self.create(pfd.as_fd(), name, &key, false, "create hard link", || {
            fsat::link_at(tdir.as_fd(), &tcn, pfd.as_fd(), name)
        })?;
        self.written.insert(&key);
        Ok(())
    }

    fn whiteout(&mut self, e: &Entry, parent: &[&[u8]], name: &[u8]) -> Result<()> {
        if name == OPAQUE_MARKER {
            return self.opaque(e, parent);
        }
        let target = &name[WHITEOUT_PREFIX.len()..];
        if target.is_empty()
            || target == b"."
            || target == b".."
            || target.starts_with(WHITEOUT_PREFIX)
        {
            return Err(refuse(
                e,
                "is not a valid whiteout (it names no file, `.`, `..` or another marker)",
            ));
        }
        let tcn = cname(target).map_err(|_| refuse(e, "NUL in name"))?;
        let mut tkey = join(parent);
        if !tkey.is_empty() {
            tkey.push(b'/');
        }
        tkey.extend_from_slice(target);
        match self.mode {
            WhiteoutMode::Delete => {
                let Some(dir) = self.dir(e, parent, false, "its parent directory")? else {
                    return Ok(()); // nothing there to delete
                };
                self.remove(dir.as_fd(), &tcn, &tkey)
            }
            WhiteoutMode::OverlayMarkers => {
                let (uid, gid) = ids(e)?;
                let dir = self.parent(e, parent)?;
                self.create(dir.as_fd(), &tcn, &tkey, false, "create whiteout", || {
                    fsat::mknod_at(dir.as_fd(), &tcn, libc::S_IFCHR, 0)
                })?;
                if uid != 0 || gid != 0 {
                    fsat::lchown_at(dir.as_fd(), &tcn, uid, gid)
                        .map_err(|err| Error::io("chown", self.path_of(&tkey), err))?;
                }
                self.written.insert(&tkey);
                Ok(())
            }
        }
    }

    fn opaque(&mut self, e: &Entry, dir_comps: &[&[u8]]) -> Result<()> {
        let key = join(dir_comps);
        let create = self.mode == WhiteoutMode::OverlayMarkers;
        let Some(dir) = self.dir(e, dir_comps, create, "its directory")? else {
            return Ok(());
        };
        self.purge(&dir, &key)?;
        if self.mode == WhiteoutMode::OverlayMarkers {
            fsat::fsetxattr(dir.as_fd(), b"trusted.overlay.opaque", b"y").map_err(|err| {
                Error::io("set trusted.overlay.opaque on", self.path_of(&key), err)
            })?;
        }
        Ok(())
    }

    /// Removes everything below `dir` that this tar did not write. Iterative (explicit
    /// stack), at most [`fsat::MAX_DEPTH`] levels.
    fn purge(&mut self, dir: &OwnedFd, key: &[u8]) -> Result<()> {
        let list = |this: &Self, fd: &OwnedFd, key: &[u8]| {
            fsat::list_dir(fd.as_fd()).map_err(|err| Error::io("list", this.path_of(key), err))
        };
        let first = fsat::dup(dir.as_fd()).map_err(|err| Error::io("dup", self.dest, err))?;
        let names = list(self, &first, key)?;
        let mut stack = vec![(first, key.to_vec(), names)];
        loop {
            let depth = stack.len();
            let Some((fd, dkey, names)) = stack.last_mut() else {
                return Ok(());
            };
            let Some(n) = names.pop() else {
                stack.pop();
                continue;
            };
            let mut child = dkey.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(n.to_bytes());
            let fd = fsat::dup(fd.as_fd()).map_err(|err| Error::io("dup", self.dest, err))?;
            if !self.written.contains(&child) {
                self.remove(fd.as_fd(), &n, &child)?;
                continue;
            }
            let st = fsat::lstat_at(fd.as_fd(), &n)
                .map_err(|err| Error::io("stat", self.path_of(&child), err))?;
            if fsat::is_dir(&st) {
                if depth >= fsat::MAX_DEPTH {
                    return Err(Error::io("purge", self.path_of(&child), fsat::too_deep()));
                }
                let sub = fsat::open_dir_at(fd.as_fd(), &n)
                    .map_err(|err| Error::io("open", self.path_of(&child), err))?;
                let names = list(self, &sub, &child)?;
                stack.push((sub, child, names));
            }
        }
    }

    /// Sets the directory times recorded on the way.
    fn finish(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        let placeholder = Entry::default();
        for (key, (atime, mtime)) in times {
            if key.is_empty() {
                fsat::futimens(self.root.as_fd(), atime, mtime)
                    .map_err(|err| Error::io("set times", self.dest, err))?;
                continue;
            }
            let comps: Vec<&[u8]> = key.split(|b| *b == b'/').collect();
            let Some((name, parent)) = comps.split_last() else {
                continue;
            };
            let Some(dir) = self.dir(&placeholder, parent, false, "its parent directory")? else {
                continue;
            };
            let cn = cname(name).map_err(|_| Error::invalid("NUL in name"))?;
            match fsat::lutimes_at(dir.as_fd(), &cn, atime, mtime) {
                Ok(()) => {}
                Err(err) if err.raw_os_error() == Some(libc::ENOENT) => {}
                Err(err) => return Err(Error::io("set times", self.path_of(&key), err)),
            }
        }
        Ok(())
    }
}

fn unsafe_parent(e: &Entry, what: &str, key: &[u8]) -> Error {
    refuse(
        e,
        format!(
            "{what} {:?} is a symlink or not a directory; refusing to write through it",
            String::from_utf8_lossy(key)
        ),
    )
}

enum DataError {
    Tar(Error),
    Io(std::io::Error),
}

/// Copies `size` bytes of entry data into `file`, leaving aligned all-zero 4 KiB blocks as
/// holes (pwrite past them, then set the length), so sparse files stay sparse.
fn write_sparse(
    tar: &mut TarReader<impl Read>,
    file: &std::fs::File,
    size: u64,
    buf: &mut [u8],
) -> std::result::Result<(), DataError> {
    let mut off = 0u64;
    let mut data_end = 0u64;
    while off < size {
        let want = (buf.len() as u64).min(size - off) as usize;
        tar.read_data_exact(&mut buf[..want])
            .map_err(DataError::Tar)?;
        filewriter::write_sparse_chunk(file, &buf[..want], off, &mut data_end)
            .map_err(DataError::Io)?;
        off += want as u64;
    }
    if data_end < size {
        file.set_len(size).map_err(DataError::Io)?;
    }
    Ok(())
}
