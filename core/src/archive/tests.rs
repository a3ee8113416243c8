//! End-to-end tests of the archive: diff, apply, round trips, whiteouts and hostile tars.
//! They run as root (chown, mknod, trusted.* xattrs).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::changes::carried_xattrs;
use super::fsat::{self, cname};
use super::header::{self, kind, EntryMeta};
use super::*;
use crate::error::Error;
use crate::layer::ChangeKind;

fn opts(w: WhiteoutMode) -> ApplyOptions {
    ApplyOptions { whiteouts: w }
}

fn c(s: &[u8]) -> CString {
    cname(s).unwrap()
}

fn set_times(path: &Path, secs: i64, nanos: u32) {
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

fn lsetxattr(path: &Path, k: &str, v: &[u8]) {
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

fn mknod(path: &Path, mode: u32, dev: u64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    assert_eq!(r, 0, "mknod {}", path.display());
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

const DEEP_COMPONENT: usize = 200;
const DEEP_LEVELS: usize = 24; // 24 * 201 bytes > 4096: deeper than PATH_MAX

/// Makes `root/dddd.../dddd...` (deeper than PATH_MAX) with one file at the bottom.
fn make_deep(root: &Path) {
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
fn cap_bytes() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// A tree with every entry type the format carries.
fn build_rich_tree(root: &Path) {
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
    make_deep(root);
    set_times(&p("su"), 1_600_000_000, 123_456_789);
    set_times(&p("abs-link"), 1_500_000_000, 5);
    set_times(&p("fifo"), 1_400_000_000, 0);
    set_times(&p("etc/sub"), 1_300_000_000, 999_999_999);
    set_times(&p("etc"), 1_300_000_001, 1);
}

/// Everything observable about a tree (root excluded), walked by fd so deep paths work.
fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, String> {
    let fd = fsat::open_root(root).unwrap();
    let mut out = BTreeMap::new();
    snap_dir(fd.as_fd(), &mut Vec::new(), &mut out);
    out
}

fn snap_dir(dir: BorrowedFd<'_>, rel: &mut Vec<u8>, out: &mut BTreeMap<Vec<u8>, String>) {
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

fn diff_bytes(layer: &Path, changes: &[Change], parent: Option<&Path>) -> Vec<u8> {
    let mut out = Vec::new();
    write_diff(&mut out, layer, changes, parent).unwrap();
    out
}

fn apply_bytes(dest: &Path, tar: &[u8], w: WhiteoutMode) -> Result<ApplyStats> {
    let mut r: &[u8] = tar;
    apply_layer(dest, &mut r, &opts(w))
}

fn tar_names(tar: &[u8]) -> Vec<Vec<u8>> {
    let mut r = super::reader::TarReader::new(tar);
    let mut names = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        names.push(e.path);
    }
    names
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[test]
fn round_trip_every_entry_type() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);

    let changes = naive_changes(&src, None).unwrap();
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Add));
    assert!(
        changes.windows(2).all(|w| w[0] < w[1]),
        "changes are sorted"
    );
    let tar = diff_bytes(&src, &changes, None);
    let stats = apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();

    let (a, b) = (snapshot(&src), snapshot(&dst));
    for (k, v) in &a {
        let k_s = String::from_utf8_lossy(k);
        if k_s.ends_with("xattrs") {
            assert!(
                v.contains("user.one") && !v.contains("trusted.overlay"),
                "{v}"
            );
        }
        assert_eq!(Some(v), b.get(k), "{k_s}");
    }
    assert_eq!(a.len(), b.len());
    assert_eq!(stats.diff_id, sha(&tar));
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    assert_eq!(stats.content_bytes, changes_size(&src, &changes).unwrap());
    // The trusted.overlay.* xattr never travels.
    let x = fsat::list_xattrs_at(fsat::open_root(&dst).unwrap().as_fd(), c"xattrs").unwrap();
    assert!(!x.iter().any(|(k, _)| k.starts_with(b"trusted.overlay.")));
    // Hard links stay one inode.
    assert_eq!(
        std::fs::metadata(dst.join("hl-c")).unwrap().ino(),
        std::fs::metadata(dst.join("etc/hl-b")).unwrap().ino()
    );
    assert_eq!(std::fs::metadata(dst.join("hl-a")).unwrap().nlink(), 3);
    // The sparse file stays sparse (32 MiB long, almost nothing allocated).
    let m = std::fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.len(), 32 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file allocated {} bytes",
        m.blocks() * 512
    );
    // The applied tree has no changes against the source.
    assert_eq!(
        naive_changes(&dst, Some(&src)).unwrap(),
        Vec::<Change>::new()
    );
}

