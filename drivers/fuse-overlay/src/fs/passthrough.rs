//! FUSE passthrough (Linux 6.9+): an open regular file names its underlying file as a backing
//! file, and the kernel serves read, write and mmap from it without a round trip to us.
//!
//! The kernel's rules (fs/fuse/iomode.c): while an inode has a passthrough open, every other
//! open of it must be passthrough with the same backing file, or the open fails with EIO; and
//! a passthrough open is refused while the inode has page-cache ("cached") opens. So each
//! inode is in one mode at a time, chosen by its first open and kept until its last release:
//! passthrough (one backing id shared by all its opens) or cached (served by the daemon).
//!
//! Files of lower layers use passthrough too, bound to the lower file. When such a file is
//! copied up while the kernel still has it open bound to the lower file, the next open would
//! need a second backing file on that inode. [`Passthrough::open`] then answers ESTALE, and
//! the filesystem gives the name a new node id (`Table::split`) before it passes that
//! ESTALE on: the kernel's open retries once with a fresh lookup (LOOKUP_REVAL), which
//! finds the new node, a new kernel inode without a backing file, and opens that. The open
//! files keep reading the lower file, as open files do across a copy-up in kernel overlayfs.
//! Only lower files with several names stay cached (served by the daemon): their names share
//! one node, kept across copy-ups.
//!
//! File handles: the low 32 bits are the raw fd of the underlying file (so `fh as RawFd` is
//! that fd everywhere), the high 32 bits the backing id (0: none).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use fuse3::raw::flags::FOPEN_PASSTHROUGH;
use fuse3::raw::BackingFiles;
use fuse3::Errno;

/// The mode of an inode that has opens.
enum Mode {
    /// One backing file shared by `opens` passthrough opens.
    Passthrough {
        id: i32,
        dev: u64,
        ino: u64,
        opens: u32,
    },
    /// `opens` opens served by the daemon through the page cache.
    Cached { opens: u32 },
}

pub(super) struct Passthrough {
    backing: BackingFiles,
    by_inode: Mutex<HashMap<u64, Mode>>,
    /// Set after the kernel refused a registration for a reason that will not go away
    /// (no CAP_SYS_ADMIN, a backing filesystem stacked too deep).
    refused: AtomicBool,
}

/// What an open or create answers: the handle, the open flags and the backing id.
pub(super) struct OpenReply {
    pub fh: u64,
    pub flags: u32,
    pub backing_id: i32,
}

impl Passthrough {
    pub fn new(backing: BackingFiles) -> Self {
        Self {
            backing,
            by_inode: Mutex::new(HashMap::new()),
            refused: AtomicBool::new(false),
        }
    }

    /// The reply for an open of `inode` whose underlying file is `fd`. `may_pass` says the
    /// open may use passthrough; `keep_cache` the page cache may outlive the open (the file
    /// cannot change under it). ESTALE: the inode's passthrough opens are bound to another
    /// file (it was copied up since), so this open needs a new inode.
    pub fn open(
        &self,
        inode: u64,
        fd: OwnedFd,
        may_pass: bool,
        keep_cache: u32,
    ) -> Result<OpenReply, Errno> {
        let mut map = self.by_inode.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&inode) {
            Some(Mode::Passthrough {
                id,
                dev,
                ino,
                opens,
            }) => {
                if identity(fd.as_fd()) != Some((*dev, *ino)) {
                    return Err(libc::ESTALE.into());
                }
                *opens += 1;
                let id = *id;
                Ok(passthrough_reply(fd, id))
            }
            Some(Mode::Cached { opens }) => {
                *opens += 1;
                Ok(cached_reply(fd, keep_cache))
            }
            None => {
                if may_pass {
                    if let Some((id, dev, ino)) = self.register(inode, fd.as_fd()) {
                        map.insert(
                            inode,
                            Mode::Passthrough {
                                id,
                                dev,
                                ino,
                                opens: 1,
                            },
                        );
                        return Ok(passthrough_reply(fd, id));
                    }
                }
                map.insert(inode, Mode::Cached { opens: 1 });
                // An inode that was in passthrough mode may have stale pages from before.
                Ok(cached_reply(fd, if may_pass { 0 } else { keep_cache }))
            }
        }
    }

    /// Ends one open of `inode` made by [`Self::open`].
    pub fn release(&self, inode: u64) {
        let mut map = self.by_inode.lock().unwrap_or_else(|p| p.into_inner());
        let last = match map.get_mut(&inode) {
            Some(Mode::Passthrough { opens, .. }) | Some(Mode::Cached { opens }) => {
                *opens = opens.saturating_sub(1);
                *opens == 0
            }
            None => false,
        };
        if last {
            if let Some(Mode::Passthrough { id, .. }) = map.remove(&inode) {
                if let Err(e) = self.backing.close(id) {
                    tracing::warn!(inode, id, "closing a FUSE backing file id: {e}");
                }
            }
        }
    }

    fn register(&self, inode: u64, fd: BorrowedFd<'_>) -> Option<(i32, u64, u64)> {
        if self.refused.load(Ordering::Relaxed) {
            return None;
        }
        let (dev, ino) = identity(fd)?;
        match self.backing.open(fd) {
            Ok(id) => Some((id, dev, ino)),
            Err(e) => {
                if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ELOOP)) {
                    tracing::warn!("FUSE passthrough refused ({e}); serving reads and writes");
                    self.refused.store(true, Ordering::Relaxed);
                } else {
                    tracing::debug!(inode, "FUSE passthrough not used for this open: {e}");
                }
                None
            }
        }
    }
}

fn passthrough_reply(fd: OwnedFd, id: i32) -> OpenReply {
    OpenReply {
        fh: handle(fd, id),
        flags: FOPEN_PASSTHROUGH,
        backing_id: id,
    }
}

fn cached_reply(fd: OwnedFd, flags: u32) -> OpenReply {
    OpenReply {
        fh: handle(fd, 0),
        flags,
        backing_id: 0,
    }
}

fn handle(fd: OwnedFd, backing_id: i32) -> u64 {
    (fd.into_raw_fd() as u32 as u64) | ((backing_id as u32 as u64) << 32)
}

#[cfg(test)]
fn backing_id_of(fh: u64) -> i32 {
    (fh >> 32) as u32 as i32
}

fn identity(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat fills the struct on success; it is read only then.
    let st = unsafe {
        if libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) != 0 {
            return None;
        }
        st.assume_init()
    };
    Some((st.st_dev, st.st_ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_keeps_the_fd_in_the_low_bits() {
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        let fd = OwnedFd::from(file);
        let raw = fd.as_raw_fd();
        let fh = handle(fd, 7);
        assert_eq!(fh as std::os::fd::RawFd, raw);
        assert_eq!(backing_id_of(fh), 7);
        // SAFETY: closing the fd the handle took over.
        unsafe { libc::close(raw) };
    }
}
