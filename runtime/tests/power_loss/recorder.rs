//! The write recorder: a FUSE filesystem of one file, `disk.img`, whose every write and every
//! fsync is logged in order. The test loop-mounts the image through it, so each write the
//! data root's filesystem sends to its disk, and each cache flush (the loop device turns a
//! flush into an fsync of its backing file), is seen here. This stands in for
//! `dm-log-writes`, which this kernel lacks.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::num::NonZeroU32;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuse3::raw::prelude::*;
use fuse3::{Inode, MountOptions, Result, Timestamp};

const ROOT: Inode = 1;
const DISK: Inode = 2;
pub const DISK_NAME: &str = "disk.img";

/// One event that reached the disk image, in the order it arrived.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// `len` bytes at `offset`; the bytes are at `data_at` in the log's data file.
    Write { offset: u64, len: u32, data_at: u64 },
    /// A flush or fsync: everything written before it is durable.
    Flush,
}

/// The recorded events and the bytes of their writes.
pub struct Log {
    pub events: Vec<Event>,
    data: File,
    data_len: u64,
}

impl Log {
    fn new(data: File) -> Log {
        Log {
            events: Vec::new(),
            data,
            data_len: 0,
        }
    }

    fn record_write(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.data.write_all(bytes)?;
        self.events.push(Event::Write {
            offset,
            len: bytes.len() as u32,
            data_at: self.data_len,
        });
        self.data_len += bytes.len() as u64;
        Ok(())
    }

    /// The bytes of one recorded write.
    pub fn bytes_of(&self, data_at: u64, len: u32) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        self.data
            .read_exact_at(&mut buf, data_at)
            .expect("read the recorded write");
        buf
    }

    /// Indices of the flush events.
    pub fn flushes(&self) -> Vec<usize> {
        (0..self.events.len())
            .filter(|i| matches!(self.events[*i], Event::Flush))
            .collect()
    }
}

struct DiskFs {
    image: File,
    size: u64,
    log: Arc<Mutex<Log>>,
}

