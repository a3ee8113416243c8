//! Changes of the namespace: create, mkdir, mknod, symlink, link, unlink, rmdir, rename.
//! Every one holds `ns`. Names over a whiteout are made in the work directory and renamed
//! into place (a new directory there becomes opaque); removing a name a lower layer shows
//! leaves a whiteout.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use fuse3::raw::reply::ReplyEntry;
use fuse3::Errno;

use super::copyup::remove_tree_at;
use super::table::LayerDir;
use super::{err, sys, tmp_cstr, OverlayFs, OPAQUE_XATTR};

/// Who makes an entry, and with which mode.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owner {
    pub uid: u32,
    pub gid: u32,
}

fn set_opaque(dir: RawFd, name: &CStr) -> io::Result<()> {
    let fd = sys::open_dir(dir, name)?;
    sys::fsetxattr(fd.as_raw_fd(), OPAQUE_XATTR, b"y", 0)
}

fn make_whiteout(dir: RawFd, name: &CStr) -> io::Result<()> {
    sys::mknodat(dir, name, libc::S_IFCHR, 0)
}

impl OverlayFs {
    /// The upper directory of `parent` and whether `name` is a whiteout there. A visible
    /// entry is EEXIST.
    fn prepare_name(&self, parent: u64, name: &CStr) -> Result<(Arc<LayerDir>, bool), Errno> {
        let up = self.upper_dir(parent)?;
        match sys::fstatat(up.fd.as_raw_fd(), name) {
            Ok(st) if sys::is_whiteout(&st) => Ok((up, true)),
            Ok(_) => Err(libc::EEXIST.into()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let stack = self.dir_stack(parent)?;
                if self.lower_has(&stack, name).map_err(err)? {
                    return Err(libc::EEXIST.into());
                }
                Ok((up, false))
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Makes a new entry with `make` (in the upper directory, or in the work directory and
    /// then over a whiteout), owned by the caller, and registers its node.
    fn make_entry<T>(
        &self,
        parent: u64,
        name: &OsStr,
        owner: Owner,
        mode: Option<u32>,
        is_dir: bool,
        make: impl FnOnce(RawFd, &CStr) -> io::Result<T>,
    ) -> Result<(ReplyEntry, T), Errno> {
        self.check_writable()?;
        let _ns = self.lock_ns();
        let cname = sys::with_name(name, |c| Ok(c.to_owned())).map_err(err)?;
        let (up, whiteout) = self.prepare_name(parent, &cname)?;
        let pfd = up.fd.as_raw_fd();
        let made = if !whiteout {
            let t = make(pfd, &cname).map_err(err)?;
            if let Err(e) = self.own_new_entry(pfd, &cname, owner.uid, owner.gid, mode, pfd) {
                let _ = sys::unlinkat(pfd, &cname, is_dir);
                return Err(err(e));
            }
            t
        } else {
            let work = self.work_fd()?;
            let tmp = self.tmp_name();
            let tmp = tmp_cstr(&tmp);
            let res = (|| -> io::Result<T> {
                let t = make(work, tmp)?;
                self.own_new_entry(work, tmp, owner.uid, owner.gid, mode, pfd)?;
                if is_dir {
                    set_opaque(work, tmp)?;
                    sys::renameat2(work, tmp, pfd, &cname, libc::RENAME_EXCHANGE)?;
                    sys::unlinkat(work, tmp, false)?;
                } else {
                    sys::renameat2(work, tmp, pfd, &cname, 0)?;
                }
                Ok(t)
            })();
            match res {
                Ok(t) => t,
                Err(e) => {
                    let _ = remove_tree_at(work, tmp);
                    return Err(err(e));
                }
            }
        };
        let st = sys::fstatat(pfd, &cname).map_err(err)?;
        let dirs = if is_dir {
            let fd = sys::open_dir(pfd, &cname).map_err(err)?;
            Some(Arc::new(vec![Arc::new(LayerDir { layer: 0, fd })]))
        } else {
            None
        };
        let mut t = self.table_mut();
        let ino = t.set_child(parent, name, 0, is_dir, dirs, None);
        t.add_lookup(ino);
        let shown = t.shown_ino(ino);
        Ok((self.entry_reply(ino, shown, &st, false), made))
    }

    pub(super) fn do_create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        owner: Owner,
    ) -> Result<(ReplyEntry, OwnedFd), Errno> {
        let flags = self.open_flags(flags) | libc::O_CREAT | libc::O_EXCL;
        self.make_entry(parent, name, owner, Some(mode), false, |dir, c| {
            sys::openat(dir, c, flags, mode & 0o7777)
        })
    }

    pub(super) fn do_mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        owner: Owner,
    ) -> Result<ReplyEntry, Errno> {
        self.make_entry(parent, name, owner, Some(mode), true, |dir, c| {
            sys::mkdirat(dir, c, mode & 0o7777)
        })
        .map(|(e, ())| e)
    }

    pub(super) fn do_mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        owner: Owner,
    ) -> Result<ReplyEntry, Errno> {
        self.make_entry(parent, name, owner, Some(mode & 0o7777), false, |dir, c| {
            sys::mknodat(dir, c, mode, rdev as u64)
        })
        .map(|(e, ())| e)
    }

    pub(super) fn do_symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        owner: Owner,
    ) -> Result<ReplyEntry, Errno> {
        let target = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(target))
            .map_err(|_| Errno::from(libc::EINVAL))?;
        self.make_entry(parent, name, owner, None, false, |dir, c| {
            sys::symlinkat(&target, dir, c)
        })
        .map(|(e, ())| e)
    }

    pub(super) fn do_link(
        &self,
        ino: u64,
        new_parent: u64,
        new_name: &OsStr,
    ) -> Result<ReplyEntry, Errno> {
        self.check_writable()?;
        let _ns = self.lock_ns();
        // The new name belongs to the node that serves `ino` now (it may have been split).
        let ino = self.table().current(ino);
        self.copy_up(ino, true)?;
        let (src_parent, src_name) = {
            let t = self.table();
            let n = t.get(ino)?;
            if n.is_dir {
                return Err(libc::EPERM.into());
            }
            (n.parent, n.name.clone())
        };
        let src_dir = self.upper_dir(src_parent)?;
        let cname = sys::with_name(new_name, |c| Ok(c.to_owned())).map_err(err)?;
        let (up, whiteout) = self.prepare_name(new_parent, &cname)?;
        let pfd = up.fd.as_raw_fd();
        sys::with_name(&src_name, |src| {
            if !whiteout {
                sys::linkat(src_dir.fd.as_raw_fd(), src, pfd, &cname)
            } else {
                let work = self.work.as_ref().map(|w| w.as_raw_fd()).unwrap_or(-1);
                let tmp = self.tmp_name();
                let tmp = tmp_cstr(&tmp);
                sys::linkat(src_dir.fd.as_raw_fd(), src, work, tmp)?;
                sys::renameat2(work, tmp, pfd, &cname, 0).inspect_err(|_| {
                    let _ = sys::unlinkat(work, tmp, false);
                })
            }
        })
        .map_err(err)?;
        let st = sys::fstatat(pfd, &cname).map_err(err)?;
        let mut t = self.table_mut();
        t.add_alias(ino, new_parent, new_name);
        t.relink(ino, Some((0, st.st_ino)));
        t.add_lookup(ino);
        let shown = t.shown_ino(ino);
        Ok(self.entry_reply(ino, shown, &st, false))
    }

    pub(super) fn do_unlink(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.check_writable()?;
        let _ns = self.lock_ns();
        let cname = sys::with_name(name, |c| Ok(c.to_owned())).map_err(err)?;
        let stack = self.dir_stack(parent)?;
        let found = self.resolve(&stack, &cname).map_err(err)?;
        let Some(found) = found else {
            return Err(libc::ENOENT.into());
        };
        if found.dirs.is_some() {
            return Err(libc::EISDIR.into());
        }
        let up = self.upper_dir(parent)?;
        let stack = self.dir_stack(parent)?;
        let pfd = up.fd.as_raw_fd();
        let needs_whiteout = self.lower_has(&stack, &cname).map_err(err)?;
        if found.layer == 0 {
            if needs_whiteout {
                let work = self.work_fd()?;
                let tmp = self.tmp_name();
                let tmp = tmp_cstr(&tmp);
                make_whiteout(work, tmp).map_err(err)?;
                sys::renameat2(work, tmp, pfd, &cname, 0).map_err(|e| {
                    let _ = sys::unlinkat(work, tmp, false);
                    err(e)
                })?;
            } else {
                sys::unlinkat(pfd, &cname, false).map_err(err)?;
            }
        } else {
            make_whiteout(pfd, &cname).map_err(err)?;
        }
        self.table_mut().unlink_child(parent, name);
        Ok(())
    }

    pub(super) fn do_rmdir(&self, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.check_writable()?;
        let _ns = self.lock_ns();
        let cname = sys::with_name(name, |c| Ok(c.to_owned())).map_err(err)?;
        let stack = self.dir_stack(parent)?;
        let Some(found) = self.resolve(&stack, &cname).map_err(err)? else {
            return Err(libc::ENOENT.into());
        };
        let Some(dirs) = found.dirs else {
            return Err(libc::ENOTDIR.into());
        };
        let dirs = Arc::new(dirs);
        if !self.merged_is_empty(&dirs).map_err(err)? {
            return Err(libc::ENOTEMPTY.into());
        }
        let up = self.upper_dir(parent)?;
        let stack = self.dir_stack(parent)?;
        let pfd = up.fd.as_raw_fd();
        let needs_whiteout = self.lower_has(&stack, &cname).map_err(err)?;
        if found.layer == 0 {
            let work = self.work_fd()?;
            let tmp = self.tmp_name();
            let tmp = tmp_cstr(&tmp);
            if needs_whiteout {
                make_whiteout(work, tmp).map_err(err)?;
                sys::renameat2(work, tmp, pfd, &cname, libc::RENAME_EXCHANGE).map_err(|e| {
                    let _ = sys::unlinkat(work, tmp, false);
                    err(e)
                })?;
            } else {
                sys::renameat2(pfd, &cname, work, tmp, 0).map_err(err)?;
            }
            // The old directory (holding only whiteouts) now sits in the work directory.
            remove_tree_at(work, tmp).map_err(err)?;
        } else {
            make_whiteout(pfd, &cname).map_err(err)?;
        }
        self.table_mut().unlink_child(parent, name);
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            // RENAME_EXCHANGE and RENAME_WHITEOUT are not offered through the mount.
            return Err(libc::EINVAL.into());
        }
        let _ns = self.lock_ns();
        let src_c = sys::with_name(name, |c| Ok(c.to_owned())).map_err(err)?;
        let dst_c = sys::with_name(new_name, |c| Ok(c.to_owned())).map_err(err)?;
        let pstack = self.dir_stack(parent)?;
        let Some(src) = self.resolve(&pstack, &src_c).map_err(err)? else {
            return Err(libc::ENOENT.into());
        };
        let npstack = self.dir_stack(new_parent)?;
        let dst = self.resolve(&npstack, &dst_c).map_err(err)?;
        let src_is_dir = src.dirs.is_some();
        if let Some(d) = &dst {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(libc::EEXIST.into());
            }
            match (src_is_dir, &d.dirs) {
                (true, None) => return Err(libc::ENOTDIR.into()),
                (false, Some(_)) => return Err(libc::EISDIR.into()),
                (true, Some(dd)) => {
                    if !self.merged_is_empty(&Arc::new(dd.to_vec())).map_err(err)? {
                        return Err(libc::ENOTEMPTY.into());
                    }
                }
                (false, None) => {}
            }
            if parent == new_parent && name == new_name {
                return Ok(());
            }
        }
        let src_ino = {
            let mut t = self.table_mut();
            let is_dir = src_is_dir;
            let ino = t.ensure_child(parent, name, is_dir);
            if t.get(ino).is_ok_and(|n| n.is_fresh()) {
                ino
            } else {
                let link = super::link_key(src.layer, &src.st);
                t.set_child(
                    parent,
                    name,
                    src.layer,
                    is_dir,
                    src.dirs.clone().map(Arc::new),
                    link,
                )
            }
        };
        let work = self.work_fd()?;
        // A directory with lower content is copied up whole to a temporary name first.
        let whole_copy = src_is_dir
            && src
                .dirs
                .as_ref()
                .is_some_and(|d| d.iter().any(|l| l.layer != 0));
        let copy_tmp = self.tmp_name();
        let copy_tmp = tmp_cstr(&copy_tmp);
        if whole_copy {
            let stack = Arc::new(src.dirs.clone().unwrap_or_default());
            self.copy_tree(&stack, work, copy_tmp).map_err(|e| {
                let _ = remove_tree_at(work, copy_tmp);
                err(e)
            })?;
        } else if !src_is_dir {
            self.copy_up(src_ino, true)?;
        }
        let up = self.upper_dir(parent)?;
        let nup = self.upper_dir(new_parent)?;
        let pstack = self.dir_stack(parent)?;
        let npstack = self.dir_stack(new_parent)?;
        let (pfd, npfd) = (up.fd.as_raw_fd(), nup.fd.as_raw_fd());
        let src_needs_whiteout = self.lower_has(&pstack, &src_c).map_err(err)?;
        let dst_has_lower = self.lower_has(&npstack, &dst_c).map_err(err)?;
        // Clear the target name in the upper layer: a directory there (empty in the merged
        // view, maybe holding whiteouts) is moved aside and removed after the rename.
        let dst_tmp = self.tmp_name();
        let dst_tmp = tmp_cstr(&dst_tmp);
        let mut removed_dst = false;
        let dst_upper = match sys::fstatat(npfd, &dst_c) {
            Ok(st) => Some(st),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => None,
            Err(e) => return Err(err(e)),
        };
        let dst_is_whiteout = dst_upper.as_ref().is_some_and(sys::is_whiteout);
        if dst_upper.as_ref().is_some_and(sys::is_dir) {
            sys::renameat2(npfd, &dst_c, work, dst_tmp, 0).map_err(err)?;
            removed_dst = true;
        }
        let result = (|| -> io::Result<()> {
            if whole_copy {
                if dst_has_lower {
                    set_opaque(work, copy_tmp)?;
                }
                if dst_is_whiteout {
                    sys::renameat2(work, copy_tmp, npfd, &dst_c, libc::RENAME_EXCHANGE)?;
                    sys::unlinkat(work, copy_tmp, false)?;
                } else {
                    sys::renameat2(work, copy_tmp, npfd, &dst_c, 0)?;
                }
                // The old name: drop its upper part, hide the lower part.
                match sys::fstatat(pfd, &src_c) {
                    Ok(st) if sys::is_dir(&st) => {
                        make_whiteout(work, copy_tmp)?;
                        sys::renameat2(work, copy_tmp, pfd, &src_c, libc::RENAME_EXCHANGE)?;
                        remove_tree_at(work, copy_tmp)?;
                    }
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => make_whiteout(pfd, &src_c)?,
                    Err(e) => return Err(e),
                }
                return Ok(());
            }
            if src_is_dir && dst_is_whiteout {
                sys::renameat2(pfd, &src_c, npfd, &dst_c, libc::RENAME_EXCHANGE)?;
                if !src_needs_whiteout {
                    sys::unlinkat(pfd, &src_c, false)?;
                }
            } else {
                let f = if src_needs_whiteout {
                    libc::RENAME_WHITEOUT
                } else {
                    0
                };
                sys::renameat2(pfd, &src_c, npfd, &dst_c, f)?;
            }
            if src_is_dir && dst_has_lower {
                set_opaque(npfd, &dst_c)?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            if removed_dst {
                let _ = sys::renameat2(work, dst_tmp, npfd, &dst_c, libc::RENAME_NOREPLACE);
            }
            if whole_copy {
                let _ = remove_tree_at(work, copy_tmp);
            }
            return Err(err(e));
        }
        if removed_dst {
            remove_tree_at(work, dst_tmp).map_err(err)?;
        }
        let new_dirs = if src_is_dir {
            let fd = sys::open_dir(npfd, &dst_c).map_err(err)?;
            Some(Arc::new(vec![Arc::new(LayerDir { layer: 0, fd })]))
        } else {
            None
        };
        let mut t = self.table_mut();
        t.move_child(parent, name, new_parent, new_name);
        if let Ok(n) = t.get_mut(src_ino) {
            n.layer = 0;
            if src_is_dir {
                n.dirs = new_dirs;
                n.stale = false;
            }
        }
        if whole_copy {
            t.mark_subtree_stale(src_ino);
        }
        Ok(())
    }
}
