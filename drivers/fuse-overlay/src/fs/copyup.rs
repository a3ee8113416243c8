//! Copy-up: a lower entry is copied into the work directory with its data, mode, ownership,
//! xattrs and times, then renamed into the upper layer, so the switch is atomic. Parents are
//! copied up first. With `durable_copy_up` the copy is fsynced before the rename (as kernel
//! overlayfs does), so a crash can never leave a short copy hiding the lower file.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use fuse3::Errno;

use super::table::{LayerDir, ROOT};
use super::{err, sys, tmp_cstr, OverlayFs, PRIVATE_XATTR_PREFIX};

const FICLONE: libc::c_ulong = 0x4004_9409;

impl OverlayFs {
    /// The upper directory of merged directory `ino`, copying it (and its parents) up first.
    /// Caller holds `ns`.
    pub(super) fn upper_dir(&self, ino: u64) -> Result<Arc<LayerDir>, Errno> {
        self.check_writable()?;
        let stack = self.dir_stack(ino)?;
        if let Some(top) = stack.first().filter(|d| d.layer == 0) {
            return Ok(top.clone());
        }
        if ino == ROOT {
            return self
                .roots
                .first()
                .cloned()
                .ok_or_else(|| libc::EROFS.into());
        }
        let (parent, name) = {
            let t = self.table();
            let n = t.get(ino)?;
            (n.parent, n.name.clone())
        };
        let parent_upper = self.upper_dir(parent)?;
        let src = stack.first().ok_or_else(|| Errno::from(libc::ENOENT))?;
        let work = self.work_fd()?;
        let tmp = self.tmp_name();
        let tmp = tmp_cstr(&tmp);
        let st = sys::fstat(src.fd.as_raw_fd()).map_err(err)?;
        let made = (|| -> io::Result<_> {
            sys::mkdirat(work, tmp, 0o700)?;
            copy_xattrs(src.fd.as_raw_fd(), OsStr::new("."), work, tmp_os(tmp))?;
            sys::fchownat(work, tmp, st.st_uid, st.st_gid)?;
            sys::fchmodat(work, tmp, st.st_mode & 0o7777)?;
            sys::utimensat(work, tmp, Some(atime(&st)), Some(mtime(&st)))?;
            sys::with_name(&name, |c| {
                sys::renameat2(
                    work,
                    tmp,
                    parent_upper.fd.as_raw_fd(),
                    c,
                    libc::RENAME_NOREPLACE,
                )?;
                sys::open_dir(parent_upper.fd.as_raw_fd(), c)
            })
        })();
        let fd = match made {
            Ok(fd) => fd,
            Err(e) => {
                let _ = remove_tree_at(work, tmp);
                return Err(err(e));
            }
        };
        let upper = Arc::new(LayerDir { layer: 0, fd });
        let mut new_stack = vec![upper.clone()];
        new_stack.extend(stack.iter().cloned());
        let mut t = self.table_mut();
        let node = t.get_mut(ino)?;
        node.layer = 0;
        node.dirs = Some(Arc::new(new_stack));
        Ok(upper)
    }

    /// Copies non-directory node `ino` into the upper layer (its data only if `with_data`;
    /// an open with O_TRUNC needs none). Caller holds `ns`.
    pub(super) fn copy_up(&self, ino: u64, with_data: bool) -> Result<(), Errno> {
        self.check_writable()?;
        self.refresh(ino)?;
        let (parent, name, layer, is_dir) = {
            let t = self.table();
            let n = t.get(ino)?;
            if n.unlinked {
                return Err(libc::ENOENT.into());
            }
            (n.parent, n.name.clone(), n.layer, n.is_dir)
        };
        if is_dir {
            self.upper_dir(ino)?;
            return Ok(());
        }
        if layer == 0 {
            return Ok(());
        }
        let parent_upper = self.upper_dir(parent)?;
        let src_dir = self.table().layer_dir(parent, layer)?;
        let work = self.work_fd()?;
        let tmp = self.tmp_name();
        let tmp = tmp_cstr(&tmp);
        let res = sys::with_name(&name, |c| {
            copy_entry(src_dir, c, work, tmp, with_data, self.cfg.durable_copy_up)?;
            sys::renameat2(
                work,
                tmp,
                parent_upper.fd.as_raw_fd(),
                c,
                libc::RENAME_NOREPLACE,
            )?;
            sys::fstatat(parent_upper.fd.as_raw_fd(), c)
        });
        let st = match res {
            Ok(st) => st,
            Err(e) => {
                let _ = sys::unlinkat(work, tmp, false);
                return Err(err(e));
            }
        };
        // Other names of a hard-linked lower file the mount knows become links to the copy,
        // so they keep sharing their data (names not seen yet stay with the lower file).
        let aliases = self.table().get(ino)?.aliases.clone();
        let mut nlink_key = None;
        for (ap, an) in &aliases {
            let adir = self.upper_dir(*ap)?;
            sys::with_name(&name, |src| {
                sys::with_name(an, |dst| {
                    sys::linkat(parent_upper.fd.as_raw_fd(), src, adir.fd.as_raw_fd(), dst)
                })
            })
            .map_err(err)?;
            nlink_key = Some((0, st.st_ino));
        }
        let mut t = self.table_mut();
        t.get_mut(ino)?.layer = 0;
        t.relink(ino, nlink_key);
        Ok(())
    }

