//! Safe wrappers over libbtrfsutil: create, snapshot, delete, inspect and list subvolumes.
//! Every function is blocking (ioctls; a snapshot waits for a transaction commit).

use std::ffi::{CStr, CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use strata_core::{Error, Result};

use crate::ffi;

/// The btrfs facts about one subvolume the driver uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubvolInfo {
    pub id: u64,
    pub uuid: [u8; 16],
    /// The uuid of the subvolume this one is a snapshot of; zero for a fresh subvolume.
    pub parent_uuid: [u8; 16],
    /// The transaction that created the subvolume.
    pub otransid: u64,
    /// When the subvolume was created.
    pub otime: (i64, u32),
    /// The generation of the subvolume's tree root as of the last transaction commit.
    pub generation: u64,
    pub read_only: bool,
}

const BTRFS_ROOT_SUBVOL_RDONLY: u64 = 1 << 0;

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", path.display())))
}

/// libbtrfsutil's message for an error code.
pub fn strerror(code: ffi::btrfs_util_error) -> String {
    // SAFETY: btrfs_util_strerror returns a static string or NULL for unknown codes.
    let msg = unsafe { ffi::btrfs_util_strerror(code) };
    if msg.is_null() {
        return format!("libbtrfsutil error {code}");
    }
    // SAFETY: non-null, NUL-terminated, static.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

/// Turns a libbtrfsutil failure into our error: the errno it left behind (EEXIST, ENOENT,
/// EDQUOT...) when there is one, so callers can act on it, with libbtrfsutil's words.
fn check(code: ffi::btrfs_util_error, op: &'static str, path: &Path) -> Result<()> {
    if code == ffi::BTRFS_UTIL_OK {
        return Ok(());
    }
    let os = std::io::Error::last_os_error();
    Err(match code {
        ffi::BTRFS_UTIL_ERROR_NOT_BTRFS => Error::unsupported(format!(
            "{op} {}: not on a btrfs filesystem",
            path.display()
        )),
        ffi::BTRFS_UTIL_ERROR_SUBVOLUME_NOT_FOUND | ffi::BTRFS_UTIL_ERROR_NOT_SUBVOLUME => {
            Error::not_found(format!("btrfs subvolume {}", path.display()))
        }
        _ => match os.raw_os_error() {
            Some(errno) if errno != 0 => Error::io(
                op,
                path,
                std::io::Error::new(os.kind(), format!("{} ({os})", strerror(code))),
            ),
            _ => Error::Other(format!("{op} {}: {}", path.display(), strerror(code))),
        },
    })
}

/// Makes libbtrfsutil's errno reading reliable: clear errno before each call.
fn clear_errno() {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() = 0 };
}

/// Creates an empty subvolume at `path` (whose parent directory must exist).
pub fn create_subvolume(path: &Path) -> Result<()> {
    let c = c_path(path)?;
    clear_errno();
    // SAFETY: valid C string; the optional out-parameters are NULL as the API allows.
    let code = unsafe {
        ffi::btrfs_util_create_subvolume(c.as_ptr(), 0, std::ptr::null_mut(), std::ptr::null_mut())
    };
    check(code, "create btrfs subvolume", path)
}

