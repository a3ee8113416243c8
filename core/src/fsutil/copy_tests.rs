//! Tests of `copy_tree`. They run as root (chown, mknod, trusted.* xattrs, mounts).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Everything `copy_tree` promises to keep, for one entry.
#[derive(Debug, PartialEq, Eq)]
struct EntryState {
    kind: u32,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    mtime: (i64, i64),
    atime: (i64, i64),
    xattrs: BTreeMap<String, Vec<u8>>,
    link_target: Option<PathBuf>,
    content: Option<Vec<u8>>,
}

/// Pre-order: each entry is stat'ed before its directory is read, so reading does not disturb
/// the atimes recorded. File content is read with O_NOATIME.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, EntryState> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let path = root.join(&rel);
        let m = std::fs::symlink_metadata(&path).unwrap();
        let mut xattrs = BTreeMap::new();
        for name in xattr::list(&path).unwrap() {
            let v = xattr::get(&path, &name).unwrap().unwrap();
            xattrs.insert(name.to_string_lossy().into_owned(), v);
        }
        let content = m.is_file().then(|| {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOATIME)
                .open(&path)
                .unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            v
        });
        let link_target = m
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(&path).unwrap());
        out.insert(
            rel.clone(),
            EntryState {
                kind: m.mode() & libc::S_IFMT,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                rdev: m.rdev(),
                size: if m.is_dir() { 0 } else { m.len() },
                mtime: (m.mtime(), m.mtime_nsec()),
                atime: (m.atime(), m.atime_nsec()),
                xattrs,
                link_target,
                content,
            },
        );
        if m.is_dir() {
            for e in std::fs::read_dir(&path).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
        }
    }
    out
}

fn cpath(path: &Path) -> std::ffi::CString {
    std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    let c = cpath(path);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", path.display());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mknod(path: &Path, mode: u32, dev: u64) {
    let c = cpath(path);
    assert_eq!(unsafe { libc::mknod(c.as_ptr(), mode, dev) }, 0, "mknod");
}

