//! Attributes and xattrs: getattr, setattr (copy-up first), readlink, the xattr calls (with
//! `trusted.overlay.*` hidden) and statfs.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use bytes::Bytes;
use fuse3::raw::reply::{ReplyAttr, ReplyStatFs, ReplyXAttr};
use fuse3::{Errno, SetAttr};

use super::killpriv::{self, Caller};
use super::table::Entry;
use super::{err, sys, OverlayFs, PRIVATE_XATTR_PREFIX};

fn ts(t: fuse3::Timestamp) -> libc::timespec {
    libc::timespec {
        tv_sec: t.sec,
        tv_nsec: t.nsec as i64,
    }
}

/// Runs `f` with the `/proc/self/fd/...` path of an entry (for the l*xattr calls).
fn with_path<R>(e: Entry<'_>, f: impl FnOnce(&std::ffi::CStr) -> io::Result<R>) -> io::Result<R> {
    match e {
        Entry::Dir(fd) => sys::with_proc_path(fd, OsStr::new("."), f),
        Entry::Child(fd, name) => sys::with_proc_path(fd, name, f),
    }
}

/// Runs `f` with (dirfd, name) of an entry; a directory is its own fd with an empty name.
fn with_at<R>(
    e: Entry<'_>,
    f: impl FnOnce(RawFd, &std::ffi::CStr) -> io::Result<R>,
) -> io::Result<R> {
    match e {
        Entry::Dir(fd) => f(fd, sys::empty()),
        Entry::Child(fd, name) => sys::with_name(name, |c| f(fd, c)),
    }
}

fn private(name: &OsStr) -> bool {
    name.as_bytes().starts_with(PRIVATE_XATTR_PREFIX)
}

impl OverlayFs {
    pub(super) fn do_getattr(&self, ino: u64, fh: Option<u64>) -> Result<ReplyAttr, Errno> {
        let (is_dir, shown) = {
            let t = self.table();
            (
                t.get(ino).map(|n| n.is_dir).unwrap_or(false),
                t.shown_ino(ino),
            )
        };
        let (st, merged) = match fh {
            Some(fh) if !is_dir => (sys::fstat(fh as RawFd).map_err(err)?, false),
            _ => self.stat_node(ino)?,
        };
        Ok(ReplyAttr {
            ttl: self.ttl_for(&st),
            attr: self.attr(shown, &st, merged),
        })
    }

    pub(super) fn do_setattr(
        &self,
        ino: u64,
        fh: Option<u64>,
        set: &SetAttr,
        kill_suidgid: Option<Caller>,
    ) -> Result<ReplyAttr, Errno> {
        self.check_writable()?;
        {
            let _ns = self.lock_ns();
            self.copy_up(ino, set.size != Some(0))?;
            self.with_entry(ino, |e| {
                if set.uid.is_some() || set.gid.is_some() {
                    with_at(e, |d, n| {
                        sys::fchownat(
                            d,
                            n,
                            set.uid.unwrap_or(u32::MAX),
                            set.gid.unwrap_or(u32::MAX),
                        )
                    })?;
                }
                if let Some(mode) = set.mode {
                    with_at(e, |d, n| sys::fchmodat(d, n, mode & 0o7777))?;
                }
                if let Some(size) = set.size {
                    match (fh, e) {
                        (Some(fh), Entry::Child(..)) => sys::ftruncate(fh as RawFd, size)?,
                        (_, Entry::Child(d, n)) => {
                            let f = sys::with_name(n, |c| sys::openat(d, c, libc::O_WRONLY, 0))?;
                            sys::ftruncate(f.as_raw_fd(), size)?;
                        }
                        (_, Entry::Dir(_)) => {
                            return Err(io::Error::from_raw_os_error(libc::EISDIR))
                        }
                    }
                }
                if set.atime.is_some() || set.mtime.is_some() {
                    with_at(e, |d, n| {
                        sys::utimensat(d, n, set.atime.map(ts), set.mtime.map(ts))
                    })?;
                }
                // A truncate the kernel flagged (see killpriv.rs). It flags every chown too,
                // whoever the caller: the underlying filesystem clears the bits on our chown
                // by the rules for a privileged caller, which is who chowns.
                if let (Some(caller), Some(_), Entry::Child(d, n)) = (kill_suidgid, set.size, e) {
                    sys::with_name(n, |c| killpriv::clear_at(d, c, caller))?;
                }
                Ok(())
            })?;
        }
        self.do_getattr(ino, None)
    }

