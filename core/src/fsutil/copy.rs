//! An exact copy of a directory tree, for drivers that keep each layer as a full copy of its
//! parent (vfs) and for anything else that must duplicate a tree without losing metadata.
//!
//! Kept: owner, mode (setuid/setgid/sticky included, applied after chown because chown clears
//! them), atime and mtime in nanoseconds (symlinks too; directories last, once their children
//! are written), every readable xattr (trusted.*, security.capability, ACLs), hard links as hard
//! links, symlinks, fifos, sockets, device nodes and sparse holes. File data is cloned with
//! FICLONE when the filesystem can, else copied in the kernel with copy_file_range, else read
//! and written; the method that works is found once per copy, not retried per file.
//!
//! A walker thread creates directories, symlinks and special files and hands regular files to a
//! few worker threads, so many small files are copied with more than one request in flight.
//! The copy stays on the source's filesystem: a mount point inside becomes an empty directory.

#[path = "copy_data.rs"]
mod data;
#[path = "copy_sys.rs"]
mod sys;

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use xattr::FileExt as XattrFileExt;

use self::data::DataCopier;
use self::sys::Stat;
use crate::error::{Error, IoContext, Result};

/// How file data was moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataMethod {
    /// FICLONE: the destination shares the source's extents (btrfs, xfs with reflink).
    Reflink,
    /// copy_file_range: the kernel copies (and may offload) without a trip through userspace.
    CopyFileRange,
    /// pread/pwrite through a buffer, when neither of the above works.
    ReadWrite,
}

/// What a copy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub dirs: u64,
    pub files: u64,
    pub symlinks: u64,
    /// Fifos, sockets and device nodes.
    pub specials: u64,
    /// Entries made as extra links to an inode already copied.
    pub hardlinks: u64,
    /// Bytes of file data copied (holes excluded).
    pub data_bytes: u64,
    /// Directories on another filesystem, created empty and not entered.
    pub mount_points: u64,
    /// How file data was moved; `None` when there was no file data.
    pub method: Option<DataMethod>,
}

const QUEUE_DEPTH: usize = 512;

/// Copies the tree at `src` (a directory) to `dst`, which must not exist or be an empty
/// directory. Blocking. See the module docs for what is kept.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let src_root = sys::open_dir_path(src).ctx("open directory", src)?;
    let root_st = sys::fstat(&src_root).ctx("stat", src)?;
    prepare_destination(dst)?;
    let dst_root = sys::open_dir_path(dst).ctx("open directory", dst)?;
    sys::fchown(&dst_root, &root_st).ctx("chown", dst)?;

    let copier = DataCopier::new();
    let shared = Shared {
        copier,
        abort: AtomicBool::new(false),
        first_error: Mutex::new(None),
        files: AtomicU64::new(0),
        data_bytes: AtomicU64::new(0),
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
    };
    let root_xattrs = read_xattrs_fd(&src_root).ctx("read xattrs of", src)?;
    let mut walker = Walker {
        root_dev: root_st.st_dev,
        stats: CopyStats::default(),
        first_copy: HashMap::new(),
        dirs: vec![DirToFinish {
            rel: PathBuf::new(),
            st: root_st,
            xattrs: root_xattrs,
        }],
        buf: Vec::new(),
    };
    walker.stats.dirs = 1;
    let root = Arc::new(DirPair {
        src: src_root,
        dst: dst_root.try_clone().ctx("dup", dst)?,
        rel: PathBuf::new(),
    });

    let (tx, rx) = mpsc::sync_channel::<FileJob>(QUEUE_DEPTH);
    let rx = Mutex::new(rx);
    let walked = std::thread::scope(|scope| {
        let rx = &rx;
        let shared = &shared;
        for _ in 0..worker_count() {
            scope.spawn(move || worker(rx, shared));
        }
        let walked = walker.walk(root, &dst_root, &tx, shared);
        if walked.is_err() {
            shared.abort.store(true, Ordering::Relaxed);
        }
        drop(tx);
        walked
    });
    walked?;
    if let Some(e) = shared.take_error() {
        return Err(e);
    }

    // Children first (reverse discovery order): writing into a directory moves its mtime,
    // and a read-only mode could get in the way of a caller without CAP_DAC_OVERRIDE.
    for d in walker.dirs.iter().rev() {
        let path = dst.join(&d.rel);
        let dir = if d.rel.as_os_str().is_empty() {
            dst_root.try_clone().ctx("dup", &path)?
        } else {
            sys::open_dir_beneath(&dst_root, &d.rel).ctx("open directory", &path)?
        };
        for (name, value) in &d.xattrs {
            set_xattr_checked(&path, name, value, |n, v| dir.set_xattr(n, v))?;
        }
        sys::fchmod(&dir, &d.st).ctx("chmod", &path)?;
        sys::futimens(&dir, &d.st).ctx("set times of", &path)?;
    }

    let mut stats = walker.stats;
    stats.files = shared.files.load(Ordering::Relaxed);
    stats.data_bytes = shared.data_bytes.load(Ordering::Relaxed);
    stats.method = shared.copier.method_used();
    Ok(stats)
}

