//! The `fuse3::raw::Filesystem` implementation: each request maps onto one method of
//! `OverlayFs`. The syscalls are short and run on the serving runtime's worker threads (the
//! driver gives FUSE its own runtime, so they never hold up the daemon's executor).

use std::ffi::OsStr;
use std::num::NonZeroU32;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Duration;

use fuse3::raw::prelude::*;
use fuse3::{Inode, Result};
use futures::stream::{self, Stream, StreamExt};

use super::dir::file_type_of_dt;
use super::killpriv::Caller;
use super::namespace::Owner;
use super::{err, errno_is, sys, OverlayFs};

/// Largest write the kernel may send in one request (1 MiB; the kernel caps it at its
/// max_pages).
const MAX_WRITE: u32 = 1 << 20;

/// opendir reply flags: keep the cached listing across opens, and cache listings at all.
const FOPEN_KEEP_CACHE: u32 = 1 << 1;
const FOPEN_CACHE_DIR: u32 = 1 << 3;

fn caller(req: &Request) -> Caller {
    Caller {
        gid: req.gid,
        pid: req.pid,
    }
}

fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid,
        gid: req.gid,
    }
}

impl OverlayFs {
    fn listing(&self, ino: u64, fh: u64, offset: u64) -> Result<super::Listing> {
        let cached = {
            let handles = self.dir_handles.lock().unwrap_or_else(|p| p.into_inner());
            handles.get(&fh).cloned().flatten()
        };
        if let (Some(l), true) = (cached, offset != 0) {
            return Ok(l);
        }
        let stack = self.dir_stack(ino)?;
        let items = Arc::new(self.merged_items(&stack).map_err(err)?);
        let mut handles = self.dir_handles.lock().unwrap_or_else(|p| p.into_inner());
        handles.insert(fh, Some(items.clone()));
        Ok(items)
    }

    fn dir_entry(
        &self,
        parent: u64,
        items: &super::Listing,
        index: usize,
    ) -> Result<DirectoryEntry> {
        let item = &items[index];
        let is_dir = item.kind == libc::DT_DIR;
        let ino = {
            let mut t = self.table_mut();
            let ino = t.ensure_child(parent, &item.name, is_dir);
            t.shown_ino(ino)
        };
        Ok(DirectoryEntry {
            inode: ino,
            kind: file_type_of_dt(item.kind),
            name: item.name.clone(),
            offset: index as i64 + 3,
        })
    }

    fn dot_entries(&self, parent: u64) -> [(u64, &'static str); 2] {
        let grand = self.table().get(parent).map(|n| n.parent).unwrap_or(parent);
        [(parent, "."), (grand, "..")]
    }
}

impl Filesystem for OverlayFs {
    async fn init(&self, _req: Request) -> Result<ReplyInit> {
        Ok(ReplyInit {
            max_write: NonZeroU32::new(MAX_WRITE).unwrap_or(NonZeroU32::MIN),
        })
    }

    async fn destroy(&self, _req: Request) {}

    fn passthrough_enabled(&self, backing: fuse3::raw::BackingFiles) {
        self.enable_passthrough(backing);
    }

    async fn lookup(&self, _req: Request, parent: Inode, name: &OsStr) -> Result<ReplyEntry> {
        self.lookup_entry(parent, name)
    }

    async fn forget(&self, _req: Request, inode: Inode, nlookup: u64) {
        self.table_mut().forget(inode, nlookup);
    }

    async fn batch_forget(&self, _req: Request, inodes: &[Inode]) {
        let mut t = self.table_mut();
        for &ino in inodes {
            t.forget(ino, 1);
        }
    }

    async fn getattr(
        &self,
        _req: Request,
        inode: Inode,
        fh: Option<u64>,
        _flags: u32,
    ) -> Result<ReplyAttr> {
        self.do_getattr(inode, fh)
    }

    async fn setattr(
        &self,
        req: Request,
        inode: Inode,
        fh: Option<u64>,
        set_attr: SetAttr,
    ) -> Result<ReplyAttr> {
        let kill = set_attr.kill_suidgid.then(|| caller(&req));
        self.do_setattr(inode, fh, &set_attr, kill)
    }

    async fn readlink(&self, _req: Request, inode: Inode) -> Result<ReplyData> {
        self.do_readlink(inode).map(ReplyData::from)
    }

    async fn symlink(
        &self,
        req: Request,
        parent: Inode,
        name: &OsStr,
        link: &OsStr,
    ) -> Result<ReplyEntry> {
        self.do_symlink(parent, name, link, owner(&req))
    }

