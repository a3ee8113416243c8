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

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Mutex};

use xattr::FileExt as XattrFileExt;

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

const METHOD_REFLINK: u8 = 0;
const METHOD_COPY_FILE_RANGE: u8 = 1;
const METHOD_READ_WRITE: u8 = 2;
const RW_BUFFER: usize = 256 * 1024;
const QUEUE_DEPTH: usize = 512;

/// Copies the tree at `src` (a directory) to `dst`, which must not exist or be an empty
/// directory. Blocking. See the module docs for what is kept.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let root_meta = std::fs::symlink_metadata(src).ctx("stat", src)?;
    if !root_meta.is_dir() {
        return Err(Error::invalid(format!(
            "copy source {} is not a directory",
            src.display()
        )));
    }
    match std::fs::symlink_metadata(dst) {
        Ok(m) if m.is_dir() => {
            let mut entries = std::fs::read_dir(dst).ctx("read directory", dst)?;
            if entries.next().is_some() {
                return Err(Error::AlreadyExists(format!(
                    "copy destination {} (not empty)",
                    dst.display()
                )));
            }
        }
        Ok(_) => {
            return Err(Error::AlreadyExists(format!(
                "copy destination {}",
                dst.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => make_dir(dst)?,
        Err(e) => return Err(Error::io("stat", dst, e)),
    }
    lchown(dst, &root_meta)?;

    let shared = Shared {
        method: AtomicU8::new(METHOD_REFLINK),
        data_used: AtomicBool::new(false),
        abort: AtomicBool::new(false),
        first_error: Mutex::new(None),
        files: AtomicU64::new(0),
        data_bytes: AtomicU64::new(0),
    };
    let mut walker = Walker {
        root_dev: root_meta.dev(),
        stats: CopyStats::default(),
        first_copy: HashMap::new(),
        deferred_links: Vec::new(),
        dirs: vec![(src.to_path_buf(), dst.to_path_buf(), root_meta)],
    };
    walker.stats.dirs = 1;

    let (tx, rx) = mpsc::sync_channel::<FileJob>(QUEUE_DEPTH);
    let rx = Mutex::new(rx);
    let walked = std::thread::scope(|scope| {
        let rx = &rx;
        let shared = &shared;
        for _ in 0..worker_count() {
            scope.spawn(move || worker(rx, shared));
        }
        let walked = walker.walk(src, dst, &tx, shared);
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

    for (target, link) in &walker.deferred_links {
        std::fs::hard_link(target, link).ctx("link", link)?;
    }
    // Children first: writing into a directory changes its mtime, and a read-only mode could
    // get in the way of a non-root caller.
    for (src_dir, dst_dir, meta) in walker.dirs.iter().rev() {
        copy_xattrs_path(src_dir, dst_dir)?;
        chmod(dst_dir, meta)?;
        set_times(dst_dir, meta)?;
    }

    let mut stats = walker.stats;
    stats.files = shared.files.load(Ordering::Relaxed);
    stats.data_bytes = shared.data_bytes.load(Ordering::Relaxed);
    if shared.data_used.load(Ordering::Relaxed) {
        stats.method = Some(match shared.method.load(Ordering::Relaxed) {
            METHOD_REFLINK => DataMethod::Reflink,
            METHOD_COPY_FILE_RANGE => DataMethod::CopyFileRange,
            _ => DataMethod::ReadWrite,
        });
    }
    Ok(stats)
}

/// Whether files in `dir` can be cloned with FICLONE (probed with two scratch files).
pub fn reflink_supported(dir: &Path) -> Result<bool> {
    let a = tempfile_in(dir)?;
    let b = tempfile_in(dir)?;
    a.write_all_at(b"probe", 0).ctx("write", dir)?;
    // SAFETY: both descriptors are open for the duration of the call.
    let rc = unsafe { libc::ioctl(b.as_raw_fd(), libc::FICLONE, a.as_raw_fd()) };
    Ok(rc == 0)
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
    method: AtomicU8,
    data_used: AtomicBool,
    abort: AtomicBool,
    first_error: Mutex<Option<Error>>,
    files: AtomicU64,
    data_bytes: AtomicU64,
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

    /// Moves to the next method after `from` failed as unsupported. Only the first thread to
    /// see the failure logs it; the others just follow.
    fn downgrade(&self, from: u8, why: &io::Error) {
        if self
            .method
            .compare_exchange(
                from,
                (from + 1).min(METHOD_READ_WRITE),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            tracing::debug!(from, error = %why, "copy_tree: data copy method unsupported here, falling back");
        }
    }
}

struct FileJob {
    src: PathBuf,
    dst: PathBuf,
    meta: Metadata,
}

struct Walker {
    root_dev: u64,
    stats: CopyStats,
    /// (dev, ino) of multiply-linked inodes → the first destination path made for them.
    first_copy: HashMap<(u64, u64), PathBuf>,
    /// (existing destination, new link): made once the workers have created the targets.
    deferred_links: Vec<(PathBuf, PathBuf)>,
    /// Every directory copied, parents before children: finished in reverse at the end.
    dirs: Vec<(PathBuf, PathBuf, Metadata)>,
}

impl Walker {
    fn walk(
        &mut self,
        src: &Path,
        dst: &Path,
        jobs: &mpsc::SyncSender<FileJob>,
        shared: &Shared,
    ) -> Result<()> {
        let mut pending = vec![(src.to_path_buf(), dst.to_path_buf())];
        while let Some((src_dir, dst_dir)) = pending.pop() {
            if shared.abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            let entries = std::fs::read_dir(&src_dir).ctx("read directory", &src_dir)?;
            for entry in entries {
                let entry = entry.ctx("read directory", &src_dir)?;
                let name = entry.file_name();
                let src_path = src_dir.join(&name);
                let dst_path = dst_dir.join(&name);
                let meta = std::fs::symlink_metadata(&src_path).ctx("stat", &src_path)?;
                if meta.is_dir() {
                    make_dir(&dst_path)?;
                    lchown(&dst_path, &meta)?;
                    self.stats.dirs += 1;
                    if meta.dev() == self.root_dev {
                        pending.push((src_path.clone(), dst_path.clone()));
                    } else {
                        self.stats.mount_points += 1;
                    }
                    self.dirs.push((src_path, dst_path, meta));
                    continue;
                }
                if meta.dev() != self.root_dev {
                    // A file bind-mounted over an entry: not part of this filesystem's tree.
                    self.stats.mount_points += 1;
                    continue;
                }
                if meta.nlink() > 1 {
                    let key = (meta.dev(), meta.ino());
                    if let Some(first) = self.first_copy.get(&key) {
                        self.deferred_links.push((first.clone(), dst_path));
                        self.stats.hardlinks += 1;
                        continue;
                    }
                    self.first_copy.insert(key, dst_path.clone());
                }
                let ft = meta.file_type();
                if ft.is_file() {
                    let job = FileJob {
                        src: src_path,
                        dst: dst_path,
                        meta,
                    };
                    if jobs.send(job).is_err() {
                        // Every worker stopped: one of them recorded why.
                        return Ok(());
                    }
                } else if ft.is_symlink() {
                    copy_symlink(&src_path, &dst_path, &meta)?;
                    self.stats.symlinks += 1;
                } else if ft.is_fifo()
                    || ft.is_socket()
                    || ft.is_char_device()
                    || ft.is_block_device()
                {
                    copy_special(&src_path, &dst_path, &meta)?;
                    self.stats.specials += 1;
                }
            }
        }
        Ok(())
    }
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
        match copy_file(&job, shared, &mut buf) {
            Ok(bytes) => {
                shared.files.fetch_add(1, Ordering::Relaxed);
                shared.data_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(e) => shared.fail(e),
        }
    }
}

fn copy_file(job: &FileJob, shared: &Shared, buf: &mut Vec<u8>) -> Result<u64> {
    let src = open_source(&job.src)?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(&job.dst)
        .ctx("create", &job.dst)?;
    let meta = &job.meta;
    let size = meta.len();
    let mut copied = 0;
    if size > 0 {
        shared.data_used.store(true, Ordering::Relaxed);
        copied = copy_data(&src, &dst, size, meta.blocks() * 512 < size, shared, buf)
            .map_err(|e| Error::io("copy data to", &job.dst, e))?;
    }
    std::os::unix::fs::fchown(&dst, Some(meta.uid()), Some(meta.gid())).ctx("chown", &job.dst)?;
    for name in src.list_xattr().ctx("list xattrs of", &job.src)? {
        if let Some(value) = src.get_xattr(&name).ctx("read xattr of", &job.src)? {
            set_xattr_checked(&job.dst, &name, &value, |n, v| dst.set_xattr(n, v))?;
        }
    }
    dst.set_permissions(std::fs::Permissions::from_mode_bits(meta.mode()))
        .ctx("chmod", &job.dst)?;
    let times = timespecs(meta);
    // SAFETY: `dst` is open and `times` points at two timespecs.
    if unsafe { libc::futimens(dst.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(Error::io(
            "set times of",
            &job.dst,
            io::Error::last_os_error(),
        ));
    }
    Ok(copied)
}

/// Opens with O_NOATIME where allowed, so copying does not rewrite the source's atimes.
fn open_source(path: &Path) -> Result<File> {
    let open = |extra: libc::c_int| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | extra)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
    .ctx("open", path)
}

trait ModeBits {
    fn from_mode_bits(mode: u32) -> Self;
}

impl ModeBits for std::fs::Permissions {
    fn from_mode_bits(mode: u32) -> Self {
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777)
    }
}

/// Copies `size` bytes, holes kept when `sparse`; returns the data bytes copied.
fn copy_data(
    src: &File,
    dst: &File,
    size: u64,
    sparse: bool,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    if shared.method.load(Ordering::Relaxed) == METHOD_REFLINK {
        // SAFETY: both descriptors are open for the duration of the call.
        if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
            return Ok(size);
        }
        let err = io::Error::last_os_error();
        if !is_unsupported(&err) {
            return Err(err);
        }
        shared.downgrade(METHOD_REFLINK, &err);
    }
    if !sparse {
        return copy_range(src, dst, 0, size, shared, buf);
    }
    let mut copied = 0;
    let mut pos: i64 = 0;
    let end = size as i64;
    while pos < end {
        // SAFETY: plain lseek on an open descriptor.
        let data = unsafe { libc::lseek(src.as_raw_fd(), pos, libc::SEEK_DATA) };
        if data < 0 {
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole remains
                Some(libc::EINVAL) if pos == 0 => {
                    return copy_range(src, dst, 0, size, shared, buf)
                }
                _ => return Err(err),
            }
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let hole = hole.min(end);
        copied += copy_range(src, dst, data as u64, (hole - data) as u64, shared, buf)?;
        pos = hole;
    }
    dst.set_len(size)?;
    Ok(copied)
}

/// Copies `[offset, offset+len)` at the same offset, by copy_file_range or read/write.
fn copy_range(
    src: &File,
    dst: &File,
    offset: u64,
    len: u64,
    shared: &Shared,
    buf: &mut Vec<u8>,
) -> io::Result<u64> {
    let mut done = 0u64;
    if shared.method.load(Ordering::Relaxed) <= METHOD_COPY_FILE_RANGE {
        while done < len {
            let mut off_in = (offset + done) as libc::loff_t;
            let mut off_out = off_in;
            let want = (len - done).min(1 << 30) as usize;
            // SAFETY: both descriptors are open; the offsets are valid pointers.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            };
            if n > 0 {
                done += n as u64;
                continue;
            }
            if n == 0 {
                return Ok(done); // the source is shorter than it was at stat time
            }
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if !is_unsupported(&err) {
                return Err(err);
            }
            shared.downgrade(METHOD_COPY_FILE_RANGE, &err);
            break;
        }
        if done == len {
            return Ok(done);
        }
    }
    if buf.len() < RW_BUFFER {
        buf.resize(RW_BUFFER, 0);
    }
    while done < len {
        let want = (len - done).min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..want], offset + done) {
            Ok(0) => return Ok(done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(done)
}

/// Errors that mean "this method does not work here", not "this file is broken".
fn is_unsupported(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP)
            | Some(libc::EXDEV)
            | Some(libc::EINVAL)
            | Some(libc::ENOTTY)
            | Some(libc::ENOSYS)
            | Some(libc::EPERM)
            | Some(libc::EBADF)
    )
}

fn copy_symlink(src: &Path, dst: &Path, meta: &Metadata) -> Result<()> {
    let target = std::fs::read_link(src).ctx("read link", src)?;
    std::os::unix::fs::symlink(&target, dst).ctx("symlink", dst)?;
    lchown(dst, meta)?;
    copy_xattrs_path(src, dst)?;
    set_times(dst, meta)
}

fn copy_special(src: &Path, dst: &Path, meta: &Metadata) -> Result<()> {
    let c = cpath(dst)?;
    let mode = meta.mode() & (libc::S_IFMT | 0o777);
    // SAFETY: `c` is a NUL-terminated path.
    if unsafe { libc::mknod(c.as_ptr(), mode, meta.rdev()) } != 0 {
        return Err(Error::io("mknod", dst, io::Error::last_os_error()));
    }
    lchown(dst, meta)?;
    copy_xattrs_path(src, dst)?;
    chmod(dst, meta)?;
    set_times(dst, meta)
}

fn make_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .ctx("mkdir", path)
}

fn lchown(path: &Path, meta: &Metadata) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid()), Some(meta.gid())).ctx("chown", path)
}

