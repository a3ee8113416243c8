//! Open files. A FUSE file handle is the raw fd of the underlying file, so reads and writes
//! go straight to pread/pwrite without any table lookup. Opening for writing (or with
//! O_TRUNC) copies the file up first.

use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};

use bytes::Bytes;
use fuse3::raw::reply::{ReplyData, ReplyOpen, ReplyWrite};
use fuse3::Errno;

use super::killpriv::{self, Caller};
use super::passthrough::Passthrough;
use super::table::Entry;
use super::{err, errno_is, sys, OverlayFs};

/// Page cache content stays valid across opens: data only changes through this mount.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;

/// Lower files smaller than this are served through the FUSE page cache, larger ones through
/// passthrough. On a writable mount every passthrough read marks the inode's atime stale, so
/// the next stat of the file is a GETATTR round trip: a warm read of 20,000 small files took
/// 1.4-1.9 s through passthrough against 1.1 s from the page cache (which then needs no
/// request at all), while a warm read of a 1 GiB file takes a third of the time through
/// passthrough. One MiB is the most one READ request carries.
const PASSTHROUGH_MIN_LOWER_SIZE: i64 = 1 << 20;

impl OverlayFs {
    /// Flags to open the underlying file with.
    pub(super) fn open_flags(&self, flags: i32) -> i32 {
        let mut f = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY);
        if self.cfg.writeback && !self.cfg.read_only() {
            // With the writeback cache the kernel reads pages around partial writes and does
            // O_APPEND positioning itself.
            if f & libc::O_ACCMODE == libc::O_WRONLY {
                f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
            }
            f &= !libc::O_APPEND;
        }
        f
    }

    /// Opens `ino`; `kill_suidgid`: an O_TRUNC open by a caller without CAP_FSETID (see
    /// killpriv.rs).
    pub(super) fn do_open(
        &self,
        ino: u64,
        flags: u32,
        kill_suidgid: Option<Caller>,
    ) -> Result<ReplyOpen, Errno> {
        let flags = flags as i32;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writes {
            self.check_writable()?;
            let _ns = self.lock_ns();
            self.copy_up(ino, flags & libc::O_TRUNC == 0)?;
        }
        let oflags = self.open_flags(flags);
        let fd = self.with_entry(ino, |e| match e {
            Entry::Child(dir, name) => sys::with_name(name, |c| sys::openat(dir, c, oflags, 0)),
            Entry::Dir(_) => Err(std::io::Error::from_raw_os_error(libc::EISDIR)),
        })?;
        if let Some(caller) = kill_suidgid {
            killpriv::clear_fd(fd.as_raw_fd(), caller).map_err(err)?;
        }
        let may_pass = !self.has_upper || {
            let st = sys::fstat(fd.as_raw_fd()).map_err(err)?;
            let (upper, hard_linked) = self
                .table()
                .get(ino)
                .map(|n| (n.layer == 0, n.link_key.is_some()))
                .unwrap_or((false, true));
            // Writes to a set-user-ID or set-group-ID file must reach us, to clear those bits
            // (passthrough writes would not). The names of a hard-linked lower file share a
            // node that outlives copy-ups: never bound to a backing file (see
            // passthrough.rs). Small lower files are served through the page cache (see
            // PASSTHROUGH_MIN_LOWER_SIZE).
            !(writes && killpriv::has_setid_bits(st.st_mode))
                && (upper || (!hard_linked && st.st_size >= PASSTHROUGH_MIN_LOWER_SIZE))
        };
        match self.open_reply(ino, fd, may_pass) {
            Err(e) if errno_is(e, libc::ESTALE) => {
                self.give_name_new_node(ino)?;
                Err(e)
            }
            other => other,
        }
    }

    /// The file `ino` names changed under its passthrough opens: its names move to a new node
    /// id, and the kernel, told ESTALE, looks the name up again and opens that.
    fn give_name_new_node(&self, ino: u64) -> Result<(), Errno> {
        let _ns = self.lock_ns();
        let mut t = self.table_mut();
        if t.current(ino) != ino {
            // Split already (an open of the old inode by a path that cannot look it up again,
            // such as /proc/PID/fd): ESTALE is the answer.
            return Ok(());
        }
        let new = t.split(ino)?;
        tracing::debug!(
            ino,
            new,
            "file changed under passthrough opens: new node id"
        );
        Ok(())
    }

    /// The reply for an open (or create) of `ino` served by the underlying file `fd`;
    /// `may_pass`: the open may use passthrough.
    pub(super) fn open_reply(
        &self,
        ino: u64,
        fd: OwnedFd,
        may_pass: bool,
    ) -> Result<ReplyOpen, Errno> {
        Ok(match self.passthrough.get() {
            Some(p) => {
                let r = p.open(ino, fd, may_pass, FOPEN_KEEP_CACHE)?;
                ReplyOpen {
                    fh: r.fh,
                    flags: r.flags,
                    backing_id: r.backing_id,
                }
            }
            None => ReplyOpen {
                fh: fd.into_raw_fd() as u64,
                flags: FOPEN_KEEP_CACHE,
                backing_id: 0,
            },
        })
    }

    /// Ends an open made by [`Self::open_reply`].
    pub(super) fn release_handle(&self, ino: u64, fh: u64) {
        if let Some(p) = self.passthrough.get() {
            p.release(ino);
        }
        sys::close(fh as RawFd);
    }

    pub(super) fn enable_passthrough(&self, backing: fuse3::raw::BackingFiles) {
        if self.passthrough.set(Passthrough::new(backing)).is_err() {
            tracing::warn!("FUSE passthrough enabled twice");
        }
    }

    pub(super) fn do_read(&self, fh: u64, offset: u64, size: u32) -> Result<ReplyData, Errno> {
        let mut buf: Vec<u8> = Vec::with_capacity(size as usize);
        // SAFETY: pread writes at most `size` bytes into the spare capacity; only the bytes
        // it reports as read are exposed by set_len.
        let n = unsafe {
            let spare = std::slice::from_raw_parts_mut(buf.as_mut_ptr(), size as usize);
            let n = sys::pread(fh as RawFd, spare, offset).map_err(err)?;
            buf.set_len(n);
            n
        };
        debug_assert!(n <= size as usize);
        Ok(ReplyData {
            data: Bytes::from(buf),
        })
    }

    /// READ into a buffer the caller owns (an io_uring queue entry): one copy, no allocation.
    pub(super) fn do_read_into(
        &self,
        fh: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<usize, Errno> {
        sys::pread(fh as RawFd, buf, offset).map_err(err)
    }

    /// Writes `data`; `kill_suidgid`: the writer lacks CAP_FSETID (see killpriv.rs).
    pub(super) fn do_write(
        &self,
        fh: u64,
        offset: u64,
        data: &[u8],
        kill_suidgid: Option<Caller>,
    ) -> Result<ReplyWrite, Errno> {
        if let Some(caller) = kill_suidgid {
            killpriv::clear_fd(fh as RawFd, caller).map_err(err)?;
        }
        let mut done = 0;
        while done < data.len() {
            let n = sys::pwrite(fh as RawFd, &data[done..], offset + done as u64).map_err(err)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        Ok(ReplyWrite {
            written: done as u32,
        })
    }

    pub(super) fn do_fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<(), Errno> {
        // SAFETY: plain syscall on a file handle we handed out.
        let r = unsafe {
            libc::fallocate(
                fh as RawFd,
                mode as i32,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        if r < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub(super) fn do_lseek(&self, fh: u64, offset: u64, whence: u32) -> Result<u64, Errno> {
        // SAFETY: plain syscall on a file handle we handed out.
        let r = unsafe { libc::lseek(fh as RawFd, offset as libc::off_t, whence as i32) };
        if r < 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(r as u64)
    }
}