    async fn mknod(
        &self,
        req: Request,
        parent: Inode,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<ReplyEntry> {
        self.do_mknod(parent, name, mode, rdev, owner(&req))
    }

    async fn mkdir(
        &self,
        req: Request,
        parent: Inode,
        name: &OsStr,
        mode: u32,
        _umask: u32,
    ) -> Result<ReplyEntry> {
        self.do_mkdir(parent, name, mode, owner(&req))
    }

    async fn unlink(&self, _req: Request, parent: Inode, name: &OsStr) -> Result<()> {
        self.do_unlink(parent, name)
    }

    async fn rmdir(&self, _req: Request, parent: Inode, name: &OsStr) -> Result<()> {
        self.do_rmdir(parent, name)
    }

    async fn rename(
        &self,
        _req: Request,
        parent: Inode,
        name: &OsStr,
        new_parent: Inode,
        new_name: &OsStr,
    ) -> Result<()> {
        self.do_rename(parent, name, new_parent, new_name, 0)
    }

    async fn rename2(
        &self,
        _req: Request,
        parent: Inode,
        name: &OsStr,
        new_parent: Inode,
        new_name: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.do_rename(parent, name, new_parent, new_name, flags)
    }

    async fn link(
        &self,
        _req: Request,
        inode: Inode,
        new_parent: Inode,
        new_name: &OsStr,
    ) -> Result<ReplyEntry> {
        self.do_link(inode, new_parent, new_name)
    }

    async fn open(&self, _req: Request, inode: Inode, flags: u32) -> Result<ReplyOpen> {
        self.do_open(inode, flags, None)
    }

    async fn open_kill_suidgid(&self, req: Request, inode: Inode, flags: u32) -> Result<ReplyOpen> {
        self.do_open(inode, flags, Some(caller(&req)))
    }

    async fn read(
        &self,
        _req: Request,
        _inode: Inode,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<ReplyData> {
        self.do_read(fh, offset, size)
    }

    fn read_into(
        &self,
        _req: &Request,
        _inode: Inode,
        fh: u64,
        offset: u64,
        buf: &mut [u8],
    ) -> Option<Result<usize>> {
        Some(self.do_read_into(fh, offset, buf))
    }

    async fn write(
        &self,
        req: Request,
        _inode: Inode,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
        _flags: u32,
    ) -> Result<ReplyWrite> {
        let kill = write_flags & fuse3::raw::flags::FUSE_WRITE_KILL_SUIDGID != 0;
        self.do_write(fh, offset, data, kill.then(|| caller(&req)))
    }

    async fn statfs(&self, _req: Request, _inode: Inode) -> Result<ReplyStatFs> {
        self.do_statfs()
    }

    async fn release(
        &self,
        _req: Request,
        inode: Inode,
        fh: u64,
        _flags: u32,
        _lock_owner: u64,
        _flush: bool,
    ) -> Result<()> {
        self.release_handle(inode, fh);
        Ok(())
    }

    async fn fsync(&self, _req: Request, _inode: Inode, fh: u64, datasync: bool) -> Result<()> {
        sys::fsync(fh as RawFd, datasync).map_err(err)
    }

    async fn setxattr(
        &self,
        _req: Request,
        inode: Inode,
        name: &OsStr,
        value: &[u8],
        flags: u32,
        _position: u32,
    ) -> Result<()> {
        self.do_setxattr(inode, name, value, flags)
    }

    async fn getxattr(
        &self,
        _req: Request,
        inode: Inode,
        name: &OsStr,
        size: u32,
    ) -> Result<ReplyXAttr> {
        self.do_getxattr(inode, name, size)
    }

    async fn listxattr(&self, _req: Request, inode: Inode, size: u32) -> Result<ReplyXAttr> {
        self.do_listxattr(inode, size)
    }

    async fn removexattr(&self, _req: Request, inode: Inode, name: &OsStr) -> Result<()> {
        self.do_removexattr(inode, name)
    }

    async fn flush(&self, _req: Request, _inode: Inode, _fh: u64, _lock_owner: u64) -> Result<()> {
        // Nothing to do at close: ENOSYS tells the kernel to stop sending FLUSH at all (it
        // still writes back dirty pages first), which saves a round trip per close.
        Err(libc::ENOSYS.into())
    }

    async fn opendir(&self, _req: Request, inode: Inode, _flags: u32) -> Result<ReplyOpen> {
        let is_dir = self.table().get(inode).map(|n| n.is_dir)?;
        if !is_dir {
            return Err(libc::ENOTDIR.into());
        }
        let fh = self.new_handle();
        self.dir_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, None);
        // The kernel may keep the listing in its page cache: every change to a directory
        // goes through this mount, and the kernel drops a directory's cached listing itself
        // when it creates, removes or renames an entry in it.
        Ok(ReplyOpen {
            fh,
            flags: FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR,
            backing_id: 0,
        })
    }

    async fn readdir<'a>(
        &'a self,
        _req: Request,
        parent: Inode,
        fh: u64,
        offset: i64,
    ) -> Result<ReplyDirectory<impl Stream<Item = Result<DirectoryEntry>> + Send + 'a>> {
        let offset = offset.max(0) as u64;
        let items = self.listing(parent, fh, offset)?;
        let dots = self.dot_entries(parent);
        let total = items.len() as u64 + 2;
        let entries = stream::iter(offset..total).map(move |i| {
            if i < 2 {
                let (ino, name) = dots[i as usize];
                return Ok(DirectoryEntry {
                    inode: ino,
                    kind: FileType::Directory,
                    name: name.into(),
                    offset: i as i64 + 1,
                });
            }
            self.dir_entry(parent, &items, (i - 2) as usize)
        });
        Ok(ReplyDirectory { entries })
    }