/// Snapshots the subvolume `source` at `dest`, read-only or writable. O(1): shares every
/// extent with the source.
pub fn create_snapshot(source: &Path, dest: &Path, read_only: bool) -> Result<()> {
    let (s, d) = (c_path(source)?, c_path(dest)?);
    let flags = if read_only {
        ffi::BTRFS_UTIL_CREATE_SNAPSHOT_READ_ONLY
    } else {
        0
    };
    clear_errno();
    // SAFETY: valid C strings; NULL optional out-parameters.
    let code = unsafe {
        ffi::btrfs_util_create_snapshot(
            s.as_ptr(),
            d.as_ptr(),
            flags,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    check(code, "snapshot btrfs subvolume", dest)
}

/// Deletes the subvolume at `path` and every subvolume nested inside it.
pub fn delete_subvolume_recursive(path: &Path) -> Result<()> {
    let c = c_path(path)?;
    clear_errno();
    // SAFETY: valid C string.
    let code = unsafe {
        ffi::btrfs_util_delete_subvolume(c.as_ptr(), ffi::BTRFS_UTIL_DELETE_SUBVOLUME_RECURSIVE)
    };
    check(code, "delete btrfs subvolume", path)
}

/// Is `path` the root of a subvolume? A path on another filesystem is not.
pub fn is_subvolume(path: &Path) -> Result<bool> {
    let c = c_path(path)?;
    clear_errno();
    // SAFETY: valid C string.
    let code = unsafe { ffi::btrfs_util_is_subvolume(c.as_ptr()) };
    match code {
        ffi::BTRFS_UTIL_OK => Ok(true),
        ffi::BTRFS_UTIL_ERROR_NOT_SUBVOLUME | ffi::BTRFS_UTIL_ERROR_NOT_BTRFS => Ok(false),
        _ => check(code, "inspect btrfs subvolume", path).map(|()| false),
    }
}

/// The id of the subvolume containing `path`.
pub fn subvolume_id(path: &Path) -> Result<u64> {
    let c = c_path(path)?;
    let mut id = 0u64;
    clear_errno();
    // SAFETY: valid C string and out-pointer.
    let code = unsafe { ffi::btrfs_util_subvolume_id(c.as_ptr(), &mut id) };
    check(code, "read btrfs subvolume id", path)?;
    Ok(id)
}

/// Facts about the subvolume rooted at `path`.
pub fn subvolume_info(path: &Path) -> Result<SubvolInfo> {
    let c = c_path(path)?;
    // SAFETY: a plain C struct of integers, valid when zeroed.
    let mut raw: ffi::btrfs_util_subvolume_info = unsafe { std::mem::zeroed() };
    clear_errno();
    // SAFETY: valid C string and out-pointer; id 0 means "the subvolume at path".
    let code = unsafe { ffi::btrfs_util_subvolume_info(c.as_ptr(), 0, &mut raw) };
    check(code, "read btrfs subvolume info", path)?;
    Ok(SubvolInfo {
        id: raw.id,
        uuid: raw.uuid,
        parent_uuid: raw.parent_uuid,
        otransid: raw.otransid,
        otime: (raw.otime.tv_sec, raw.otime.tv_nsec as u32),
        generation: raw.generation,
        read_only: raw.flags & BTRFS_ROOT_SUBVOL_RDONLY != 0,
    })
}

/// Makes the subvolume at `path` read-only or writable.
pub fn set_read_only(path: &Path, read_only: bool) -> Result<()> {
    let c = c_path(path)?;
    clear_errno();
    // SAFETY: valid C string.
    let code = unsafe { ffi::btrfs_util_set_subvolume_read_only(c.as_ptr(), read_only) };
    check(code, "set btrfs subvolume read-only flag", path)
}

/// Is the subvolume at `path` read-only?
pub fn is_read_only(path: &Path) -> Result<bool> {
    let c = c_path(path)?;
    let mut ro = false;
    clear_errno();
    // SAFETY: valid C string and out-pointer.
    let code = unsafe { ffi::btrfs_util_get_subvolume_read_only(c.as_ptr(), &mut ro) };
    check(code, "read btrfs subvolume read-only flag", path)?;
    Ok(ro)
}

/// Commits the filesystem's current transaction (and flushes delayed allocation), so that
/// qgroup numbers include everything written so far.
pub fn sync(path: &Path) -> Result<()> {
    let c = c_path(path)?;
    clear_errno();
    // SAFETY: valid C string.
    let code = unsafe { ffi::btrfs_util_sync(c.as_ptr()) };
    check(code, "sync btrfs filesystem", path)
}

/// Every subvolume beneath the subvolume containing `path` (for the driver's root: the whole
/// filesystem when it sits in the top-level subvolume), as paths relative to that subvolume,
/// with their ids. Used to prove that nothing leaked.
pub fn list_subvolumes(path: &Path) -> Result<Vec<(PathBuf, u64)>> {
    let c = c_path(path)?;
    let mut iter: *mut ffi::btrfs_util_subvolume_iterator = std::ptr::null_mut();
    clear_errno();
    // SAFETY: valid C string and out-pointer; top 0 means the subvolume containing path.
    let code = unsafe { ffi::btrfs_util_create_subvolume_iterator(c.as_ptr(), 0, 0, &mut iter) };
    check(code, "list btrfs subvolumes", path)?;
    struct Iter(*mut ffi::btrfs_util_subvolume_iterator);
    impl Drop for Iter {
        fn drop(&mut self) {
            // SAFETY: created by btrfs_util_create_subvolume_iterator, destroyed once.
            unsafe { ffi::btrfs_util_destroy_subvolume_iterator(self.0) }
        }
    }
    let iter = Iter(iter);
    let mut out = Vec::new();
    loop {
        let mut name: *mut std::ffi::c_char = std::ptr::null_mut();
        let mut id = 0u64;
        clear_errno();
        // SAFETY: live iterator; out-pointers valid. The returned path is malloc'ed: we free it.
        let code = unsafe { ffi::btrfs_util_subvolume_iterator_next(iter.0, &mut name, &mut id) };
        if code == ffi::BTRFS_UTIL_ERROR_STOP_ITERATION {
            break;
        }
        check(code, "list btrfs subvolumes", path)?;
        // SAFETY: on success `name` is a malloc'ed NUL-terminated string owned by us.
        let rel = unsafe { CStr::from_ptr(name) }.to_bytes().to_vec();
        // SAFETY: allocated by libbtrfsutil with malloc.
        unsafe { libc::free(name.cast()) };
        out.push((PathBuf::from(OsString::from_vec(rel)), id));
    }
    Ok(out)
}

/// The libbtrfsutil version actually loaded, read from the shared object's file name
/// (`libbtrfsutil.so.1.2.0`), since the library has no version call.
pub fn loaded_library_version() -> Option<String> {
    // SAFETY: dladdr only reads the address; Dl_info is plain data valid when zeroed.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = ffi::btrfs_util_strerror as *const std::ffi::c_void;
    // SAFETY: `addr` is a function in a loaded object; `info` is a valid out-pointer.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_bytes();
    let file = Path::new(std::ffi::OsStr::from_bytes(file));
    let real = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let name = real.file_name()?.to_string_lossy().into_owned();
    name.split_once(".so.").map(|(_, v)| v.to_string())
}

/// The libbtrfsutil header version this crate was built against.
pub const HEADER_VERSION: &str = env!("STRATA_BTRFSUTIL_HEADER_VERSION");