/// `cap_net_raw+ep` in the kernel's VFS_CAP_REVISION_2 format.
const CAP_NET_RAW_EP: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// A tree with one of everything `copy_tree` must keep.
fn build_rich_tree(root: &Path) {
    let d = root.join("etc");
    std::fs::create_dir(&d).unwrap();
    std::os::unix::fs::chown(&d, Some(1000), Some(1001)).unwrap();
    xattr::set(&d, "trusted.dirmark", b"y").unwrap();
    xattr::set(&d, "user.comment", b"a directory").unwrap();

    let f = d.join("passwd");
    std::fs::write(&f, b"root:x:0:0::/root:/bin/sh\n").unwrap();
    std::os::unix::fs::chown(&f, Some(1234), Some(5678)).unwrap();
    chmod(&f, 0o640);
    xattr::set(&f, "user.mime", b"text/plain").unwrap();
    xattr::set(&f, "trusted.overlay.origin", &[0u8, 1, 2, 255]).unwrap();

    let ping = root.join("ping");
    std::fs::write(&ping, vec![0x7fu8; 5000]).unwrap();
    xattr::set(&ping, "security.capability", &CAP_NET_RAW_EP).unwrap();
    chmod(&ping, 0o755);

    let su = root.join("su");
    std::fs::write(&su, b"setuid binary").unwrap();
    std::os::unix::fs::chown(&su, Some(0), Some(42)).unwrap();
    chmod(&su, 0o4755);
    let sg = root.join("wall");
    std::fs::write(&sg, b"setgid binary").unwrap();
    std::os::unix::fs::chown(&sg, Some(0), Some(5)).unwrap();
    chmod(&sg, 0o2711);

    let tmp = root.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    chmod(&tmp, 0o1777);
    let shared = root.join("shared");
    std::fs::create_dir(&shared).unwrap();
    chmod(&shared, 0o2775);

    std::os::unix::fs::symlink("etc/passwd", root.join("link")).unwrap();
    std::os::unix::fs::lchown(root.join("link"), Some(7), Some(8)).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", root.join("dangling")).unwrap();

    mknod(
        &root.join("null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    );
    mknod(
        &root.join("loop9"),
        libc::S_IFBLK | 0o660,
        libc::makedev(7, 9),
    );
    mknod(&root.join("fifo"), libc::S_IFIFO | 0o620, 0);

    std::fs::write(root.join("hard1"), b"one inode, two names").unwrap();
    std::fs::hard_link(root.join("hard1"), d.join("hard2")).unwrap();
    std::fs::write(root.join("empty"), b"").unwrap();

    let deep = root.join("a/b/c/d");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("leaf"), b"leaf").unwrap();
    chmod(&root.join("a/b"), 0o555);

    // Distinct nanosecond times everywhere, directories last (writing into them moves mtime).
    let mut n = 0;
    let mut paths: Vec<PathBuf> = Vec::new();
    collect_paths(root, &mut paths);
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in paths {
        n += 1;
        set_times(
            &p,
            (1_500_000_000 + n, 111_111_111 + n),
            (1_400_000_000 + n, 987_654_321 - n),
        );
    }
}

fn collect_paths(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            collect_paths(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn copies_every_kind_of_entry_exactly() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    build_rich_tree(&src);
    // Reading directories may move their atime once (relatime); settle it before comparing.
    snapshot(&src);
    let dst = t.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();

    let want = snapshot(&src);
    let got = snapshot(&dst);
    assert_eq!(want.len(), got.len());
    for (path, state) in &want {
        assert_eq!(Some(state), got.get(path), "{}", path.display());
    }
    assert_eq!(stats.symlinks, 2);
    assert_eq!(stats.specials, 3);
    assert_eq!(stats.hardlinks, 1);
    assert_eq!(stats.files, 7, "{stats:?}");
    assert_eq!(stats.dirs, 8, "{stats:?}");
    let a = std::fs::metadata(dst.join("hard1")).unwrap();
    let b = std::fs::metadata(dst.join("etc/hard2")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard links stay one inode");
    assert_eq!(a.nlink(), 2);
}

#[test]
fn keeps_holes() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let f = std::fs::File::create(src.join("sparse")).unwrap();
    f.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
    f.write_all_at(&[2u8; 4096], 8 << 20).unwrap();
    f.set_len(16 << 20).unwrap();
    drop(f);
    let dst = t.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    let m = std::fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.len(), 16 << 20);
    assert!(
        m.blocks() * 512 <= 64 * 1024,
        "holes filled: {} blocks",
        m.blocks()
    );
    assert_eq!(stats.data_bytes, 8192);
    assert_eq!(
        std::fs::read(src.join("sparse")).unwrap(),
        std::fs::read(dst.join("sparse")).unwrap()
    );
}

#[test]
fn copies_large_files_and_many_small_ones() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(src.join("big"), &big).unwrap();
    for i in 0..300 {
        let d = src.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}")), format!("file {i}").repeat(i + 1)).unwrap();
    }
    let dst = t.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.files, 301);
    assert_eq!(std::fs::read(dst.join("big")).unwrap(), big);
    for i in [0, 137, 299] {
        let rel = format!("d{}/f{i}", i % 10);
        assert_eq!(
            std::fs::read(src.join(&rel)).unwrap(),
            std::fs::read(dst.join(&rel)).unwrap()
        );
    }
}

#[test]
fn refuses_a_destination_that_is_not_empty() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let dst = t.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    std::fs::write(dst.join("x"), b"x").unwrap();
    assert!(matches!(
        copy_tree(&src, &dst),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        copy_tree(&src.join("missing"), &t.path().join("d2")),
        Err(Error::Io { .. })
    ));
}

/// A mount made by a test; unmounted (and its loop device released) in Drop, also on failure.
struct TestMount(PathBuf);

impl TestMount {
    fn new(args: &[&str], target: &Path) -> Self {
        std::fs::create_dir_all(target).unwrap();
        let st = Command::new("mount")
            .args(args)
            .arg(target)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?} {}", target.display());
        TestMount(target.to_path_buf())
    }
}