    async fn readdirplus<'a>(
        &'a self,
        _req: Request,
        parent: Inode,
        fh: u64,
        offset: u64,
        _lock_owner: u64,
    ) -> Result<ReplyDirectoryPlus<impl Stream<Item = Result<DirectoryEntryPlus>> + Send + 'a>>
    {
        let items = self.listing(parent, fh, offset)?;
        let dots = self.dot_entries(parent);
        let total = items.len() as u64 + 2;
        let entries = stream::iter(offset..total).filter_map(move |i| {
            let out = if i < 2 {
                let (ino, name) = dots[i as usize];
                self.do_getattr(ino, None).map(|a| {
                    Some(DirectoryEntryPlus {
                        nodeid: ino,
                        inode: ino,
                        generation: 0,
                        kind: FileType::Directory,
                        name: name.into(),
                        offset: i as i64 + 1,
                        attr: a.attr,
                        entry_ttl: Duration::ZERO,
                        attr_ttl: a.ttl,
                    })
                })
            } else {
                let item = &items[(i - 2) as usize];
                match self.lookup_entry(parent, &item.name) {
                    // Gone since the listing was made: skip it.
                    Ok(e) if e.nodeid == 0 => Ok(None),
                    Ok(e) => Ok(Some(DirectoryEntryPlus {
                        nodeid: e.nodeid,
                        inode: e.attr.ino,
                        generation: 0,
                        kind: e.attr.kind,
                        name: item.name.clone(),
                        offset: i as i64 + 1,
                        attr: e.attr,
                        entry_ttl: e.ttl,
                        attr_ttl: e.ttl,
                    })),
                    Err(e) if errno_is(e, libc::ENOENT) => Ok(None),
                    Err(e) => Err(e),
                }
            };
            futures::future::ready(out.transpose())
        });
        Ok(ReplyDirectoryPlus { entries })
    }

    async fn releasedir(&self, _req: Request, _inode: Inode, fh: u64, _flags: u32) -> Result<()> {
        self.dir_handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh);
        Ok(())
    }

    async fn fsyncdir(&self, _req: Request, inode: Inode, _fh: u64, datasync: bool) -> Result<()> {
        let stack = self.dir_stack(inode)?;
        match stack.first() {
            Some(top) if top.layer == 0 && self.has_upper => {
                sys::fsync(std::os::fd::AsRawFd::as_raw_fd(&top.fd), datasync).map_err(err)
            }
            _ => Ok(()),
        }
    }

    async fn access(&self, _req: Request, _inode: Inode, _mask: u32) -> Result<()> {
        // The kernel checks modes itself (default_permissions).
        Ok(())
    }

    async fn create(
        &self,
        req: Request,
        parent: Inode,
        name: &OsStr,
        mode: u32,
        flags: u32,
    ) -> Result<ReplyCreated> {
        let (entry, fd) = self.do_create(parent, name, mode, flags as i32, owner(&req))?;
        // A new set-ID file is served by us, to clear the bits on writes (see killpriv.rs).
        let may_pass = !super::killpriv::has_setid_bits(mode);
        let opened = self.open_reply(entry.nodeid, fd, may_pass)?;
        Ok(ReplyCreated {
            nodeid: entry.nodeid,
            ttl: entry.ttl,
            attr: entry.attr,
            generation: 0,
            fh: opened.fh,
            flags: opened.flags,
            backing_id: opened.backing_id,
        })
    }

    async fn interrupt(&self, _req: Request, _unique: u64) -> Result<()> {
        Ok(())
    }

    async fn fallocate(
        &self,
        _req: Request,
        _inode: Inode,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<()> {
        self.do_fallocate(fh, offset, length, mode)
    }

    async fn lseek(
        &self,
        _req: Request,
        _inode: Inode,
        fh: u64,
        offset: u64,
        whence: u32,
    ) -> Result<ReplyLSeek> {
        self.do_lseek(fh, offset, whence)
            .map(|offset| ReplyLSeek { offset })
    }
}
