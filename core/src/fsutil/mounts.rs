//! The mount table: which paths are mounted (for refcount recovery after a crash) and how to
//! take them down.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// One line of /proc/self/mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_point: PathBuf,
    pub fs_type: String,
    pub source: String,
}

/// Every mount of this process's mount namespace, in mount order.
pub fn mount_table() -> Result<Vec<MountInfo>> {
    let path = Path::new("/proc/self/mountinfo");
    let text = std::fs::read(path).ctx("read", path)?;
    Ok(parse_mountinfo(&text))
}

fn parse_mountinfo(text: &[u8]) -> Vec<MountInfo> {
    let mut out = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == b"-") else {
            continue;
        };
        if fields.len() < 5 || fields.len() < sep + 3 {
            continue;
        }
        out.push(MountInfo {
            mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
            fs_type: String::from_utf8_lossy(fields[sep + 1]).into_owned(),
            source: String::from_utf8_lossy(&unescape(fields[sep + 2])).into_owned(),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = (oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0');
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

/// Is `path` itself a mount point?
pub fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mount_table()?.iter().any(|m| m.mount_point == path))
}

/// Mount points at or below `root`, deepest first (the order to unmount them in).
pub fn mounts_under(root: &Path) -> Result<Vec<MountInfo>> {
    let mut found: Vec<MountInfo> = mount_table()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(root))
        .collect();
    found.reverse();
    Ok(found)
}

/// Unmounts `path`; with `detach`, lazily (MNT_DETACH) so a busy mount still goes away.
/// A path that is not mounted is not an error.
pub fn unmount(path: &Path, detach: bool) -> Result<()> {
    let flags = if detach {
        nix::mount::MntFlags::MNT_DETACH
    } else {
        nix::mount::MntFlags::empty()
    };
    match nix::mount::umount2(path, flags) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::io("unmount", path, e.into())),
    }
}

/// Unmounts everything at or below `root` (deepest first), lazily. Used at start-up to drop
/// mounts a crashed daemon left behind.
pub fn unmount_all_under(root: &Path) -> Result<usize> {
    let mounts = mounts_under(root)?;
    for m in &mounts {
        unmount(&m.mount_point, true)?;
    }
    Ok(mounts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_mount_points() {
        let line = b"36 35 98:0 /mnt1 /mnt\\040with\\040space rw,noatime master:1 - overlay overlay rw,lowerdir=/a\n";
        let m = parse_mountinfo(line);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt with space"));
        assert_eq!(m[0].fs_type, "overlay");
        assert_eq!(m[0].source, "overlay");
    }

    #[test]
    fn root_is_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
    }
}