impl Drop for TestMount {
    fn drop(&mut self) {
        let _ = crate::fsutil::mounts::unmount(&self.0, true);
    }
}

#[test]
fn does_not_cross_into_other_mounts() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("own"), b"mine").unwrap();
    let mnt = TestMount::new(&["-t", "tmpfs", "tmpfs"], &src.join("mnt"));
    std::fs::write(mnt.0.join("foreign"), b"not mine").unwrap();
    let dst = t.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.mount_points, 1);
    assert!(dst.join("mnt").is_dir());
    assert_eq!(std::fs::read_dir(dst.join("mnt")).unwrap().count(), 0);
    assert_eq!(std::fs::read(dst.join("own")).unwrap(), b"mine");
}

#[test]
fn falls_back_to_read_write_across_filesystems() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(src.join("a"), &data).unwrap();
    std::fs::write(src.join("b"), b"small").unwrap();
    let mnt = TestMount::new(&["-t", "tmpfs", "tmpfs"], &t.path().join("tmpfs"));
    let dst = mnt.0.join("copy");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.method, Some(DataMethod::ReadWrite), "ext4 -> tmpfs");
    assert_eq!(std::fs::read(dst.join("a")).unwrap(), data);
    assert_eq!(std::fs::read(dst.join("b")).unwrap(), b"small");
}

#[test]
fn clones_on_a_reflink_filesystem() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("xfs.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let st = Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.xfs");
    let mnt = TestMount::new(
        &["-o", "loop", img.to_str().unwrap()],
        &t.path().join("xfs"),
    );
    assert!(reflink_supported(&mnt.0).unwrap());
    let src = mnt.0.join("src");
    std::fs::create_dir(&src).unwrap();
    let data = vec![9u8; 3 << 20];
    std::fs::write(src.join("blob"), &data).unwrap();
    let stats = copy_tree(&src, &mnt.0.join("dst")).unwrap();
    assert_eq!(stats.method, Some(DataMethod::Reflink));
    assert_eq!(std::fs::read(mnt.0.join("dst/blob")).unwrap(), data);
    assert!(!reflink_supported(t.path()).unwrap(), "ext4 has no reflink");
}

/// Paths longer than PATH_MAX (the kernel's limit for one path argument) still copy, hard
/// links between such deep places included.
#[test]
fn copies_trees_deeper_than_path_max() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Built through directory descriptors: the full path is too long for mkdir(2).
    let mut dir = std::fs::File::open(&src).unwrap();
    let mut depth = 0;
    let name = std::ffi::CString::new("d".repeat(250)).unwrap();
    while depth * 251 < 5000 {
        let rc =
            unsafe { libc::mkdirat(std::os::fd::AsRawFd::as_raw_fd(&dir), name.as_ptr(), 0o755) };
        assert_eq!(rc, 0);
        dir = sys::open_dir_at(&dir, &name).unwrap();
        depth += 1;
    }
    let leaf = sys::create_file_at(&dir, c"leaf").unwrap();
    leaf.write_all_at(b"deep", 0).unwrap();
    sys::link_at(&dir, c"leaf", &dir, c"leaf-link").unwrap();

    let dst = t.path().join("dst");
    let stats = copy_tree(&src, &dst).unwrap();
    assert_eq!(stats.dirs, depth as u64 + 1);
    assert_eq!((stats.files, stats.hardlinks), (1, 1));
    let rel: PathBuf = std::iter::repeat_n("d".repeat(250), depth).collect();
    let copied = sys::open_dir_beneath(&std::fs::File::open(&dst).unwrap(), &rel).unwrap();
    let f = sys::open_file_at(&copied, c"leaf").unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &f, &mut s).unwrap();
    assert_eq!(s, "deep");
    assert_eq!(sys::stat_at(&copied, c"leaf-link").unwrap().st_nlink, 2);
    // tempfile's cleanup cannot delete paths this deep either.
    assert!(std::process::Command::new("rm")
        .arg("-rf")
        .arg(&src)
        .arg(&dst)
        .status()
        .unwrap()
        .success());
}
