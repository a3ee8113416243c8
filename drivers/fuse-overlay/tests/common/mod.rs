//! Test helpers: kernel overlay and strata-fuse-overlay mounts that unmount in Drop (also when
//! a test fails), and tree snapshots to compare what two mounts show.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use strata_fuse_overlay::{OverlayConfig, OverlayMount};

/// A kernel overlayfs mount.
pub struct KernelOverlay {
    pub path: PathBuf,
}

impl KernelOverlay {
    pub fn mount(lowers: &[&Path], upper: &Path, work: &Path, target: &Path, extra: &str) -> Self {
        let lower: Vec<String> = lowers.iter().map(|l| l.display().to_string()).collect();
        let mut opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.join(":"),
            upper.display(),
            work.display()
        );
        if !extra.is_empty() {
            opts.push(',');
            opts.push_str(extra);
        }
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("kernel overlay mount {opts}: {e}"));
        Self {
            path: target.to_path_buf(),
        }
    }
}

impl Drop for KernelOverlay {
    fn drop(&mut self) {
        let _ = strata_fuse_overlay::mount::unmount_path(&self.path);
    }
}

/// Our overlay, served on the test's runtime.
pub struct FuseOverlay {
    pub path: PathBuf,
    mount: Option<OverlayMount>,
}

impl FuseOverlay {
    pub fn mount(
        rt: &tokio::runtime::Runtime,
        lowers: &[&Path],
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Self {
        Self::mount_with(rt, lowers, upper, work, target, |_| {})
    }

    /// The usual test layout: `base/l1` as the one lower layer, `base/upper`, `base/work`,
    /// mounted on `base/mnt`.
    pub fn mount_l1(rt: &tokio::runtime::Runtime, base: &Path) -> Self {
        Self::mount(
            rt,
            &[&base.join("l1")],
            &base.join("upper"),
            &base.join("work"),
            &base.join("mnt"),
        )
    }

    /// As `mount`, with `adjust` applied to the configuration first.
    pub fn mount_with(
        rt: &tokio::runtime::Runtime,
        lowers: &[&Path],
        upper: &Path,
        work: &Path,
        target: &Path,
        adjust: impl FnOnce(&mut OverlayConfig),
    ) -> Self {
        let mut cfg = OverlayConfig::new(
            lowers.iter().map(|l| l.to_path_buf()).collect(),
            Some((upper.to_path_buf(), work.to_path_buf())),
        );
        adjust(&mut cfg);
        let mount = rt
            .block_on(OverlayMount::mount(cfg, target))
            .unwrap_or_else(|e| panic!("fuse overlay mount on {}: {e}", target.display()));
        Self {
            path: target.to_path_buf(),
            mount: Some(mount),
        }
    }

    pub fn unmount(mut self, rt: &tokio::runtime::Runtime) {
        if let Some(m) = self.mount.take() {
            rt.block_on(m.unmount()).expect("unmount");
        }
    }
}

impl Drop for FuseOverlay {
    fn drop(&mut self) {
        let _ = strata_fuse_overlay::mount::unmount_path(&self.path);
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What one path looks like through a mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size and content for files, target for symlinks, rdev for devices.
    pub data: Vec<u8>,
    pub nlink: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub type Snapshot = BTreeMap<PathBuf, Entry>;

fn xattrs(p: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut out = Vec::new();
    let names = strata_fuse_overlay::fs::sys::list_xattr_vec(&c).unwrap_or_default();
    for n in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if !n.starts_with(b"user.") {
            continue;
        }
        let cn = CString::new(n).unwrap();
        if let Ok(Some(v)) = strata_fuse_overlay::fs::sys::get_xattr_vec(&c, &cn) {
            out.push((n.to_vec(), v));
        }
    }
    out.sort();
    out
}

/// Everything below `root` (not `root` itself).
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display())) {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let (kind, data) = if ft.is_dir() {
                stack.push(p.clone());
                ("dir", Vec::new())
            } else if ft.is_symlink() {
                (
                    "symlink",
                    std::fs::read_link(&p)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                )
            } else if ft.is_file() {
                ("file", std::fs::read(&p).unwrap())
            } else if ft.is_fifo() {
                ("fifo", Vec::new())
            } else if ft.is_char_device() {
                ("char", m.rdev().to_le_bytes().to_vec())
            } else if ft.is_block_device() {
                ("block", m.rdev().to_le_bytes().to_vec())
            } else {
                ("socket", Vec::new())
            };
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    data,
                    nlink: if ft.is_dir() { 0 } else { m.nlink() },
                    xattrs: if ft.is_symlink() {
                        Vec::new()
                    } else {
                        xattrs(&p)
                    },
                },
            );
        }
    }
    out
}

/// Panics with a readable list of differences.
pub fn assert_same(what: &str, a: &Snapshot, b: &Snapshot) {
    let mut diffs = Vec::new();
    for (p, e) in a {
        match b.get(p) {
            None => diffs.push(format!("{}: only in the first", p.display())),
            Some(f) if f != e => diffs.push(format!("{}: {e:?} vs {f:?}", p.display())),
            _ => {}
        }
    }
    for p in b.keys() {
        if !a.contains_key(p) {
            diffs.push(format!("{}: only in the second", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: {} differences:\n{}",
        diffs.len(),
        diffs.join("\n")
    );
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    strata_fuse_overlay::fs::sys::lsetxattr(&c, &n, value, 0)
        .unwrap_or_else(|e| panic!("setxattr {name} {}: {e}", p.display()));
}

pub fn whiteout(p: &Path) {
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
}

pub fn mkdirs(base: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|n| {
            let p = base.join(n);
            std::fs::create_dir_all(&p).unwrap();
            p
        })
        .collect()
}

/// No mount of ours or the kernel's may outlive a test.
pub fn assert_no_mounts_under(root: &Path) {
    let left = strata_core::fsutil::mounts::mounts_under(root).unwrap();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
}

/// A temporary directory with `upper`, `work` and `mnt` in it; whatever is still mounted
/// below it is unmounted when it goes, also when a test fails.
pub struct Dirs {
    pub tmp: tempfile::TempDir,
}

impl Dirs {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        mkdirs(tmp.path(), &["upper", "work", "mnt"]);
        Self { tmp }
    }

    pub fn p(&self, n: &str) -> PathBuf {
        self.tmp.path().join(n)
    }
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.tmp.path());
    }
}

/// How many FUSE io_uring queue threads this process runs.
pub fn uring_queue_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("fuse-uring-"))
        .count()
}

/// The queue thread count once it reaches zero, or after 5 s: threads end a moment after
/// their session does.
pub fn uring_queue_threads_after_settling() -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while uring_queue_threads() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    uring_queue_threads()
}