    pub(super) fn do_readlink(&self, ino: u64) -> Result<Bytes, Errno> {
        self.with_entry(ino, |e| match e {
            Entry::Child(d, n) => sys::with_name(n, |c| sys::readlinkat(d, c)),
            Entry::Dir(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        })
        .map(Bytes::from)
    }

    pub(super) fn do_getxattr(
        &self,
        ino: u64,
        name: &OsStr,
        size: u32,
    ) -> Result<ReplyXAttr, Errno> {
        if private(name) {
            return Err(libc::ENODATA.into());
        }
        let value = self.with_entry(ino, |e| {
            with_path(e, |p| {
                let cname = std::ffi::CString::new(name.as_bytes())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                sys::get_xattr_vec(p, &cname)
            })
        })?;
        let value = value.ok_or_else(|| Errno::from(libc::ENODATA))?;
        if size == 0 {
            // fuse3 0.9 answers ReplyXAttr::Size to GETXATTR with a positive error code, which
            // the kernel rejects (and the session dies). The size probe's answer is just a
            // fuse_getxattr_out { size: u32, padding: u32 }, so send those 8 bytes as data.
            let mut out = Vec::with_capacity(8);
            out.extend_from_slice(&(value.len() as u32).to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            return Ok(ReplyXAttr::Data(Bytes::from(out)));
        }
        xattr_reply(value, size)
    }

    pub(super) fn do_listxattr(&self, ino: u64, size: u32) -> Result<ReplyXAttr, Errno> {
        let names = self.with_entry(ino, |e| with_path(e, sys::list_xattr_vec))?;
        let mut out = Vec::with_capacity(names.len());
        for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            if !n.starts_with(PRIVATE_XATTR_PREFIX) {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        xattr_reply(out, size)
    }

    pub(super) fn do_setxattr(
        &self,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        if private(name) {
            return Err(libc::EPERM.into());
        }
        let _ns = self.lock_ns();
        self.copy_up(ino, true)?;
        let cname =
            std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::from(libc::EINVAL))?;
        self.with_entry(ino, |e| {
            with_path(e, |p| sys::lsetxattr(p, &cname, value, flags as i32))
        })
    }

    pub(super) fn do_removexattr(&self, ino: u64, name: &OsStr) -> Result<(), Errno> {
        self.check_writable()?;
        if private(name) {
            return Err(libc::ENODATA.into());
        }
        let _ns = self.lock_ns();
        let cname =
            std::ffi::CString::new(name.as_bytes()).map_err(|_| Errno::from(libc::EINVAL))?;
        // Absent everywhere: nothing to copy up for.
        self.with_entry(ino, |e| with_path(e, |p| sys::get_xattr_vec(p, &cname)))?
            .ok_or_else(|| Errno::from(libc::ENODATA))?;
        self.copy_up(ino, true)?;
        self.with_entry(ino, |e| with_path(e, |p| sys::lremovexattr(p, &cname)))
    }

    pub(super) fn do_statfs(&self) -> Result<ReplyStatFs, Errno> {
        let root = self.roots.first().ok_or_else(|| Errno::from(libc::EIO))?;
        let mut st = std::mem::MaybeUninit::<libc::statfs>::uninit();
        // SAFETY: st is a valid out pointer for fstatfs.
        if unsafe { libc::fstatfs(root.fd.as_raw_fd(), st.as_mut_ptr()) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
        // SAFETY: fstatfs succeeded.
        let st = unsafe { st.assume_init() };
        Ok(ReplyStatFs {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: st.f_bsize as u32,
            namelen: st.f_namelen as u32,
            frsize: st.f_frsize as u32,
        })
    }
}

fn xattr_reply(value: Vec<u8>, size: u32) -> Result<ReplyXAttr, Errno> {
    if size == 0 {
        return Ok(ReplyXAttr::Size(value.len() as u32));
    }
    if value.len() > size as usize {
        return Err(libc::ERANGE.into());
    }
    Ok(ReplyXAttr::Data(Bytes::from(value)))
}
