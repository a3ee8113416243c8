//! XFS project quotas for the `size=` option, as moby's `quota` package: every quota'd layer
//! directory gets its own project id (inherited by everything created below it) and a hard
//! block limit set with quotactl(Q_XSETQLIM).

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use strata_core::{Error, IoContext, Result};

const FS_XFLAG_PROJINHERIT: u32 = 0x0000_0200;
// _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct fsxattr).
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const Q_XSETQLIM: i32 = (b'X' as i32) << 8 | 4;
const Q_XGETQUOTA: i32 = (b'X' as i32) << 8 | 3;
const PRJQUOTA: i32 = 2;
const FS_DQUOT_VERSION: i8 = 1;
const FS_PROJ_QUOTA: i8 = 2;
const FS_DQ_BSOFT: u16 = 1 << 2;
const FS_DQ_BHARD: u16 = 1 << 3;
/// The block device node quotactl is pointed at, kept in the driver root (moby's name).
const DEVICE_NODE: &str = "backingFsBlockDev";

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

#[repr(C)]
#[derive(Default)]
struct FsDiskQuota {
    version: i8,
    flags: i8,
    fieldmask: u16,
    id: u32,
    blk_hardlimit: u64,
    blk_softlimit: u64,
    ino_hardlimit: u64,
    ino_softlimit: u64,
    bcount: u64,
    icount: u64,
    itimer: i32,
    btimer: i32,
    iwarns: u16,
    bwarns: u16,
    itimer_hi: i8,
    btimer_hi: i8,
    rtbtimer_hi: i8,
    padding2: i8,
    rtb_hardlimit: u64,
    rtb_softlimit: u64,
    rtbcount: u64,
    rtbtimer: i32,
    rtbwarns: u16,
    padding3: i16,
    padding4: [u8; 8],
}

fn qcmd(cmd: i32, kind: i32) -> i32 {
    (cmd << 8) | (kind & 0xff)
}

/// Project quota control over one driver root on XFS.
#[derive(Debug)]
pub struct QuotaControl {
    device: CString,
    next_project: Mutex<u32>,
}

impl QuotaControl {
    /// Succeeds only on XFS mounted with project quota accounting and enforcement
    /// (`-o pquota` / `prjquota`). `layer_dirs` are the existing layers, whose project ids
    /// must not be reused.
    pub fn new(root: &Path, backing_fs: &str, layer_dirs: &[PathBuf]) -> Result<Self> {
        if backing_fs != "xfs" {
            return Err(not_supported(root, backing_fs));
        }
        let device = make_device_node(root)?;
        let root_project = project_id(root)?;
        let control = Self {
            device,
            next_project: Mutex::new(root_project + 1),
        };
        // Setting a zero limit on an unused id is how moby tests that quotas are enforced.
        control
            .set_limit(root_project + 1, 0)
            .map_err(|_| not_supported(root, "xfs without the pquota mount option"))?;
        let mut highest = root_project;
        for dir in layer_dirs {
            highest = highest.max(project_id(dir).unwrap_or(0));
        }
        *control.lock_next() = highest + 1;
        Ok(control)
    }

    fn lock_next(&self) -> std::sync::MutexGuard<'_, u32> {
        self.next_project.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives `dir` a fresh project id, inherited by what is created below it, limited to
    /// `bytes`.
    pub fn apply(&self, dir: &Path, bytes: u64) -> Result<()> {
        let project = {
            let mut next = self.lock_next();
            let p = *next;
            *next += 1;
            p
        };
        set_project_id(dir, project)?;
        self.set_limit(project, bytes)
            .map_err(|e| Error::Other(format!("set quota of {}: {e}", dir.display())))
    }

    fn set_limit(&self, project: u32, bytes: u64) -> std::io::Result<()> {
        let blocks = bytes.div_ceil(512);
        let mut q = FsDiskQuota {
            version: FS_DQUOT_VERSION,
            flags: FS_PROJ_QUOTA,
            fieldmask: FS_DQ_BSOFT | FS_DQ_BHARD,
            id: project,
            blk_hardlimit: blocks,
            blk_softlimit: blocks,
            ..Default::default()
        };
        // SAFETY: the device path is NUL-terminated and q is a properly laid out struct.
        let rc = unsafe {
            libc::quotactl(
                qcmd(Q_XSETQLIM, PRJQUOTA),
                self.device.as_ptr(),
                project as i32,
                (&mut q as *mut FsDiskQuota).cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The hard limit in bytes currently set for `dir`'s project.
    pub fn limit_of(&self, dir: &Path) -> Result<u64> {
        let project = project_id(dir)?;
        let mut q = FsDiskQuota::default();
        // SAFETY: as in set_limit.
        let rc = unsafe {
            libc::quotactl(
                qcmd(Q_XGETQUOTA, PRJQUOTA),
                self.device.as_ptr(),
                project as i32,
                (&mut q as *mut FsDiskQuota).cast(),
            )
        };
        if rc != 0 {
            return Err(Error::io(
                "get quota of",
                dir,
                std::io::Error::last_os_error(),
            ));
        }
        Ok(q.blk_hardlimit * 512)
    }
}

fn not_supported(root: &Path, what: &str) -> Error {
    Error::unsupported(format!(
        "the size= storage option needs the overlay2 root on xfs mounted with the pquota \
         (project quota) option, and {} is on {what}",
        root.display()
    ))
}

/// A block device node for the filesystem holding `root`, for quotactl.
fn make_device_node(root: &Path) -> Result<CString> {
    let dev = std::fs::metadata(root).ctx("stat", root)?.dev();
    let node = root.join(DEVICE_NODE);
    let _ = std::fs::remove_file(&node);
    nix::sys::stat::mknod(
        &node,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        dev,
    )
    .ctx("mknod", &node)?;
    CString::new(node.as_os_str().as_bytes()).map_err(|_| Error::invalid("NUL in root path"))
}

fn fsxattr(dir: &Path) -> Result<(std::fs::File, FsXattr)> {
    let f = std::fs::File::open(dir).ctx("open", dir)?;
    let mut x = FsXattr::default();
    // SAFETY: fd is open; x has the kernel's struct fsxattr layout.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) };
    if rc != 0 {
        return Err(Error::io(
            "FS_IOC_FSGETXATTR",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    Ok((f, x))
}

fn project_id(dir: &Path) -> Result<u32> {
    Ok(fsxattr(dir)?.1.projid)
}

fn set_project_id(dir: &Path, project: u32) -> Result<()> {
    let (f, mut x) = fsxattr(dir)?;
    x.projid = project;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: as in fsxattr.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSSETXATTR, &x as *const FsXattr) };
    if rc != 0 {
        return Err(Error::io(
            "FS_IOC_FSSETXATTR",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_match_the_kernel() {
        assert_eq!(std::mem::size_of::<FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<FsDiskQuota>(), 112);
    }

    #[test]
    fn other_filesystems_are_refused_with_the_reason() {
        let t = tempfile::tempdir().unwrap();
        let err = QuotaControl::new(t.path(), "extfs", &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("xfs") && text.contains("pquota"), "{text}");
    }
}