#[test]
fn diffs_are_deterministic_and_stable_through_apply() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);
    let changes = naive_changes(&src, None).unwrap();
    let one = diff_bytes(&src, &changes, None);
    let two = diff_bytes(&src, &changes, None);
    assert_eq!(one, two);
    let mut shuffled = changes.clone();
    shuffled.reverse();
    assert_eq!(
        diff_bytes(&src, &shuffled, None),
        one,
        "order of the change list does not matter"
    );
    apply_bytes(&dst, &one, WhiteoutMode::Delete).unwrap();
    let again = diff_bytes(&dst, &naive_changes(&dst, None).unwrap(), None);
    assert_eq!(
        sha(&again),
        sha(&one),
        "diff of the applied tree gives the same bytes"
    );
    // Entries are in byte order of their names, directories before their content.
    let names = tar_names(&one);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert!(names.iter().any(|n| n == b"etc/"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with(b"/") || n.starts_with(b"./")));
}

/// A parent tree, and a layer made from it by applying the parent's diff and changing it.
struct Pair {
    _t: tempfile::TempDir,
    parent: PathBuf,
    layer: PathBuf,
    parent_tar: Vec<u8>,
}

fn pair(build: impl Fn(&Path), change: impl Fn(&Path)) -> Pair {
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
    fn check_full_apply(&self, tar: &[u8]) {
        let d = self._t.path().join("full");
        std::fs::create_dir_all(&d).unwrap();
        apply_bytes(&d, &self.parent_tar, WhiteoutMode::Delete).unwrap();
        apply_bytes(&d, tar, WhiteoutMode::Delete).unwrap();
        assert_eq!(snapshot(&d), snapshot(&self.layer));
    }

    fn upper(&self, tar: &[u8]) -> PathBuf {
        let u = self._t.path().join("upper");
        std::fs::create_dir_all(&u).unwrap();
        apply_bytes(&u, tar, WhiteoutMode::OverlayMarkers).unwrap();
        u
    }
}

fn is_whiteout_device(p: &Path) -> bool {
    let m = std::fs::symlink_metadata(p).unwrap();
    m.mode() & libc::S_IFMT == libc::S_IFCHR && m.rdev() == 0
}

#[test]
fn whiteouts_in_both_modes() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("a")).unwrap();
            std::fs::create_dir_all(r.join("b/deep/er")).unwrap();
            std::fs::write(r.join("a/x"), b"x").unwrap();
            std::fs::write(r.join("a/y"), b"y").unwrap();
            std::fs::write(r.join("b/deep/er/z"), b"z").unwrap();
            std::fs::write(r.join("c"), b"c").unwrap();
        },
        |l| {
            std::fs::remove_file(l.join("a/x")).unwrap();
            // Timestamps are coarse (a jiffy): make the directory's change visible for sure.
            set_times(&l.join("a"), 1_111, 0);
            std::fs::remove_dir_all(l.join("b")).unwrap();
            std::fs::write(l.join("c"), b"C").unwrap();
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let find = |path: &str| {
        changes
            .iter()
            .find(|c| c.path == Path::new(path))
            .map(|c| c.kind)
    };
    assert_eq!(find("/a/x"), Some(ChangeKind::Delete));
    assert_eq!(find("/b"), Some(ChangeKind::Delete));
    assert_eq!(find("/b/deep"), None, "a deleted directory is listed alone");
    assert_eq!(
        find("/c"),
        Some(ChangeKind::Modify),
        "same size and mtime may differ: content"
    );
    assert_eq!(find("/a"), Some(ChangeKind::Modify));
    assert_eq!(find("/a/y"), None);
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let names = tar_names(&tar);
    assert!(
        names.contains(&b"a/.wh.x".to_vec()) && names.contains(&b".wh.b".to_vec()),
        "{names:?}"
    );
    p.check_full_apply(&tar);
    let u = p.upper(&tar);
    assert!(is_whiteout_device(&u.join("a/x")));
    assert!(is_whiteout_device(&u.join("b")));
    assert_eq!(std::fs::read(u.join("c")).unwrap(), b"C");
}

