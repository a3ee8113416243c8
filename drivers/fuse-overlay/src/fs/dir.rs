//! Merged directory listings: names of every layer of a directory's stack, uppermost first,
//! each name once, whited-out names hidden.

use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;

use super::table::DirStack;
use super::{sys, OverlayFs};

#[derive(Debug, Clone)]
pub struct DirItem {
    pub name: OsString,
    /// DT_* type.
    pub kind: u8,
    /// The uppermost layer holding the name.
    pub layer: u8,
}

impl OverlayFs {
    pub(super) fn merged_items(&self, stack: &DirStack) -> io::Result<Vec<DirItem>> {
        let mut items = Vec::new();
        let single = stack.len() == 1;
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for ld in stack.iter() {
            for e in sys::read_dir(ld.fd.as_raw_fd())? {
                if !single && !seen.insert(e.name.clone()) {
                    continue;
                }
                let mut kind = e.kind;
                if kind == libc::DT_CHR || kind == libc::DT_UNKNOWN {
                    let name = OsString::from_vec(e.name.clone());
                    let st = match sys::with_name(&name, |c| sys::fstatat(ld.fd.as_raw_fd(), c)) {
                        Ok(st) => st,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                        Err(e) => return Err(e),
                    };
                    if sys::is_whiteout(&st) {
                        continue;
                    }
                    kind = dt_of(st.st_mode);
                }
                items.push(DirItem {
                    name: OsString::from_vec(e.name),
                    kind,
                    layer: ld.layer,
                });
            }
        }
        Ok(items)
    }

    /// Whether a merged directory shows no entries (rmdir's condition).
    pub(super) fn merged_is_empty(&self, stack: &DirStack) -> io::Result<bool> {
        Ok(self.merged_items(stack)?.is_empty())
    }
}

pub(super) fn dt_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_REG,
    }
}

pub(super) fn file_type_of_dt(dt: u8) -> fuse3::FileType {
    use fuse3::FileType;
    match dt {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}
