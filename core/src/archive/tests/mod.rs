//! End-to-end tests of the archive: diff, apply, round trips, whiteouts and hostile tars.
//! They run as root (chown, mknod, trusted.* xattrs). This file holds the shared helpers.

mod fuzz;
mod hostile;
mod interop;
mod ownership;
mod round_trip;
mod whiteouts;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub(super) use super::changes::carried_xattrs;
pub(super) use super::fsat::{self, cname};
pub(super) use super::header::{self, kind, EntryMeta};
pub(super) use super::*;
pub(super) use crate::error::Error;
pub(super) use crate::layer::ChangeKind;

pub(super) fn opts(w: WhiteoutMode) -> ApplyOptions {
    ApplyOptions { whiteouts: w }
}

pub(super) fn c(s: &[u8]) -> CString {
    cname(s).unwrap()
}

pub(super) fn set_times(path: &Path, secs: i64, nanos: u32) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos as _,
        },
        libc::timespec {
            tv_sec: secs,
            tv_nsec: nanos as _,
        },
    ];
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

pub(super) fn lsetxattr(path: &Path, k: &str, v: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(k).unwrap();
    let r = unsafe { libc::lsetxattr(p.as_ptr(), k.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    assert_eq!(
        r,
        0,
        "lsetxattr {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub(super) fn mknod(path: &Path, mode: u32, dev: u64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}", path.display());
}

pub(super) fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub(super) const DEEP_COMPONENT: usize = 200;
pub(super) const DEEP_LEVELS: usize = 24; // 24 * 201 bytes > 4096: deeper than PATH_MAX

/// Makes `root/dddd.../dddd...` (deeper than PATH_MAX) with one file at the bottom.
pub(super) fn make_deep(root: &Path) {
    let fd = fsat::open_root(root).unwrap();
    let comp = c(&[b'd'; DEEP_COMPONENT]);
    let mut cur = fsat::dup(fd.as_fd()).unwrap();
    for _ in 0..DEEP_LEVELS {
        fsat::mkdir_at(cur.as_fd(), &comp, 0o755).unwrap();
        cur = fsat::open_dir_at(cur.as_fd(), &comp).unwrap();
    }
    let mut f = fsat::create_file_at(cur.as_fd(), c"bottom").unwrap();
    f.write_all(b"deep content").unwrap();
}

/// A capability xattr (VFS_CAP_REVISION_2, cap_net_bind_service permitted + effective).
pub(super) fn cap_bytes() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// A tree with every entry type the format carries, a path deeper than PATH_MAX included.
pub(super) fn build_rich_tree(root: &Path) {
    build_shallow_rich_tree(root);
    make_deep(root);
}

/// [`build_rich_tree`] without the deep path (GNU tar cannot extract paths over PATH_MAX).
pub(super) fn build_shallow_rich_tree(root: &Path) {
    let p = |s: &str| root.join(s);
    std::fs::create_dir_all(p("etc/sub")).unwrap();
    std::fs::create_dir_all(p("tmp")).unwrap();
    std::fs::set_permissions(p("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::write(p("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::fs::write(p("etc/sub/empty"), b"").unwrap();
    std::fs::write(p("su"), vec![0x7fu8; 10_000]).unwrap();
    lchown(&p("su"), 0, 0);
    std::fs::set_permissions(p("su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(p("sgid"), b"g").unwrap();
    lchown(&p("sgid"), 1234, 5678);
    std::fs::set_permissions(p("sgid"), std::fs::Permissions::from_mode(0o2750)).unwrap();
    std::fs::write(p("bigids"), b"ids").unwrap();
    lchown(&p("bigids"), 3_000_000, 4_000_000);
    std::fs::write(p("cap"), b"binary").unwrap();
    lsetxattr(&p("cap"), "security.capability", &cap_bytes());
    std::fs::write(p("xattrs"), b"x").unwrap();
    lsetxattr(&p("xattrs"), "user.one", b"1");
    lsetxattr(&p("xattrs"), "user.bin", b"\0\xff\n=");
    lsetxattr(&p("xattrs"), "trusted.keep", b"t");
    lsetxattr(&p("xattrs"), "trusted.overlay.nope", b"y");
    lsetxattr(&p("etc"), "user.dir", b"d");
    std::os::unix::fs::symlink("/etc/passwd", p("abs-link")).unwrap();
    std::os::unix::fs::symlink("etc/sub", p("rel-link")).unwrap();
    lchown(&p("rel-link"), 77, 88);
    lsetxattr(&p("abs-link"), "trusted.onlink", b"l");
    std::os::unix::fs::symlink("x".repeat(300), p("long-target")).unwrap();
    mknod(&p("fifo"), libc::S_IFIFO | 0o640, 0);
    mknod(&p("null"), libc::S_IFCHR | 0o666, libc::makedev(1, 3));
    mknod(&p("loop9"), libc::S_IFBLK | 0o660, libc::makedev(7, 9));
    std::fs::write(p("hl-a"), b"shared inode").unwrap();
    std::fs::hard_link(p("hl-a"), p("etc/hl-b")).unwrap();
    std::fs::hard_link(p("hl-a"), p("hl-c")).unwrap();
    std::fs::write(p(&"n".repeat(255)), b"255-byte name").unwrap();
    std::fs::write(
        root.join(std::ffi::OsStr::from_bytes(b"caf\xe9-latin1")),
        b"non utf8",
    )
    .unwrap();
    std::fs::write(p(".whatever"), b"not a whiteout").unwrap();
    std::fs::write(p(".wh"), b"nor this").unwrap();
    let f = std::fs::File::create(p("sparse")).unwrap();
    f.set_len(32 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"middle", 16 << 20).unwrap();
    drop(f);
    set_times(&p("su"), 1_600_000_000, 123_456_789);
    set_times(&p("abs-link"), 1_500_000_000, 5);
    set_times(&p("fifo"), 1_400_000_000, 0);
    set_times(&p("etc/sub"), 1_300_000_000, 999_999_999);
    set_times(&p("etc"), 1_300_000_001, 1);
}

/// Everything observable about a tree (root excluded), walked by fd so deep paths work.
pub(super) fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let fd = fsat::open_root(root).unwrap();
    let mut out = BTreeMap::new();
    snap_dir(fd.as_fd(), &mut Vec::new(), &mut out);
    out
}

pub(super) fn snap_dir(
    dir: BorrowedFd<'_>,
    rel: &mut Vec<u8>,
    out: &mut BTreeMap<Vec<u8>, String>,
) {
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for name in fsat::list_dir(dir).unwrap() {
        let base = rel.len();
        rel.push(b'/');
        rel.extend_from_slice(name.to_bytes());
        let st = fsat::lstat_at(dir, &name).unwrap();
        let ty = st.st_mode & libc::S_IFMT;
        let mut d = format!(
            "mode={:o} uid={} gid={} mtime={}.{:09}",
            st.st_mode, st.st_uid, st.st_gid, st.st_mtime, st.st_mtime_nsec
        );
        match ty {
            libc::S_IFREG => {
                let mut f = fsat::open_read_at(dir, &name).unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut f, &mut data).unwrap();
                d += &format!(
                    " size={} sha={} nlink={}",
                    st.st_size,
                    hex::encode(Sha256::digest(&data)),
                    st.st_nlink
                );
                inodes.entry(st.st_ino).or_insert_with(|| rel.clone());
            }
            libc::S_IFLNK => {
                d += &format!(
                    " -> {:?}",
                    String::from_utf8_lossy(&fsat::readlink_at(dir, &name).unwrap())
                )
            }
            libc::S_IFCHR | libc::S_IFBLK => {
                d += &format!(
                    " rdev={}:{}",
                    libc::major(st.st_rdev),
                    libc::minor(st.st_rdev)
                )
            }
            _ => {}
        }
        for (k, v) in carried_xattrs(dir, &name).unwrap() {
            d += &format!(" {}={}", String::from_utf8_lossy(&k), hex::encode(v));
        }
        out.insert(rel.clone(), d);
        if ty == libc::S_IFDIR {
            let sub = fsat::open_dir_at(dir, &name).unwrap();
            snap_dir(sub.as_fd(), rel, out);
        }
        rel.truncate(base);
    }
}

pub(super) fn diff_bytes(layer: &Path, changes: &[Change], parent: Option<&Path>) -> Vec<u8> {
    let mut out = Vec::new();
    write_diff(&mut out, layer, changes, parent).unwrap();
    out
}

pub(super) fn apply_bytes(dest: &Path, tar: &[u8], w: WhiteoutMode) -> Result<ApplyStats> {
    let mut r: &[u8] = tar;
    apply_layer(dest, &mut r, &opts(w))
}

pub(super) fn tar_names(tar: &[u8]) -> Vec<Vec<u8>> {
    let mut r = super::reader::TarReader::new(tar);
    let mut names = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        names.push(e.path);
    }
    names
}

pub(super) fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A parent tree, and a layer made from it by applying the parent's diff and changing it.
pub(super) struct Pair {
    pub _t: tempfile::TempDir,
    pub parent: PathBuf,
    pub layer: PathBuf,
    pub parent_tar: Vec<u8>,
}

pub(super) fn pair(build: impl Fn(&Path), change: impl Fn(&Path)) -> Pair {
    let t = tempfile::tempdir().unwrap();
    let parent = t.path().join("parent");
    let layer = t.path().join("layer");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::create_dir_all(&layer).unwrap();
    build(&parent);
    let parent_tar = diff_bytes(&parent, &naive_changes(&parent, None).unwrap(), None);
    apply_bytes(&layer, &parent_tar, WhiteoutMode::Delete).unwrap();
    change(&layer);
    Pair {
        _t: t,
        parent,
        layer,
        parent_tar,
    }
}

impl Pair {
    /// Applies the parent's tar then `tar` into a fresh dir (Delete mode): must equal the layer.
    pub fn check_full_apply(&self, tar: &[u8]) {
        let d = self._t.path().join("full");
        std::fs::create_dir_all(&d).unwrap();
        apply_bytes(&d, &self.parent_tar, WhiteoutMode::Delete).unwrap();
        apply_bytes(&d, tar, WhiteoutMode::Delete).unwrap();
        assert_eq!(snapshot(&d), snapshot(&self.layer));
    }

    pub fn upper(&self, tar: &[u8]) -> PathBuf {
        let u = self._t.path().join("upper");
        std::fs::create_dir_all(&u).unwrap();
        apply_bytes(&u, tar, WhiteoutMode::OverlayMarkers).unwrap();
        u
    }
}

pub(super) fn is_whiteout_device(p: &Path) -> bool {
    let m = std::fs::symlink_metadata(p).unwrap();
    m.mode() & libc::S_IFMT == libc::S_IFCHR && m.rdev() == 0
}

pub(super) fn file_meta(size: u64) -> EntryMeta {
    EntryMeta {
        kind: kind::REG,
        mode: 0o644,
        size,
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

pub(super) fn dir_meta() -> EntryMeta {
    EntryMeta {
        kind: kind::DIR,
        mode: 0o755,
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

pub(super) fn link_meta(k: u8, target: &[u8]) -> EntryMeta {
    EntryMeta {
        kind: k,
        mode: 0o777,
        link: target.to_vec(),
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

/// A tar built entry by entry, hostile ones included.
pub(super) fn raw_tar(entries: &[(&[u8], EntryMeta, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, meta, data) in entries {
        header::write_header(&mut out, name, meta).unwrap();
        out.extend_from_slice(data);
        header::write_padding(&mut out, data.len() as u64).unwrap();
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// `T/dest` to apply into, `T/sentinel` beside it.
pub(super) struct Sandbox {
    t: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dest")).unwrap();
        std::fs::write(t.path().join("sentinel"), b"untouched").unwrap();
        Self { t }
    }
    pub fn dest(&self) -> PathBuf {
        self.t.path().join("dest")
    }
    pub fn outside(&self) -> &Path {
        self.t.path()
    }
    /// Nothing beside dest changed: same names, sentinel intact with one link.
    pub fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = std::fs::read_dir(self.t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, vec!["dest", "sentinel"]);
        let s = self.t.path().join("sentinel");
        assert_eq!(std::fs::read(&s).unwrap(), b"untouched");
        assert_eq!(std::fs::metadata(&s).unwrap().nlink(), 1);
        assert!(std::fs::symlink_metadata(&s).unwrap().is_file());
    }
    pub fn refuses(&self, tar: &[u8], w: WhiteoutMode, needle: &str) {
        let err = apply_bytes(&self.dest(), tar, w).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "{err} does not name {needle:?}"
        );
        self.assert_outside_untouched();
    }
}
