//! btrfs quota groups through the kernel's ioctls (libbtrfsutil has no qgroup calls):
//! quota status and exclusive bytes from the quota tree (BTRFS_IOC_TREE_SEARCH), enabling
//! quotas (BTRFS_IOC_QUOTA_CTL), limits (BTRFS_IOC_QGROUP_LIMIT), destroying a subvolume's
//! qgroup (BTRFS_IOC_QGROUP_CREATE with create=0), and counting the inodes a snapshot changed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use strata_core::{Error, IoContext, Result};

const BTRFS_IOCTL_MAGIC: u8 = 0x94;
const BTRFS_QUOTA_TREE_OBJECTID: u64 = 8;
const BTRFS_INODE_ITEM_KEY: u32 = 1;
const BTRFS_QGROUP_STATUS_KEY: u32 = 240;
const BTRFS_QGROUP_INFO_KEY: u32 = 242;
const BTRFS_QGROUP_LIMIT_KEY: u32 = 244;
const BTRFS_QGROUP_STATUS_FLAG_ON: u64 = 1 << 0;
const BTRFS_QGROUP_STATUS_FLAG_RESCAN: u64 = 1 << 1;
const BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT: u64 = 1 << 2;
const BTRFS_QUOTA_CTL_ENABLE: u64 = 1;
const BTRFS_QGROUP_LIMIT_MAX_EXCL: u64 = 1 << 1;
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: u64,
    unused2: u64,
    unused3: u64,
    unused4: u64,
}

const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `struct btrfs_ioctl_search_args` (v1: a 4 KiB buffer), for one-item probes.
#[repr(C)]
struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

#[repr(C)]
struct QuotaCtlArgs {
    cmd: u64,
    status: u64,
}

#[repr(C)]
struct QgroupCreateArgs {
    create: u64,
    qgroupid: u64,
}

#[repr(C)]
struct QgroupLimit {
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    lim: QgroupLimit,
}

nix::ioctl_readwrite!(ioc_tree_search, BTRFS_IOCTL_MAGIC, 17, SearchArgs);
nix::ioctl_readwrite!(ioc_quota_ctl, BTRFS_IOCTL_MAGIC, 40, QuotaCtlArgs);
nix::ioctl_write_ptr!(ioc_qgroup_create, BTRFS_IOCTL_MAGIC, 42, QgroupCreateArgs);
nix::ioctl_read!(ioc_qgroup_limit, BTRFS_IOCTL_MAGIC, 43, QgroupLimitArgs);
nix::ioctl_none!(ioc_quota_rescan_wait, BTRFS_IOCTL_MAGIC, 46);

/// One item found by a tree search: its key and raw little-endian body.
struct Item<'a> {
    objectid: u64,
    offset: u64,
    item_type: u32,
    data: &'a [u8],
}

fn open_dir(path: &Path) -> Result<File> {
    File::open(path).ctx("open", path)
}

/// The v2 search's result buffer: big enough that walking a layer's changed leaves takes a
/// few ioctls, not thousands (the v1 buffer holds about 4 KiB of items).
const SEARCH_V2_BUF: usize = 1 << 20;
const SEARCH_KEY_BYTES: usize = std::mem::size_of::<SearchKey>();
/// `struct btrfs_ioctl_search_args_v2`: the key, `buf_size`, then the buffer.
const SEARCH_V2_HEADER: usize = SEARCH_KEY_BYTES + 8;

