//! Writes a tree inside a container's root as a tar (for `docker cp` out and `docker export`),
//! walking it by fd: each entry is reached from its parent directory's fd by one plain name,
//! without following symlinks, so nothing outside the root can be read. Regular files are
//! opened O_NOFOLLOW|O_NONBLOCK and checked to still be regular (a fifo never hangs the
//! copy); fifos and devices go in as header-only entries, sockets are skipped (as Docker
//! does), hard links inside the tree become link entries. Extended attributes are not
//! carried.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use tar::{EntryType, Header};

use super::fsops;

/// What to put in the tar: one named entry of a directory, or a directory's contents only.
pub(crate) enum Top {
    /// `name` inside `parent`, entered in the tar as `tar_name` (which may differ: Docker
    /// names the entry after the path the client asked for).
    Entry {
        parent: OwnedFd,
        name: CString,
        tar_name: String,
    },
    /// An opened directory entered as `tar_name` with its contents; an empty `tar_name` puts
    /// only the contents at the top of the tar (`docker export`).
    Dir { dir: OwnedFd, tar_name: String },
}

/// Writes `top` as a tar into `out` and finishes the archive.
pub(crate) fn write_tree<W: Write>(out: W, top: Top) -> io::Result<()> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut w = TreeWriter {
        b,
        links: HashMap::new(),
    };
    match top {
        Top::Entry {
            parent,
            name,
            tar_name,
        } => w.entry(parent.as_fd(), &name, tar_name)?,
        Top::Dir { dir, tar_name } if tar_name.is_empty() => w.contents(dir.as_fd(), "")?,
        Top::Dir { dir, tar_name } => {
            let mut h = header_for(&fsops::fstat(dir.as_fd())?);
            h.set_entry_type(EntryType::Directory);
            let dir_name = format!("{}/", tar_name.trim_end_matches('/'));
            w.b.append_data(&mut h, &dir_name, io::empty())?;
            w.contents(dir.as_fd(), &dir_name)?;
        }
    }
    w.b.into_inner()?.flush()
}

struct TreeWriter<W: Write> {
    b: tar::Builder<W>,
    /// (dev, inode) of regular files with several links → the tar name given first.
    links: HashMap<(u64, u64), String>,
}

impl<W: Write> TreeWriter<W> {
    fn contents(&mut self, dir: BorrowedFd<'_>, prefix: &str) -> io::Result<()> {
        for name in fsops::list_dir(dir)? {
            let child = format!("{prefix}{}", String::from_utf8_lossy(name.to_bytes()));
            self.entry(dir, &name, child)?;
        }
        Ok(())
    }

    fn entry(&mut self, parent: BorrowedFd<'_>, name: &CStr, tar_name: String) -> io::Result<()> {
        let st = match fsops::lstat_at(parent, name) {
            Ok(st) => st,
            // Gone since the directory was listed (a running container changes its files).
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut h = header_for(&st);
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                h.set_entry_type(EntryType::Directory);
                let dir_name = format!("{}/", tar_name.trim_end_matches('/'));
                self.b.append_data(&mut h, &dir_name, io::empty())?;
                let dir = fsops::open_dir_at(parent, name)?;
                self.contents(dir.as_fd(), &dir_name)?;
            }
            libc::S_IFREG => self.regular(parent, name, &st, h, tar_name)?,
            libc::S_IFLNK => {
                let target = fsops::read_link_at(parent, name)?;
                h.set_entry_type(EntryType::Symlink);
                self.symlink(h, &tar_name, target.as_bytes())?;
            }
            libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
                h.set_entry_type(match st.st_mode & libc::S_IFMT {
                    libc::S_IFIFO => EntryType::Fifo,
                    libc::S_IFCHR => EntryType::Char,
                    _ => EntryType::Block,
                });
                h.set_device_major(libc::major(st.st_rdev))?;
                h.set_device_minor(libc::minor(st.st_rdev))?;
                self.b.append_data(&mut h, &tar_name, io::empty())?;
            }
            _ => {} // sockets
        }
        Ok(())
    }

    fn regular(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        st: &libc::stat,
        mut h: Header,
        tar_name: String,
    ) -> io::Result<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                let first = first.clone();
                return self.b.append_link(&mut h, &tar_name, first);
            }
        }
        let file = match fsops::open_regular_at(parent, name) {
            Ok(f) => f,
            // Replaced by something else since the lstat: leave it out.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(()),
            Err(e) => return Err(e),
        };
        let size = st.st_size as u64;
        h.set_entry_type(EntryType::Regular);
        h.set_size(size);
        // Exactly `size` bytes whatever the file does meanwhile: cut if it grew, zero-padded
        // if it shrank, so the archive stays well-formed.
        let data = file.take(size).chain(io::repeat(0)).take(size);
        self.b.append_data(&mut h, &tar_name, data)?;
        if st.st_nlink > 1 {
            self.links.insert(key, tar_name);
        }
        Ok(())
    }
}

impl<W: Write> TreeWriter<W> {
    /// A symlink entry with its target byte for byte (the tar crate's path-based setter
    /// would rewrite a target such as `/`); long targets take the GNU long-link record.
    fn symlink(&mut self, mut h: Header, tar_name: &str, target: &[u8]) -> io::Result<()> {
        if target.len() <= 100 {
            h.set_link_name_literal(target)?;
            self.b.append_data(&mut h, tar_name, io::empty())
        } else {
            let target = std::path::Path::new(std::ffi::OsStr::from_bytes(target));
            self.b.append_link(&mut h, tar_name, target)
        }
    }
}

fn header_for(st: &libc::stat) -> Header {
    let mut h = Header::new_gnu();
    h.set_mode(st.st_mode & 0o7777);
    h.set_uid(st.st_uid as u64);
    h.set_gid(st.st_gid as u64);
    h.set_mtime(st.st_mtime.max(0) as u64);
    h.set_size(0);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(tar: &[u8]) -> Vec<(String, EntryType)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    /// Guards the cp/export tar writer: symlinks are entries (never followed), fifos are
    /// header-only (reading one would hang), hard links are link entries, and the top entry
    /// takes the name it was given.
    #[test]
    fn writes_tree_without_following_or_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("f"), "hello").unwrap();
        std::fs::hard_link(d.join("f"), d.join("g")).unwrap();
        symlink("/etc/shadow", d.join("l")).unwrap();
        nix::unistd::mkfifo(
            &d.join("p"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let parent = std::fs::File::open(tmp.path()).unwrap();
        let mut out = Vec::new();
        let top = Top::Entry {
            parent: parent.into(),
            name: CString::new("d").unwrap(),
            tar_name: "renamed".into(),
        };
        write_tree(&mut out, top).unwrap();
        assert_eq!(
            names(&out),
            vec![
                ("renamed/".into(), EntryType::Directory),
                ("renamed/f".into(), EntryType::Regular),
                ("renamed/g".into(), EntryType::Link),
                ("renamed/l".into(), EntryType::Symlink),
                ("renamed/p".into(), EntryType::Fifo),
            ]
        );
    }
}