#[test]
fn opaque_directories_in_both_modes() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("d/sub")).unwrap();
            std::fs::write(r.join("d/x"), b"x").unwrap();
            std::fs::write(r.join("d/sub/y"), b"y").unwrap();
            std::fs::create_dir_all(r.join("keep")).unwrap();
            std::fs::write(r.join("keep/k"), b"k").unwrap();
        },
        |l| {
            std::fs::remove_dir_all(l.join("d")).unwrap();
            std::fs::create_dir_all(l.join("d")).unwrap();
            // `#` sorts before `.wh..wh..opq`: written before the marker, it must survive it.
            std::fs::write(l.join("d/#first"), b"1").unwrap();
            std::fs::write(l.join("d/zlast"), b"2").unwrap();
            set_times(&l.join("d"), 1_234_567_890, 42);
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let names = tar_names(&tar);
    assert!(names.contains(&b"d/.wh..wh..opq".to_vec()), "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n.starts_with(b"d/.wh.x") || n.starts_with(b"d/.wh.sub")));
    assert!(!names.iter().any(|n| n.starts_with(b"keep")));
    // Without the parent tree the writer cannot know: individual whiteouts.
    let plain = tar_names(&diff_bytes(&p.layer, &changes, None));
    assert!(plain.contains(&b"d/.wh.x".to_vec()) && plain.contains(&b"d/.wh.sub".to_vec()));
    p.check_full_apply(&tar);
    let u = p.upper(&tar);
    let x = fsat::list_xattrs_at(fsat::open_root(&u).unwrap().as_fd(), c"d").unwrap();
    assert!(
        x.contains(&(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())),
        "{x:?}"
    );
    assert_eq!(std::fs::read(u.join("d/#first")).unwrap(), b"1");
    assert_eq!(std::fs::read(u.join("d/zlast")).unwrap(), b"2");
    assert_eq!(
        std::fs::metadata(u.join("d")).unwrap().mtime(),
        1_234_567_890
    );
}

#[test]
fn opaque_marker_removes_only_what_the_tar_did_not_write() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("o/sub")).unwrap();
    std::fs::write(d.join("o/old"), b"").unwrap();
    std::fs::write(d.join("o/sub/old"), b"").unwrap();
    let tar = raw_tar(&[
        (b"o/".as_slice(), dir_meta(), b"".as_slice()),
        (b"o/sub/", dir_meta(), b""),
        (b"o/sub/new", file_meta(1), b"n"),
        (b"o/.wh..wh..opq", file_meta(0), b""),
    ]);
    apply_bytes(d, &tar, WhiteoutMode::Delete).unwrap();
    assert!(d.join("o/sub/new").exists());
    assert!(!d.join("o/old").exists());
    assert!(
        !d.join("o/sub/old").exists(),
        "a rewritten dir keeps only what the tar wrote in it"
    );
}

