//! Moving file data: FICLONE, else copy_file_range, else pread/pwrite. The first method that
//! reports "unsupported here" is dropped for the rest of the copy (by every thread), so a
//! filesystem without reflinks costs one failed ioctl per copy, not one per file.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use super::DataMethod;

const REFLINK: u8 = 0;
const COPY_FILE_RANGE: u8 = 1;
const READ_WRITE: u8 = 2;
const RW_BUFFER: usize = 256 * 1024;

pub struct DataCopier {
    method: AtomicU8,
    used: AtomicBool,
}

impl DataCopier {
    pub fn new() -> Self {
        Self {
            method: AtomicU8::new(REFLINK),
            used: AtomicBool::new(false),
        }
    }

    /// The method in force at the end, if any file had data.
    pub fn method_used(&self) -> Option<DataMethod> {
        self.used
            .load(Ordering::Relaxed)
            .then(|| match self.method.load(Ordering::Relaxed) {
                REFLINK => DataMethod::Reflink,
                COPY_FILE_RANGE => DataMethod::CopyFileRange,
                _ => DataMethod::ReadWrite,
            })
    }

    fn downgrade(&self, from: u8, why: &io::Error) {
        let to = (from + 1).min(READ_WRITE);
        if self
            .method
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            tracing::debug!(from, to, error = %why, "copy_tree: data method unsupported here, falling back");
        }
    }

    /// Copies `size` bytes from `src` to the empty `dst`, holes kept when `sparse`; returns
    /// the data bytes moved.
    pub fn copy(
        &self,
        src: &File,
        dst: &File,
        size: u64,
        sparse: bool,
        buf: &mut Vec<u8>,
    ) -> io::Result<u64> {
        self.used.store(true, Ordering::Relaxed);
        if self.method.load(Ordering::Relaxed) == REFLINK {
            // SAFETY: both descriptors are open for the duration of the call.
            if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) } == 0 {
                return Ok(size);
            }
            let err = io::Error::last_os_error();
            if !is_unsupported(&err) {
                return Err(err);
            }
            self.downgrade(REFLINK, &err);
        }
        if !sparse {
            return self.copy_range(src, dst, 0, size, buf);
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
                        return self.copy_range(src, dst, 0, size, buf)
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
            copied += self.copy_range(src, dst, data as u64, (hole - data) as u64, buf)?;
            pos = hole;
        }
        dst.set_len(size)?;
        Ok(copied)
    }

    /// Copies `[offset, offset+len)` to the same offset.
    fn copy_range(
        &self,
        src: &File,
        dst: &File,
        offset: u64,
        len: u64,
        buf: &mut Vec<u8>,
    ) -> io::Result<u64> {
        let mut done = 0u64;
        if self.method.load(Ordering::Relaxed) <= COPY_FILE_RANGE {
            while done < len {
                let mut off_in = (offset + done) as libc::loff_t;
                let mut off_out = off_in;
                let want = (len - done).min(1 << 30) as usize;
                // SAFETY: both descriptors are open; the offsets point at live integers.
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
                    return Ok(done); // the source shrank since it was stat'ed
                }
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if !is_unsupported(&err) {
                    return Err(err);
                }
                self.downgrade(COPY_FILE_RANGE, &err);
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

/// Whether `a`'s data can be cloned into `b` (both scratch files on the same filesystem).
pub fn can_clone(a: &File, b: &File) -> bool {
    // SAFETY: both descriptors are open for the duration of the call.
    unsafe { libc::ioctl(b.as_raw_fd(), libc::FICLONE, a.as_raw_fd()) == 0 }
}
