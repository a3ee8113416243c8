//! strata patch: FUSE passthrough backing files (Linux 6.9+).
//!
//! With passthrough granted at INIT, an open or create reply may name a backing file by an id
//! that the server registered on the /dev/fuse connection; the kernel then serves read, write
//! and mmap of that open file from the backing file directly, without a round trip.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

/// `_IOW(229, 1, struct fuse_backing_map)`: registers a backing file, returns its id.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
/// `_IOW(229, 2, uint32_t)`: drops a backing file id.
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

#[repr(C)]
struct FuseBackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// The connection's handle for registering backing files.
#[derive(Debug)]
pub struct BackingFiles {
    dev: OwnedFd,
}

impl BackingFiles {
    pub(crate) fn new(dev: OwnedFd) -> Self {
        Self { dev }
    }

    /// Registers `file` as a backing file; the id goes into the open reply's `backing_id`
    /// with `FOPEN_PASSTHROUGH`, and stays valid until [`Self::close`] (call it at release).
    pub fn open(&self, file: BorrowedFd<'_>) -> io::Result<i32> {
        let map = FuseBackingMap {
            fd: file.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: the ioctl reads one fuse_backing_map from a valid pointer.
        let id = unsafe { libc::ioctl(self.dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_OPEN, &map) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(id)
    }

    /// Drops a backing file id (open files that use it keep the backing file).
    pub fn close(&self, id: i32) -> io::Result<()> {
        let id = id as u32;
        // SAFETY: the ioctl reads one u32 from a valid pointer.
        let rc = unsafe { libc::ioctl(self.dev.as_raw_fd(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