fn chmod(path: &Path, meta: &Metadata) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode_bits(meta.mode()))
        .ctx("chmod", path)
}

fn timespecs(meta: &Metadata) -> [libc::timespec; 2] {
    [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ]
}

fn set_times(path: &Path, meta: &Metadata) -> Result<()> {
    let c = cpath(path)?;
    let times = timespecs(meta);
    // SAFETY: `c` is NUL-terminated and `times` holds two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(Error::io("set times of", path, io::Error::last_os_error()));
    }
    Ok(())
}

/// Copies every xattr of `src` to `dst`, neither followed if a symlink.
fn copy_xattrs_path(src: &Path, dst: &Path) -> Result<()> {
    for name in xattr::list(src).ctx("list xattrs of", src)? {
        if let Some(value) = xattr::get(src, &name).ctx("read xattr of", src)? {
            set_xattr_checked(dst, &name, &value, |n, v| xattr::set(dst, n, v))?;
        }
    }
    Ok(())
}

/// Sets one xattr. A destination that cannot hold an SELinux label is tolerated (the label
/// belongs to the host policy, not to the tree); any other loss is an error, because an
/// exact copy that silently drops a capability or an ACL is not exact.
fn set_xattr_checked(
    dst: &Path,
    name: &std::ffi::OsStr,
    value: &[u8],
    set: impl FnOnce(&std::ffi::OsStr, &[u8]) -> io::Result<()>,
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

fn cpath(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", path.display())))
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