impl DiskFs {
    fn attr(&self, inode: Inode) -> FileAttr {
        let now: Timestamp = SystemTime::now().into();
        let (kind, perm, size, nlink) = if inode == ROOT {
            (FileType::Directory, 0o755, 0, 2)
        } else {
            (FileType::RegularFile, 0o600, self.size, 1)
        };
        FileAttr {
            ino: inode,
            size,
            blocks: size.div_ceil(512),
            atime: now,
            mtime: now,
            ctime: now,
            kind,
            perm,
            nlink,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn errno(e: std::io::Error) -> fuse3::Errno {
    e.raw_os_error().unwrap_or(libc::EIO).into()
}

impl Filesystem for DiskFs {
    async fn init(&self, _req: Request) -> Result<ReplyInit> {
        Ok(ReplyInit {
            max_write: NonZeroU32::new(1 << 20).unwrap_or(NonZeroU32::MIN),
        })
    }

    async fn destroy(&self, _req: Request) {}

    async fn lookup(&self, _req: Request, parent: Inode, name: &OsStr) -> Result<ReplyEntry> {
        if parent != ROOT || name != DISK_NAME {
            return Err(libc::ENOENT.into());
        }
        Ok(ReplyEntry {
            nodeid: DISK,
            ttl: Duration::from_secs(1),
            attr: self.attr(DISK),
            generation: 0,
        })
    }

    async fn getattr(
        &self,
        _req: Request,
        inode: Inode,
        _fh: Option<u64>,
        _flags: u32,
    ) -> Result<ReplyAttr> {
        Ok(ReplyAttr {
            ttl: Duration::from_secs(1),
            attr: self.attr(inode),
        })
    }

    async fn open(&self, _req: Request, inode: Inode, _flags: u32) -> Result<ReplyOpen> {
        if inode != DISK {
            return Err(libc::EISDIR.into());
        }
        Ok(ReplyOpen {
            fh: 1,
            flags: 0,
            backing_id: 0,
        })
    }

    async fn read(
        &self,
        _req: Request,
        _inode: Inode,
        _fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<ReplyData> {
        let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        self.image.read_exact_at(&mut buf, offset).map_err(errno)?;
        Ok(ReplyData {
            data: Bytes::from(buf),
        })
    }

    async fn write(
        &self,
        _req: Request,
        _inode: Inode,
        _fh: u64,
        offset: u64,
        data: &[u8],
        _write_flags: u32,
        _flags: u32,
    ) -> Result<ReplyWrite> {
        if offset + data.len() as u64 > self.size {
            return Err(libc::ENOSPC.into());
        }
        // Logged and applied under one lock, so the log's order is the image's order.
        let mut log = self.log();
        self.image.write_all_at(data, offset).map_err(errno)?;
        log.record_write(offset, data).map_err(errno)?;
        Ok(ReplyWrite {
            written: data.len() as u32,
        })
    }

    async fn fsync(&self, _req: Request, _inode: Inode, _fh: u64, _datasync: bool) -> Result<()> {
        self.log().events.push(Event::Flush);
        Ok(())
    }

    async fn flush(&self, _req: Request, _inode: Inode, _fh: u64, _owner: u64) -> Result<()> {
        // close(2): not a durability point (only fsync is), so not logged.
        Ok(())
    }

    async fn release(
        &self,
        _req: Request,
        _inode: Inode,
        _fh: u64,
        _flags: u32,
        _lock_owner: u64,
        _flush: bool,
    ) -> Result<()> {
        Ok(())
    }

    async fn statfs(&self, _req: Request, _inode: Inode) -> Result<ReplyStatFs> {
        Ok(ReplyStatFs {
            blocks: self.size / 4096,
            bfree: 0,
            bavail: 0,
            files: 1,
            ffree: 0,
            bsize: 4096,
            namelen: 255,
            frsize: 4096,
        })
    }
}

/// A mounted recorder serving a copy of a disk image; unmounted on drop.
pub struct Recorder {
    mountpoint: PathBuf,
    log: Arc<Mutex<Log>>,
    runtime: Option<tokio::runtime::Runtime>,
    handle: Option<fuse3::raw::MountHandle>,
}

impl Recorder {
    /// Serves `image` (modified in place) at `mountpoint/disk.img`, logging into `log_data`.
    pub fn serve(image: &Path, mountpoint: &Path, log_data: &Path) -> Recorder {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .expect("open the disk image");
        let size = file.seek(SeekFrom::End(0)).expect("image size");
        let data = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(log_data)
            .expect("create the log's data file");
        let log = Arc::new(Mutex::new(Log::new(data)));
        let fs = DiskFs {
            image: file,
            size,
            log: log.clone(),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the recorder's runtime");
        let mut opts = MountOptions::default();
        opts.fs_name("strata-write-recorder").allow_other(true);
        let handle = runtime
            .block_on(Session::new(opts).mount(fs, mountpoint))
            .expect("mount the write recorder");
        Recorder {
            mountpoint: mountpoint.to_path_buf(),
            log,
            runtime: Some(runtime),
            handle: Some(handle),
        }
    }

    pub fn disk(&self) -> PathBuf {
        self.mountpoint.join(DISK_NAME)
    }

    /// How many events were recorded so far: an acknowledgement taken now is covered by any
    /// flush at or after this index.
    pub fn position(&self) -> usize {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .len()
    }

    /// Unmounts and hands over the log.
    pub fn finish(mut self) -> Log {
        self.unmount();
        let log = std::mem::replace(
            &mut self.log,
            Arc::new(Mutex::new(Log::new(
                tempfile::tempfile().expect("tempfile"),
            ))),
        );
        Arc::try_unwrap(log)
            .ok()
            .expect("the filesystem is gone")
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn unmount(&mut self) {
        if let (Some(rt), Some(h)) = (self.runtime.as_ref(), self.handle.take()) {
            if rt.block_on(h.unmount()).is_err() {
                let _ = nix::mount::umount2(&self.mountpoint, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Writes `size` bytes of a base image plus the log's events `0..cut` and then the chosen
/// `extra` events (writes after the cut that happened to reach the disk) to `out`.
pub fn rebuild(base: &Path, log: &Log, cut: usize, extra: &[usize], out: &Path) {
    std::fs::copy(base, out).expect("copy the base image");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(out)
        .expect("open the rebuilt image");
    for i in (0..cut).chain(extra.iter().copied()) {
        if let Event::Write {
            offset,
            len,
            data_at,
        } = log.events[i]
        {
            f.write_all_at(&log.bytes_of(data_at, len), offset)
                .expect("replay a write");
        }
    }
    f.sync_all().expect("sync the rebuilt image");
}