fn prepare_destination(dst: &Path) -> Result<()> {
    match std::fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dst).ctx("read directory", dst)?;
            if entries.next().is_some() {
                return Err(Error::AlreadyExists(format!(
                    "copy destination {} (not empty)",
                    dst.display()
                )));
            }
            Ok(())
        }
        Ok(_) => Err(Error::AlreadyExists(format!(
            "copy destination {}",
            dst.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dst)
                .ctx("mkdir", dst)
        }
        Err(e) => Err(Error::io("stat", dst, e)),
    }
}

/// Whether files in `dir` can be cloned with FICLONE (probed with two unnamed scratch files).
pub fn reflink_supported(dir: &Path) -> Result<bool> {
    let a = tempfile_in(dir)?;
    let b = tempfile_in(dir)?;
    a.write_all_at(b"probe", 0).ctx("write", dir)?;
    Ok(data::can_clone(&a, &b))
}

fn tempfile_in(dir: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(dir)
        .ctx("create temporary file in", dir)
}

fn worker_count() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 4)
}

/// State the walker and the workers share.
struct Shared {
    copier: DataCopier,
    abort: AtomicBool,
    first_error: Mutex<Option<Error>>,
    files: AtomicU64,
    data_bytes: AtomicU64,
    /// The roots, for error messages.
    src: PathBuf,
    dst: PathBuf,
}

impl Shared {
    fn fail(&self, e: Error) {
        self.abort.store(true, Ordering::Relaxed);
        if let Ok(mut slot) = self.first_error.lock() {
            slot.get_or_insert(e);
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.first_error.lock().ok().and_then(|mut e| e.take())
    }
}

/// A directory being copied: the source open for reading, the copy open for creating in.
struct DirPair {
    src: File,
    dst: File,
    rel: PathBuf,
}

/// What is left to do on a copied directory once everything inside it exists.
struct DirToFinish {
    rel: PathBuf,
    st: Stat,
    xattrs: Vec<(OsString, Vec<u8>)>,
}

struct FileJob {
    dir: Arc<DirPair>,
    name: CString,
    st: Stat,
}

/// A subdirectory waiting to be entered; its parent stays open until then.
struct Pending {
    parent: Arc<DirPair>,
    name: CString,
    finish_index: usize,
}

struct Walker {
    root_dev: u64,
    stats: CopyStats,
    /// (dev, ino) of multiply-linked inodes → where the first copy was made (relative).
    first_copy: HashMap<(u64, u64), PathBuf>,
    /// Every directory copied, parents before children.
    dirs: Vec<DirToFinish>,
    buf: Vec<u8>,
}

impl Walker {
    fn walk(
        &mut self,
        root: Arc<DirPair>,
        dst_root: &File,
        jobs: &mpsc::SyncSender<FileJob>,
        shared: &Shared,
    ) -> Result<()> {
        let mut pending = Vec::new();
        self.copy_entries(root, dst_root, &mut pending, jobs, shared)?;
        while let Some(p) = pending.pop() {
            if shared.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let rel = self.dirs[p.finish_index].rel.clone();
            let src = sys::open_dir_at(&p.parent.src, &p.name)
                .ctx("open directory", shared.src.join(&rel))?;
            let dst = sys::open_dir_at(&p.parent.dst, &p.name)
                .ctx("open directory", shared.dst.join(&rel))?;
            drop(p.parent);
            self.dirs[p.finish_index].xattrs =
                read_xattrs_fd(&src).ctx("read xattrs of", shared.src.join(&rel))?;
            let dir = Arc::new(DirPair { src, dst, rel });
            self.copy_entries(dir, dst_root, &mut pending, jobs, shared)?;
        }
        Ok(())
    }