    /// Copies the merged directory `stack` whole into `dst_dir/dst_name` (for renaming a
    /// directory that has lower content). Caller holds `ns`.
    pub(super) fn copy_tree(
        &self,
        stack: &super::table::DirStack,
        dst_dir: RawFd,
        dst_name: &CStr,
    ) -> io::Result<()> {
        let top = stack
            .first()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        let st = sys::fstat(top.fd.as_raw_fd())?;
        sys::mkdirat(dst_dir, dst_name, 0o700)?;
        let out = sys::open_dir(dst_dir, dst_name)?;
        copy_xattrs(
            top.fd.as_raw_fd(),
            OsStr::new("."),
            dst_dir,
            tmp_os(dst_name),
        )?;
        for item in self.merged_items(stack)? {
            let name = item.name.as_os_str();
            sys::with_name(name, |c| {
                if item.kind == libc::DT_DIR {
                    let sub = self.resolve(stack, c)?;
                    if let Some(sub) = sub.and_then(|f| f.dirs) {
                        self.copy_tree(&Arc::new(sub), out.as_raw_fd(), c)?;
                    }
                    Ok(())
                } else {
                    let src = stack
                        .iter()
                        .find(|d| d.layer == item.layer)
                        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
                    copy_entry(src.fd.as_raw_fd(), c, out.as_raw_fd(), c, true, false)
                }
            })?;
        }
        sys::fchownat(dst_dir, dst_name, st.st_uid, st.st_gid)?;
        sys::fchmodat(dst_dir, dst_name, st.st_mode & 0o7777)?;
        sys::utimensat(dst_dir, dst_name, Some(atime(&st)), Some(mtime(&st)))?;
        Ok(())
    }
}

fn tmp_os(c: &CStr) -> &OsStr {
    OsStr::from_bytes(c.to_bytes())
}

pub(super) fn atime(st: &libc::stat) -> libc::timespec {
    libc::timespec {
        tv_sec: st.st_atime,
        tv_nsec: st.st_atime_nsec,
    }
}

pub(super) fn mtime(st: &libc::stat) -> libc::timespec {
    libc::timespec {
        tv_sec: st.st_mtime,
        tv_nsec: st.st_mtime_nsec,
    }
}

/// Copies one non-directory entry with its metadata to `dst_dir/dst` (which must not exist).
pub(super) fn copy_entry(
    src_dir: RawFd,
    src: &CStr,
    dst_dir: RawFd,
    dst: &CStr,
    with_data: bool,
    durable: bool,
) -> io::Result<()> {
    let st = sys::fstatat(src_dir, src)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {
            let out = sys::openat(
                dst_dir,
                dst,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )?;
            if with_data && st.st_size > 0 {
                let input = sys::openat(src_dir, src, libc::O_RDONLY, 0)?;
                copy_data(
                    input.as_raw_fd(),
                    out.as_raw_fd(),
                    st.st_size as u64,
                    durable,
                )?;
            }
            if durable && with_data {
                sys::fsync(out.as_raw_fd(), true)?;
            }
        }
        libc::S_IFLNK => {
            let target = sys::readlinkat(src_dir, src)?;
            let target = std::ffi::CString::new(target)
                .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
            sys::symlinkat(&target, dst_dir, dst)?;
        }
        _ => sys::mknodat(dst_dir, dst, st.st_mode & !0o7777 | 0o600, st.st_rdev)?,
    }
    copy_xattrs(src_dir, tmp_os(src), dst_dir, tmp_os(dst))?;
    sys::fchownat(dst_dir, dst, st.st_uid, st.st_gid)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        sys::fchmodat(dst_dir, dst, st.st_mode & 0o7777)?;
    }
    sys::utimensat(dst_dir, dst, Some(atime(&st)), Some(mtime(&st)))?;
    Ok(())
}

