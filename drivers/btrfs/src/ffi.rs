//! A thin hand-written binding to the parts of libbtrfsutil (btrfs-progs' C library, header
//! `/usr/include/btrfsutil.h`, version 1.2) this driver uses. Only declarations: the safe
//! wrappers live in `subvol.rs`.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

/// `enum btrfs_util_error`; 0 is success, 1 is the end of an iteration.
pub type btrfs_util_error = c_int;
pub const BTRFS_UTIL_OK: btrfs_util_error = 0;
pub const BTRFS_UTIL_ERROR_STOP_ITERATION: btrfs_util_error = 1;
pub const BTRFS_UTIL_ERROR_NOT_BTRFS: btrfs_util_error = 4;
pub const BTRFS_UTIL_ERROR_NOT_SUBVOLUME: btrfs_util_error = 5;
pub const BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND: btrfs_util_error = 6;

pub const BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY: c_int = 1 << 1;
pub const BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE: c_int = 1 << 0;

/// `struct btrfs_util_subvolume_info`, field for field.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct btrfs_util_subvolume_info {
    pub id: u64,
    pub parent_id: u64,
    pub dir_id: u64,
    pub flags: u64,
    pub uuid: [u8; 16],
    pub parent_uuid: [u8; 16],
    pub received_uuid: [u8; 16],
    pub generation: u64,
    pub ctransid: u64,
    pub otransid: u64,
    pub stransid: u64,
    pub rtransid: u64,
    pub ctime: libc::timespec,
    pub otime: libc::timespec,
    pub stime: libc::timespec,
    pub rtime: libc::timespec,
}

/// Opaque `struct btrfs_util_subvolume_iterator`.
#[repr(C)]
pub struct btrfs_util_subvolume_iterator {
    _private: [u8; 0],
}

extern "C" {
    pub fn btrfs_util_strerror(err: btrfs_util_error) -> *const c_char;
    pub fn btrfs_util_sync(path: *const c_char) -> btrfs_util_error;
    pub fn btrfs_util_is_subvolume(path: *const c_char) -> btrfs_util_error;
    pub fn btrfs_util_subvolume_id(path: *const c_char, id_ret: *mut u64) -> btrfs_util_error;
    pub fn btrfs_util_subvolume_info(
        path: *const c_char,
        id: u64,
        subvol: *mut btrfs_util_subvolume_info,
    ) -> btrfs_util_error;
    pub fn btrfs_util_get_subvolume_read_only(
        path: *const c_char,
        ret: *mut bool,
    ) -> btrfs_util_error;
    pub fn btrfs_util_set_subvolume_read_only(
        path: *const c_char,
        read_only: bool,
    ) -> btrfs_util_error;
    pub fn btrfs_util_create_subvolume(
        path: *const c_char,
        flags: c_int,
        unused: *mut u64,
        qgroup_inherit: *mut c_void,
    ) -> btrfs_util_error;
    pub fn btrfs_util_create_snapshot(
        source: *const c_char,
        path: *const c_char,
        flags: c_int,
        unused: *mut u64,
        qgroup_inherit: *mut c_void,
    ) -> btrfs_util_error;
    pub fn btrfs_util_delete_subvolume(path: *const c_char, flags: c_int) -> btrfs_util_error;
    pub fn btrfs_util_create_subvolume_iterator(
        path: *const c_char,
        top: u64,
        flags: c_int,
        ret: *mut *mut btrfs_util_subvolume_iterator,
    ) -> btrfs_util_error;
    pub fn btrfs_util_destroy_subvolume_iterator(iter: *mut btrfs_util_subvolume_iterator);
    pub fn btrfs_util_subvolume_iterator_next(
        iter: *mut btrfs_util_subvolume_iterator,
        path_ret: *mut *mut c_char,
        id_ret: *mut u64,
    ) -> btrfs_util_error;
}