/// Every item of `tree_id` between the two keys (objectid, type, offset), in key order.
/// `min_transid` skips tree blocks older than that transaction: what makes "what changed since
/// the snapshot" cost O(changes). Returns Ok(false) when the tree does not exist (ENOENT:
/// quotas never enabled).
fn search(
    dir: &File,
    path: &Path,
    tree_id: u64,
    (min_obj, min_type, min_off): (u64, u32, u64),
    (max_obj, max_type, max_off): (u64, u32, u64),
    min_transid: u64,
    mut each: impl FnMut(Item<'_>),
) -> Result<bool> {
    let mut key = SearchKey {
        tree_id,
        min_objectid: min_obj,
        max_objectid: max_obj,
        min_offset: min_off,
        max_offset: max_off,
        min_transid,
        max_transid: u64::MAX,
        min_type,
        max_type,
        ..SearchKey::default()
    };
    // u64 words keep the key and buf_size aligned.
    let mut args = vec![0u64; (SEARCH_V2_HEADER + SEARCH_V2_BUF) / 8];
    let request = nix::request_code_readwrite!(BTRFS_IOCTL_MAGIC, 17, SEARCH_V2_HEADER);
    loop {
        key.nr_items = u32::MAX;
        // SAFETY: SearchKey is plain repr(C) data of SEARCH_KEY_BYTES bytes, and `args` is at
        // least that long.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (&key as *const SearchKey).cast::<u8>(),
                args.as_mut_ptr().cast::<u8>(),
                SEARCH_KEY_BYTES,
            );
        }
        args[SEARCH_KEY_BYTES / 8] = SEARCH_V2_BUF as u64;
        // SAFETY: `args` is a btrfs_ioctl_search_args_v2 whose buffer is SEARCH_V2_BUF bytes.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), request as _, args.as_mut_ptr()) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOENT) {
                return Ok(false);
            }
            return Err(Error::io("search btrfs tree", path, e));
        }
        // SAFETY: the kernel wrote back the key (nr_items = items returned) at the start.
        unsafe {
            std::ptr::copy_nonoverlapping(
                args.as_ptr().cast::<u8>(),
                (&mut key as *mut SearchKey).cast::<u8>(),
                SEARCH_KEY_BYTES,
            );
        }
        let n = key.nr_items;
        if n == 0 {
            return Ok(true);
        }
        // SAFETY: the buffer part of `args`, SEARCH_V2_BUF bytes after the header.
        let buf = unsafe {
            std::slice::from_raw_parts(
                args.as_ptr().cast::<u8>().add(SEARCH_V2_HEADER),
                SEARCH_V2_BUF,
            )
        };
        let mut pos = 0usize;
        let mut last = (0u64, 0u32, 0u64);
        for _ in 0..n {
            let h = &buf[pos..pos + 32];
            let objectid = le64(h, 8);
            let offset = le64(h, 16);
            let item_type = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
            let len = u32::from_le_bytes([h[28], h[29], h[30], h[31]]) as usize;
            pos += 32;
            let data = &buf[pos..pos + len];
            pos += len;
            last = (objectid, item_type, offset);
            each(Item {
                objectid,
                offset,
                item_type,
                data,
            });
        }
        // Continue just after the last key returned (offset, then type, then objectid).
        let (obj, ty, off) = last;
        if off < u64::MAX {
            (key.min_objectid, key.min_type, key.min_offset) = (obj, ty, off + 1);
        } else if ty < u32::from(u8::MAX) {
            (key.min_objectid, key.min_type, key.min_offset) = (obj, ty + 1, 0);
        } else if obj < u64::MAX {
            (key.min_objectid, key.min_type, key.min_offset) = (obj + 1, 0, 0);
        } else {
            return Ok(true);
        }
        if (key.min_objectid, key.min_type, key.min_offset) > (max_obj, max_type, max_off) {
            return Ok(true);
        }
    }
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The filesystem's quota state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaStatus {
    pub enabled: bool,
    /// Numbers are exact: no rescan running and not marked inconsistent.
    pub consistent: bool,
}

/// Reads the quota status item of the filesystem holding `path`.
pub fn quota_status(path: &Path) -> Result<QuotaStatus> {
    let dir = open_dir(path)?;
    let mut flags = None;
    search(
        &dir,
        path,
        BTRFS_QUOTA_TREE_OBJECTID,
        (0, BTRFS_QGROUP_STATUS_KEY, 0),
        (0, BTRFS_QGROUP_STATUS_KEY, u64::MAX),
        0,
        |item| {
            if item.item_type == BTRFS_QGROUP_STATUS_KEY && item.data.len() >= 24 {
                flags = Some(le64(item.data, 16));
            }
        },
    )?;
    Ok(match flags {
        Some(f) => QuotaStatus {
            enabled: f & BTRFS_QGROUP_STATUS_FLAG_ON != 0,
            consistent: f
                & (BTRFS_QGROUP_STATUS_FLAG_RESCAN | BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT)
                == 0,
        },
        None => QuotaStatus {
            enabled: false,
            consistent: false,
        },
    })
}