fn file_meta(size: u64) -> EntryMeta {
    EntryMeta {
        kind: kind::REG,
        mode: 0o644,
        size,
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

fn dir_meta() -> EntryMeta {
    EntryMeta {
        kind: kind::DIR,
        mode: 0o755,
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

fn link_meta(k: u8, target: &[u8]) -> EntryMeta {
    EntryMeta {
        kind: k,
        mode: 0o777,
        link: target.to_vec(),
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

/// A tar built entry by entry, hostile ones included.
fn raw_tar(entries: &[(&[u8], EntryMeta, &[u8])]) -> Vec<u8> {
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
struct Sandbox {
    t: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dest")).unwrap();
        std::fs::write(t.path().join("sentinel"), b"untouched").unwrap();
        Self { t }
    }
    fn dest(&self) -> PathBuf {
        self.t.path().join("dest")
    }
    fn outside(&self) -> &Path {
        self.t.path()
    }
    /// Nothing beside dest changed: same names, sentinel intact with one link.
    fn assert_outside_untouched(&self) {
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
    fn refuses(&self, tar: &[u8], w: WhiteoutMode, needle: &str) {
        let err = apply_bytes(&self.dest(), tar, w).unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string().contains(needle),
            "{err} does not name {needle:?}"
        );
        self.assert_outside_untouched();
    }
}

#[test]
fn hostile_dotdot_is_refused() {
    let s = Sandbox::new();
    let tar = raw_tar(&[(b"../sentinel".as_slice(), file_meta(4), b"evil".as_slice())]);
    s.refuses(&tar, WhiteoutMode::Delete, "../sentinel");
    let tar = raw_tar(&[(
        b"a/../../sentinel".as_slice(),
        file_meta(4),
        b"evil".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
}

#[test]
fn absolute_paths_are_kept_inside() {
    let s = Sandbox::new();
    let abs = format!("{}/sentinel", s.outside().display());
    let tar = raw_tar(&[
        (b"/etc/x".as_slice(), file_meta(4), b"data".as_slice()),
        (abs.as_bytes(), file_meta(4), b"evil"),
    ]);
    apply_bytes(&s.dest(), &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(std::fs::read(s.dest().join("etc/x")).unwrap(), b"data");
    let inside = s.dest().join(abs.trim_start_matches('/'));
    assert_eq!(std::fs::read(inside).unwrap(), b"evil");
    s.assert_outside_untouched();
}

#[test]
fn symlink_to_root_then_a_file_through_it_is_refused() {
    let s = Sandbox::new();
    let out = s.outside().as_os_str().as_bytes().to_vec();
    for target in [b"/".to_vec(), out.clone(), b"..".to_vec()] {
        let s = Sandbox::new();
        let mut through = b"evil".to_vec();
        through.extend_from_slice(if target == b"/" { &out[..] } else { b"" });
        through.extend_from_slice(b"/sentinel");
        let tar = raw_tar(&[
            (
                b"evil".as_slice(),
                link_meta(kind::SYMLINK, &target),
                b"".as_slice(),
            ),
            (&through, file_meta(4), b"evil"),
        ]);
        s.refuses(&tar, WhiteoutMode::Delete, "symlink");
    }
}

#[test]
fn symlink_made_earlier_in_the_same_tar_is_not_followed() {
    for mode in [WhiteoutMode::Delete, WhiteoutMode::OverlayMarkers] {
        let s = Sandbox::new();
        let tar = raw_tar(&[
            (b"dir/".as_slice(), dir_meta(), b"".as_slice()),
            (b"dir/link", link_meta(kind::SYMLINK, b"../.."), b""),
            (b"dir/link/sentinel", file_meta(4), b"evil"),
        ]);
        s.refuses(&tar, mode, "dir/link/sentinel");
        // A whiteout or an opaque marker through the symlink, too.
        let tar = raw_tar(&[
            (
                b"l".as_slice(),
                link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
                b"".as_slice(),
            ),
            (b"l/.wh.sentinel", file_meta(0), b""),
        ]);
        s.refuses(&tar, mode, "l/.wh.sentinel");
        let tar = raw_tar(&[
            (
                b"l".as_slice(),
                link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
                b"".as_slice(),
            ),
            (b"l/.wh..wh..opq", file_meta(0), b""),
        ]);
        s.refuses(&tar, mode, "l/.wh..wh..opq");
    }
}

#[test]
fn hardlinks_out_of_dest_are_refused() {
    let s = Sandbox::new();
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"../../etc/passwd"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"../sentinel"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
    // Through a symlink (to the outside directory).
    let tar = raw_tar(&[
        (
            b"l".as_slice(),
            link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
            b"".as_slice(),
        ),
        (b"h", link_meta(kind::LINK, b"l/sentinel"), b""),
    ]);
    s.refuses(&tar, WhiteoutMode::Delete, "symlink");
    // Absolute: stripped, so it names dest/sentinel, which does not exist.
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"/sentinel"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "does not exist");
}

#[test]
fn bad_whiteouts_are_refused() {
    for name in [
        &b".wh..."[..],
        b"a/.wh...",
        b".wh..",
        b".wh.",
        b".wh..wh.plnk",
        b"../.wh.sentinel",
    ] {
        for mode in [WhiteoutMode::Delete, WhiteoutMode::OverlayMarkers] {
            let s = Sandbox::new();
            std::fs::create_dir_all(s.dest().join("a")).unwrap();
            let tar = raw_tar(&[(name, file_meta(0), b"".as_slice())]);
            s.refuses(&tar, mode, &String::from_utf8_lossy(name));
            assert!(s.dest().join("a").exists());
        }
    }
}

#[test]
fn truncated_and_corrupt_tars_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), vec![3u8; 5000]).unwrap();
    let tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    for cut in [0usize, 100, 512, 700, 1536, tar.len() - 1024] {
        let d = t.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&d).unwrap();
        let err = apply_bytes(&d, &tar[..cut], WhiteoutMode::Delete).unwrap_err();
        assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
    }
    let mut bad = tar.clone();
    bad[3] ^= 0x55;
    let d = t.path().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    let err = apply_bytes(&d, &bad, WhiteoutMode::Delete).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // A truncated gzip stream is an error too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let err = apply_bytes(&d, &gz[..gz.len() / 2], WhiteoutMode::Delete).unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[test]
fn compressed_input_and_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    build_rich_tree(&src);
    let mut tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    // GNU tar pads to 10 KiB records: the padding is part of the diffID.
    tar.extend_from_slice(&[0u8; 4096]);
    let want = snapshot(&src);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let inputs = [
        ("plain", tar.clone()),
        ("gzip", gz.finish().unwrap()),
        ("zstd", zstd::encode_all(&tar[..], 3).unwrap()),
    ];
    for (name, input) in inputs {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let stats = apply_bytes(&d, &input, WhiteoutMode::Delete).unwrap();
        assert_eq!(stats.diff_id, sha(&tar), "{name}");
        assert_eq!(stats.tar_bytes, tar.len() as u64, "{name}");
        assert_eq!(snapshot(&d), want, "{name}");
    }
}

#[test]
fn content_bytes_equals_changes_size() {
    let p = pair(
        |r| {
            std::fs::write(r.join("old"), vec![1u8; 1000]).unwrap();
            std::fs::write(r.join("same"), vec![2u8; 10]).unwrap();
        },
        |l| {
            std::fs::write(l.join("old"), vec![9u8; 3000]).unwrap();
            std::fs::write(l.join("new"), vec![5u8; 777]).unwrap();
            std::fs::hard_link(l.join("new"), l.join("new2")).unwrap();
            std::fs::hard_link(l.join("new"), l.join("new3")).unwrap();
            std::os::unix::fs::symlink("new", l.join("sym")).unwrap();
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let size = changes_size(&p.layer, &changes).unwrap();
    assert_eq!(size, 3000 + 777);
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let u = p.upper(&tar);
    let stats = apply_bytes(&u, &tar, WhiteoutMode::OverlayMarkers).unwrap();
    assert_eq!(stats.content_bytes, size);
    p.check_full_apply(&tar);
}

#[test]
fn replacing_entries_of_another_type() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("was-dir/child")).unwrap();
    std::fs::write(d.join("was-file"), b"f").unwrap();
    std::fs::create_dir_all(d.join("keep")).unwrap();
    std::fs::write(d.join("keep/inside"), b"i").unwrap();
    std::os::unix::fs::symlink("/", d.join("was-link")).unwrap();
    let mut m = dir_meta();
    m.mode = 0o711;
    m.uid = 42;
    let tar = raw_tar(&[
        (b"was-dir".as_slice(), file_meta(3), b"now".as_slice()),
        (b"was-file/", dir_meta(), b""),
        (b"was-file/x", file_meta(1), b"x"),
        (b"keep/", m, b""),
        (b"was-link/", dir_meta(), b""),
    ]);
    apply_bytes(d, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(std::fs::read(d.join("was-dir")).unwrap(), b"now");
    assert_eq!(std::fs::read(d.join("was-file/x")).unwrap(), b"x");
    assert_eq!(std::fs::read(d.join("keep/inside")).unwrap(), b"i");
    let keep = std::fs::metadata(d.join("keep")).unwrap();
    assert_eq!((keep.mode() & 0o7777, keep.uid()), (0o711, 42));
    assert!(std::fs::symlink_metadata(d.join("was-link"))
        .unwrap()
        .is_dir());
}

#[test]
fn write_diff_refuses_names_that_look_like_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join(".wh.foo"), b"x").unwrap();
    let changes = naive_changes(t.path(), None).unwrap();
    let err = write_diff(&mut Vec::new(), t.path(), &changes, None).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains(".wh.foo"), "{err}");
}

#[test]
fn naive_changes_sees_metadata_and_content() {
    let p = pair(
        |r| {
            for n in ["content", "mode", "owner", "mtime", "xattr", "same"] {
                std::fs::write(r.join(n), b"1234").unwrap();
                set_times(&r.join(n), 1_000_000, 0);
            }
            std::os::unix::fs::symlink("aaaa", r.join("link")).unwrap();
            std::fs::create_dir_all(r.join("dirmode")).unwrap();
        },
        |l| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(l.join("content"))
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"9", 2).unwrap();
            drop(f);
            set_times(&l.join("content"), 1_000_000, 0);
            std::fs::set_permissions(l.join("mode"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            lchown(&l.join("owner"), 5, 5);
            set_times(&l.join("mtime"), 1_000_000, 1);
            lsetxattr(&l.join("xattr"), "user.new", b"v");
            std::fs::remove_file(l.join("link")).unwrap();
            std::os::unix::fs::symlink("bbbb", l.join("link")).unwrap();
            std::fs::set_permissions(l.join("dirmode"), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        },
    );
    // Equalise the symlink and file mtimes so only the target / metadata under test differ.
    let pt = std::fs::symlink_metadata(p.parent.join("link")).unwrap();
    set_times(&p.layer.join("link"), pt.mtime(), pt.mtime_nsec() as u32);
    for n in ["mode", "owner", "xattr"] {
        set_times(&p.layer.join(n), 1_000_000, 0);
    }
    let dm = std::fs::metadata(p.parent.join("dirmode")).unwrap();
    set_times(&p.layer.join("dirmode"), dm.mtime(), dm.mtime_nsec() as u32);
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let paths: Vec<_> = changes
        .iter()
        .map(|c| (c.path.to_str().unwrap().to_string(), c.kind))
        .collect();
    let want: Vec<_> = [
        "/content", "/dirmode", "/link", "/mode", "/mtime", "/owner", "/xattr",
    ]
    .iter()
    .map(|s| (s.to_string(), ChangeKind::Modify))
    .collect();
    assert_eq!(paths, want);
}

/// Unmounts on drop, also when the test fails.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn naive_changes_does_not_descend_into_other_mounts() {
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer");
    std::fs::create_dir_all(layer.join("mnt")).unwrap();
    std::fs::write(layer.join("f"), b"").unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &layer.join("mnt"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting a tmpfs needs root");
    let _guard = MountGuard(layer.join("mnt"));
    std::fs::write(layer.join("mnt/inside"), b"").unwrap();
    let changes = naive_changes(&layer, None).unwrap();
    let paths: Vec<_> = changes.iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, vec![PathBuf::from("/f"), PathBuf::from("/mnt")]);
}

#[test]
fn apply_is_idempotent_over_an_existing_tree() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);
    let tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
    apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(snapshot(&dst), snapshot(&src));
}

#[test]
fn reads_docker_fixture_layers() {
    // The busybox rootfs fixture, if the tar is there, applies and re-diffs to the same tree.
    let dir = Path::new("/work/shared/fixtures");
    let fixture = std::fs::read_dir(dir)
        .expect("fixtures directory")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().is_some_and(|n| n == "bb-rootfs.tar"))
        .expect("a busybox rootfs tar among the fixtures");
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mut f = std::fs::File::open(&fixture).unwrap();
    let stats = apply_layer(&a, &mut f, &opts(WhiteoutMode::Delete)).unwrap();
    assert_eq!(stats.diff_id, sha(&std::fs::read(&fixture).unwrap()));
    let tar = diff_bytes(&a, &naive_changes(&a, None).unwrap(), None);
    apply_bytes(&b, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(snapshot(&a), snapshot(&b));
    let _ = OwnedFd::from(std::fs::File::open(&a).unwrap());
}
