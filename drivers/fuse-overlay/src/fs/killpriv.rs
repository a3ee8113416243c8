//! Clearing set-user-ID and set-group-ID bits when an unprivileged caller writes, truncates or
//! chowns a file. The mount asks for FUSE_HANDLE_KILLPRIV_V2, so the kernel leaves this to us:
//! in exchange it stops asking for `security.capability` before every write and for the
//! attributes before every chown (two to three round trips per file of an untar). The kernel
//! flags the requests whose caller lacks CAP_FSETID; we act as root, whom the VFS exempts, so
//! we clear the bits ourselves, by the VFS's rules: set-user-ID always, set-group-ID if the
//! file is group-executable or the caller is not in the file's group. File capabilities the
//! underlying filesystem drops by itself on our writes, truncates and chowns.
//!
//! Passthrough writes never reach us, so files with either bit are opened for writing
//! through the daemon (see file.rs).

use std::io;
use std::os::fd::RawFd;

use super::sys;

/// The caller of a request the kernel flagged for clearing the bits.
#[derive(Debug, Clone, Copy)]
pub(super) struct Caller {
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    /// Whether the caller is in group `gid`: its own group, or a supplementary group of its
    /// process. Unknown (the process is gone) counts as not in the group, which clears.
    fn in_group(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .is_some_and(|groups| {
                groups
                    .split_whitespace()
                    .any(|g| g.parse::<u32>() == Ok(gid))
            })
    }
}

/// Whether a file with this mode has a bit to clear for some caller: writes to it must reach
/// us.
pub(super) fn has_setid_bits(mode: u32) -> bool {
    mode & (libc::S_ISUID | libc::S_ISGID) != 0
}

/// The bits a change by `caller` clears on a file whose stat is `st`.
fn bits_to_clear(st: &libc::stat, caller: Caller) -> u32 {
    if !sys::is_reg(st) {
        return 0;
    }
    let mode = st.st_mode;
    let mut bits = mode & libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !caller.in_group(st.st_gid)) {
        bits |= libc::S_ISGID;
    }
    bits
}

/// Clears the bits on the file open as `fd`.
pub(super) fn clear_fd(fd: RawFd, caller: Caller) -> io::Result<()> {
    clear_at(fd, sys::empty(), caller)
}

/// Clears the bits on the entry `name` of directory `dir` (`dir` itself if `name` is empty).
pub(super) fn clear_at(dir: RawFd, name: &std::ffi::CStr, caller: Caller) -> io::Result<()> {
    let st = sys::fstatat(dir, name)?;
    let bits = bits_to_clear(&st, caller);
    if bits == 0 {
        return Ok(());
    }
    sys::fchmodat(dir, name, st.st_mode & 0o7777 & !bits)
}