/// Enables quotas on the filesystem holding `path` and waits for the initial rescan, so the
/// numbers are exact when this returns.
pub fn enable_quota(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    let mut args = QuotaCtlArgs {
        cmd: BTRFS_QUOTA_CTL_ENABLE,
        status: 0,
    };
    // SAFETY: `args` has the kernel's btrfs_ioctl_quota_ctl_args layout.
    unsafe { ioc_quota_ctl(dir.as_raw_fd(), &mut args) }.ctx("enable btrfs quota", path)?;
    wait_rescan(path)
}

/// Waits for a running quota rescan to finish (returns at once when none runs).
pub fn wait_rescan(path: &Path) -> Result<()> {
    let dir = open_dir(path)?;
    // SAFETY: an argument-less ioctl on a directory of the filesystem.
    match unsafe { ioc_quota_rescan_wait(dir.as_raw_fd()) } {
        Ok(_) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
        Err(e) => Err(Error::io("wait for btrfs quota rescan", path, e.into())),
    }
}

/// Limits the exclusive bytes of subvolume `subvol_id` (qgroup 0/id) to `bytes`. Exclusive,
/// not referenced: the limit caps what the layer itself writes, whatever its parent holds.
pub fn set_exclusive_limit(path: &Path, subvol_id: u64, bytes: u64) -> Result<()> {
    let dir = open_dir(path)?;
    let mut args = QgroupLimitArgs {
        qgroupid: subvol_id,
        lim: QgroupLimit {
            flags: BTRFS_QGROUP_LIMIT_MAX_EXCL,
            max_rfer: 0,
            max_excl: bytes,
            rsv_rfer: 0,
            rsv_excl: 0,
        },
    };
    // SAFETY: `args` has the kernel's btrfs_ioctl_qgroup_limit_args layout; the kernel reads it.
    unsafe { ioc_qgroup_limit(dir.as_raw_fd(), &mut args) }.ctx("set btrfs qgroup limit", path)?;
    Ok(())
}

/// The exclusive-bytes limit of subvolume `subvol_id`, if one is set.
pub fn exclusive_limit(path: &Path, subvol_id: u64) -> Result<Option<u64>> {
    let dir = open_dir(path)?;
    let mut limit = None;
    search(
        &dir,
        path,
        BTRFS_QUOTA_TREE_OBJECTID,
        (0, BTRFS_QGROUP_LIMIT_KEY, subvol_id),
        (0, BTRFS_QGROUP_LIMIT_KEY, subvol_id),
        0,
        |item| {
            if item.item_type == BTRFS_QGROUP_LIMIT_KEY
                && item.offset == subvol_id
                && item.data.len() >= 24
                && le64(item.data, 0) & BTRFS_QGROUP_LIMIT_MAX_EXCL != 0
            {
                limit = Some(le64(item.data, 16));
            }
        },
    )?;
    Ok(limit)
}

/// Referenced and exclusive bytes of subvolume `subvol_id`'s qgroup, as of the last
/// transaction commit; None if it has no qgroup.
pub fn qgroup_bytes(path: &Path, subvol_id: u64) -> Result<Option<(u64, u64)>> {
    let dir = open_dir(path)?;
    let mut found = None;
    search(
        &dir,
        path,
        BTRFS_QUOTA_TREE_OBJECTID,
        (0, BTRFS_QGROUP_INFO_KEY, subvol_id),
        (0, BTRFS_QGROUP_INFO_KEY, subvol_id),
        0,
        |item| {
            if item.item_type == BTRFS_QGROUP_INFO_KEY
                && item.offset == subvol_id
                && item.data.len() >= 40
            {
                found = Some((le64(item.data, 8), le64(item.data, 24)));
            }
        },
    )?;
    Ok(found)
}

/// What became of a qgroup asked to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// Destroyed now, or already gone (recent kernels remove it themselves once the deleted
    /// subvolume has been cleaned).
    Gone,
    /// The kernel still holds the deleted subvolume (its cleaner has not dropped it yet): try
    /// again later.
    Busy,
}