    /// Makes every entry of `dir` in the copy: subdirectories now (entered later), regular
    /// files through the workers, the rest here.
    fn copy_entries(
        &mut self,
        dir: Arc<DirPair>,
        dst_root: &File,
        pending: &mut Vec<Pending>,
        jobs: &mpsc::SyncSender<FileJob>,
        shared: &Shared,
    ) -> Result<()> {
        let names = sys::read_names(&dir.src).ctx("read directory", shared.src.join(&dir.rel))?;
        for name in names {
            let rel = dir.rel.join(OsStr::from_bytes(name.to_bytes()));
            let src_path = || shared.src.join(&rel);
            let dst_path = || shared.dst.join(&rel);
            let st = sys::stat_at(&dir.src, &name).ctx("stat", src_path())?;
            if sys::is_type(&st, libc::S_IFDIR) {
                sys::mkdir_at(&dir.dst, &name, 0o700).ctx("mkdir", dst_path())?;
                sys::chown_at(&dir.dst, &name, &st).ctx("chown", dst_path())?;
                self.stats.dirs += 1;
                let finish_index = self.dirs.len();
                self.dirs.push(DirToFinish {
                    rel,
                    st,
                    xattrs: Vec::new(),
                });
                if st.st_dev == self.root_dev {
                    pending.push(Pending {
                        parent: dir.clone(),
                        name,
                        finish_index,
                    });
                } else {
                    self.stats.mount_points += 1;
                }
                continue;
            }
            if st.st_dev != self.root_dev {
                // A file bind-mounted over an entry: not part of this filesystem's tree.
                self.stats.mount_points += 1;
                continue;
            }
            let regular = sys::is_type(&st, libc::S_IFREG);
            if st.st_nlink > 1 {
                let key = (st.st_dev, st.st_ino);
                if let Some(first) = self.first_copy.get(&key) {
                    link_to_first(dst_root, first, &dir.dst, &name).ctx("link", dst_path())?;
                    self.stats.hardlinks += 1;
                    continue;
                }
                self.first_copy.insert(key, rel.clone());
                if regular {
                    // Copied here, not by a worker, so later links find it complete.
                    let bytes = copy_file(&dir, &name, &st, shared, &mut self.buf)?;
                    shared.files.fetch_add(1, Ordering::Relaxed);
                    shared.data_bytes.fetch_add(bytes, Ordering::Relaxed);
                    continue;
                }
            }
            if regular {
                let job = FileJob {
                    dir: dir.clone(),
                    name,
                    st,
                };
                if jobs.send(job).is_err() {
                    return Ok(()); // every worker stopped: one of them recorded why
                }
            } else if sys::is_type(&st, libc::S_IFLNK) {
                copy_symlink(&dir, &name, &st).ctx("copy symlink", dst_path())?;
                self.stats.symlinks += 1;
            } else {
                copy_special(&dir, &name, &st, &dst_path())?;
                self.stats.specials += 1;
            }
        }
        Ok(())
    }
}

fn link_to_first(dst_root: &File, first: &Path, dir: &File, name: &CStr) -> io::Result<()> {
    let parent = first.parent().unwrap_or(Path::new(""));
    let first_name = sys::cstring(first.file_name().unwrap_or_default().as_bytes())?;
    let first_dir = sys::open_dir_beneath(dst_root, parent)?;
    sys::link_at(&first_dir, &first_name, dir, name)
}

fn worker(jobs: &Mutex<mpsc::Receiver<FileJob>>, shared: &Shared) {
    let mut buf = Vec::new();
    loop {
        let job = match jobs.lock() {
            Ok(rx) => match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Err(_) => return,
        };
        if shared.abort.load(Ordering::Relaxed) {
            continue; // drain the queue so the walker never blocks on a full channel
        }
        match copy_file(&job.dir, &job.name, &job.st, shared, &mut buf) {
            Ok(bytes) => {
                shared.files.fetch_add(1, Ordering::Relaxed);
                shared.data_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => shared.fail(e),
        }
    }
}

/// Data first, then owner (which clears setuid and capabilities), then xattrs (the
/// capability among them), then mode, then times.
fn copy_file(
    dir: &DirPair,
    name: &CStr,
    st: &Stat,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> Result<u64> {
    let rel = || dir.rel.join(OsStr::from_bytes(name.to_bytes()));
    let src = sys::open_file_at(&dir.src, name).ctx("open", shared.src.join(rel()))?;
    let dst = sys::create_file_at(&dir.dst, name).ctx("create", shared.dst.join(rel()))?;
    let size = st.st_size as u64;
    let mut copied = 0;
    if size > 0 {
        let sparse = (st.st_blocks as u64) * 512 < size;
        copied = shared
            .copier
            .copy(&src, &dst, size, sparse, buf)
            .ctx("copy data to", shared.dst.join(rel()))?;
    }
    sys::fchown(&dst, st).ctx("chown", shared.dst.join(rel()))?;
    for (n, value) in read_xattrs_fd(&src).ctx("read xattrs of", shared.src.join(rel()))? {
        set_xattr_checked(&shared.dst.join(rel()), &n, &value, |n, v| {
            dst.set_xattr(n, v)
        })?;
    }
    sys::fchmod(&dst, st).ctx("chmod", shared.dst.join(rel()))?;
    sys::futimens(&dst, st).ctx("set times of", shared.dst.join(rel()))?;
    Ok(copied)
}

fn copy_symlink(dir: &DirPair, name: &CStr, st: &Stat) -> io::Result<()> {
    let target = sys::readlink_at(&dir.src, name)?;
    sys::symlink_at(&target, &dir.dst, name)?;
    sys::chown_at(&dir.dst, name, st)?;
    copy_xattrs_nofollow(
        &sys::proc_path(&dir.src, name),
        &sys::proc_path(&dir.dst, name),
    )?;
    sys::times_at(&dir.dst, name, st)
}

fn copy_special(dir: &DirPair, name: &CStr, st: &Stat, dst_path: &Path) -> Result<()> {
    let mode = st.st_mode & (libc::S_IFMT | 0o777);
    sys::mknod_at(&dir.dst, name, mode, st.st_rdev).ctx("mknod", dst_path)?;
    sys::chown_at(&dir.dst, name, st).ctx("chown", dst_path)?;
    copy_xattrs_nofollow(
        &sys::proc_path(&dir.src, name),
        &sys::proc_path(&dir.dst, name),
    )
    .ctx("copy xattrs to", dst_path)?;
    sys::chmod_at(&dir.dst, name, st).ctx("chmod", dst_path)?;
    sys::times_at(&dir.dst, name, st).ctx("set times of", dst_path)
}

fn read_xattrs_fd(f: &File) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in f.list_xattr()? {
        if let Some(value) = f.get_xattr(&name)? {
            out.push((name, value));
        }
    }
    Ok(out)
}

/// Copies every xattr between two paths whose last component is not followed.
fn copy_xattrs_nofollow(src: &Path, dst: &Path) -> io::Result<()> {
    for name in xattr::list(src)? {
        if let Some(value) = xattr::get(src, &name)? {
            set_xattr_checked(dst, &name, &value, |n, v| xattr::set(dst, n, v))
                .map_err(|e| io::Error::other(e.to_string()))?;
        }
    }
    Ok(())
}

/// Sets one xattr. A destination that cannot hold an SELinux label is tolerated (the label
/// belongs to the host policy, not to the tree); any other loss is an error, because an
/// exact copy that silently drops a capability or an ACL is not exact.
fn set_xattr_checked(
    dst: &Path,
    name: &OsStr,
    value: &[u8],
    set: impl FnOnce(&OsStr, &[u8]) -> io::Result<()>,
) -> Result<()> {
    match set(name, value) {
        Ok(()) => Ok(()),
        Err(e)
            if name.as_bytes() == b"security.selinux"
                && matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP) | Some(libc::EPERM)) =>
        {
            Ok(())
        }
        Err(e) => Err(Error::io(
            "set xattr",
            dst,
            io::Error::new(e.kind(), format!("{}: {e}", name.to_string_lossy())),
        )),
    }
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