/// Bytes copied between writeback starts of a copy that is to be made durable.
const WRITEBACK_CHUNK: u64 = 32 << 20;

/// Reflink when the filesystem can, else copy_file_range, else read/write. `durable`: the
/// caller will fsync the copy, so writeback of each chunk starts as soon as it is copied
/// (sync_file_range, not waited for) and overlaps reading the next instead of all of it
/// following the copy: a cold 1 GiB copy-up then takes the longer of reading and writing
/// rather than their sum.
fn copy_data(input: RawFd, out: RawFd, size: u64, durable: bool) -> io::Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    if unsafe { libc::ioctl(out, FICLONE, input) } == 0 {
        return Ok(());
    }
    let chunk = if durable { WRITEBACK_CHUNK } else { 1 << 30 };
    let mut copied = 0u64;
    while copied < size {
        // SAFETY: null offsets use and advance the fds' own positions.
        let n = unsafe {
            libc::copy_file_range(
                input,
                std::ptr::null_mut(),
                out,
                std::ptr::null_mut(),
                (size - copied).min(chunk) as usize,
                0,
            )
        };
        if n > 0 && durable {
            // SAFETY: plain syscall on our own fd; only starts writeback of the range.
            unsafe {
                libc::sync_file_range(
                    out,
                    copied as libc::off64_t,
                    n as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if copied == 0
                && matches!(
                    e.raw_os_error(),
                    Some(libc::EXDEV)
                        | Some(libc::ENOSYS)
                        | Some(libc::EOPNOTSUPP)
                        | Some(libc::EINVAL)
                )
            {
                return copy_by_reading(input, out);
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        copied += n as u64;
    }
    Ok(())
}

fn copy_by_reading(input: RawFd, out: RawFd) -> io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = sys::pread(input, &mut buf, off)?;
        if n == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            done += sys::pwrite(out, &buf[done..n], off + done as u64)?;
        }
        off += n as u64;
    }
}

/// Copies user-visible xattrs (not our own `trusted.overlay.*` markers) between two entries.
pub(super) fn copy_xattrs(
    src_dir: RawFd,
    src: &OsStr,
    dst_dir: RawFd,
    dst: &OsStr,
) -> io::Result<()> {
    let names = sys::with_proc_path(src_dir, src, |p| match sys::list_xattr_vec(p) {
        Ok(v) => Ok(v),
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(Vec::new()),
        Err(e) => Err(e),
    })?;
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(PRIVATE_XATTR_PREFIX) {
            continue;
        }
        let cname =
            std::ffi::CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let value = sys::with_proc_path(src_dir, src, |p| sys::get_xattr_vec(p, &cname))?;
        if let Some(value) = value {
            let set = sys::with_proc_path(dst_dir, dst, |p| sys::lsetxattr(p, &cname, &value, 0));
            match set {
                Ok(()) => {}
                // Symlinks cannot carry user.* xattrs; nothing to carry over then.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// Removes `dir/name` and, if it is a directory, everything below it.
pub(crate) fn remove_tree_at(dir: RawFd, name: &CStr) -> io::Result<()> {
    let st = match sys::fstatat(dir, name) {
        Ok(st) => st,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    if !sys::is_dir(&st) {
        return sys::unlinkat(dir, name, false);
    }
    let fd = sys::open_dir(dir, name)?;
    for e in sys::read_dir(fd.as_raw_fd())? {
        let child = std::ffi::CString::new(e.name)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        remove_tree_at(fd.as_raw_fd(), &child)?;
    }
    sys::unlinkat(dir, name, true)
}