/// Destroys the qgroup of a deleted subvolume (quotas off: nothing to do).
pub fn destroy_qgroup(path: &Path, subvol_id: u64) -> Result<Destroyed> {
    let dir = open_dir(path)?;
    let args = QgroupCreateArgs {
        create: 0,
        qgroupid: subvol_id,
    };
    // SAFETY: `args` has the kernel's btrfs_ioctl_qgroup_create_args layout.
    match unsafe { ioc_qgroup_create(dir.as_raw_fd(), &args) } {
        Ok(_) | Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTCONN) => {
            Ok(Destroyed::Gone)
        }
        Err(nix::errno::Errno::EBUSY) => Ok(Destroyed::Busy),
        Err(e) => Err(Error::io("destroy btrfs qgroup", path, e.into())),
    }
}

/// Whether subvolume `subvol_id` still has a qgroup.
pub fn has_qgroup(path: &Path, subvol_id: u64) -> Result<bool> {
    Ok(qgroup_bytes(path, subvol_id)?.is_some())
}

/// Inodes of subvolume `subvol_id` created or changed after transaction `since` and time
/// `since_time` (the snapshot's creation; `since` 0 counts them all), its root directory only
/// if `with_root`. Tree blocks untouched since then are skipped, so the cost follows the
/// layer's own changes, not its parent's size. The ctime test leaves out inodes whose item was
/// rewritten only for an atime update (reading a file is no change).
pub fn inodes_changed_since(
    path: &Path,
    subvol_id: u64,
    since: u64,
    since_time: (i64, u32),
    with_root: bool,
) -> Result<u64> {
    let first = if with_root {
        BTRFS_FIRST_FREE_OBJECTID
    } else {
        BTRFS_FIRST_FREE_OBJECTID + 1
    };
    let dir = open_dir(path)?;
    let mut count = 0u64;
    search(
        &dir,
        path,
        subvol_id,
        (first, BTRFS_INODE_ITEM_KEY, 0),
        (u64::MAX, BTRFS_INODE_ITEM_KEY, u64::MAX),
        if since == 0 {
            0
        } else {
            since.saturating_add(1)
        },
        |item| {
            if item.item_type != BTRFS_INODE_ITEM_KEY
                || item.objectid < first
                || item.data.len() < INODE_ITEM_SIZE
            {
                return;
            }
            if since == 0 {
                count += 1;
                return;
            }
            // btrfs_inode_item: transid (last change) at 8, ctime (le64 s, le32 ns) at 124.
            let transid = le64(item.data, 8);
            let ctime = (
                le64(item.data, INODE_CTIME) as i64,
                u32::from_le_bytes([
                    item.data[INODE_CTIME + 8],
                    item.data[INODE_CTIME + 9],
                    item.data[INODE_CTIME + 10],
                    item.data[INODE_CTIME + 11],
                ]),
            );
            if transid > since && ctime >= since_time {
                count += 1;
            }
        },
    )?;
    Ok(count)
}

const INODE_ITEM_SIZE: usize = 160;
const INODE_CTIME: usize = 124;

/// Whether the tree of subvolume `subvol_id` holds blocks newer than `committed` (its root's
/// generation at the last commit): changes not yet committed, which qgroup numbers lack.
pub fn has_uncommitted_changes(path: &Path, subvol_id: u64, committed: u64) -> Result<bool> {
    let dir = open_dir(path)?;
    let mut args = SearchArgs {
        key: SearchKey {
            tree_id: subvol_id,
            max_objectid: u64::MAX,
            max_offset: u64::MAX,
            min_transid: committed.saturating_add(1),
            max_transid: u64::MAX,
            max_type: u32::MAX,
            nr_items: 1,
            ..SearchKey::default()
        },
        buf: [0; SEARCH_BUF],
    };
    // SAFETY: `args` is the kernel's btrfs_ioctl_search_args layout (4096 bytes).
    unsafe { ioc_tree_search(dir.as_raw_fd(), &mut args) }.ctx("search btrfs tree", path)?;
    Ok(args.key.nr_items > 0)
}
