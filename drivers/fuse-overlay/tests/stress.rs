//! The same seeded random sequence of file operations on our mount and on a kernel overlay
//! mount of identical layers: every operation must give the same result (errno included) and
//! the trees must end up the same.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

#[derive(Debug, Clone)]
enum Op {
    Create(PathBuf, usize),
    Write(PathBuf, u64, usize),
    Truncate(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    Link(PathBuf, PathBuf),
    Unlink(PathBuf),
    Mkdir(PathBuf, u32),
    Rmdir(PathBuf),
    Chmod(PathBuf, u32),
    SetXattr(PathBuf, u8, usize),
}

fn random_path(rng: &mut StdRng) -> PathBuf {
    let depth = [1, 1, 2, 2, 3][rng.gen_range(0..5)];
    (0..depth)
        .map(|_| NAMES[rng.gen_range(0..NAMES.len())])
        .collect()
}

fn random_op(rng: &mut StdRng) -> Op {
    let p = random_path(rng);
    match rng.gen_range(0..100) {
        0..=14 => Op::Create(p, rng.gen_range(0..20_000)),
        15..=29 => Op::Write(p, rng.gen_range(0..30_000), rng.gen_range(1..9_000)),
        30..=36 => Op::Truncate(p, rng.gen_range(0..25_000)),
        37..=46 => Op::Rename(p, random_path(rng)),
        47..=52 => Op::Link(p, random_path(rng)),
        53..=62 => Op::Unlink(p),
        63..=77 => Op::Mkdir(p, [0o755, 0o700, 0o775][rng.gen_range(0..3)]),
        78..=85 => Op::Rmdir(p),
        86..=92 => Op::Chmod(p, [0o600, 0o644, 0o755, 0o700][rng.gen_range(0..4)]),
        _ => Op::SetXattr(p, rng.gen_range(0..3), rng.gen_range(0..200)),
    }
}

fn content(len: usize, salt: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ salt) as u8)
        .collect()
}

fn code(r: std::io::Result<()>) -> Result<(), i32> {
    r.map_err(|e| e.raw_os_error().unwrap_or(-1))
}

fn apply(root: &Path, op: &Op) -> Result<(), i32> {
    let at = |p: &PathBuf| root.join(p);
    code(match op {
        Op::Create(p, len) => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(at(p))
            .and_then(|mut f| f.write_all(&content(*len, *len))),
        Op::Write(p, off, len) => std::fs::OpenOptions::new()
            .write(true)
            .open(at(p))
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(*off))?;
                f.write_all(&content(*len, *off as usize))
            }),
        Op::Truncate(p, size) => std::fs::OpenOptions::new()
            .write(true)
            .open(at(p))
            .and_then(|f| f.set_len(*size)),
        Op::Rename(a, b) => std::fs::rename(at(a), at(b)),
        Op::Link(a, b) => std::fs::hard_link(at(a), at(b)),
        Op::Unlink(p) => std::fs::remove_file(at(p)),
        Op::Mkdir(p, mode) => std::fs::DirBuilder::new().mode(*mode).create(at(p)),
        Op::Rmdir(p) => std::fs::remove_dir(at(p)),
        Op::Chmod(p, mode) => {
            std::fs::set_permissions(at(p), std::fs::Permissions::from_mode(*mode))
        }
        Op::SetXattr(p, k, len) => {
            let c = std::ffi::CString::new(at(p).as_os_str().as_encoded_bytes()).unwrap();
            let n = std::ffi::CString::new(format!("user.k{k}")).unwrap();
            strata_fuse_overlay::fs::sys::lsetxattr(&c, &n, &content(*len, *k as usize), 0)
        }
    })
}

/// Lower layers sharing the stress namespace, so operations hit lower entries too.
fn make_lowers(root: &Path) -> (PathBuf, PathBuf) {
    let l1 = root.join("l1");
    let l2 = root.join("l2");
    mkdirs(&l1, &["a/b", "b", "c/a/d", "d/d"]);
    std::fs::write(l1.join("a/b/c"), content(5000, 1)).unwrap();
    std::fs::write(l1.join("a/c"), content(100, 2)).unwrap();
    std::fs::write(l1.join("b/a"), content(70_000, 3)).unwrap();
    std::fs::write(l1.join("c/a/d/a"), content(10, 4)).unwrap();
    std::fs::write(l1.join("d/b"), b"").unwrap();
    mkdirs(&l2, &["a", "c/b", "d"]);
    std::fs::write(l2.join("a/d"), content(300, 5)).unwrap();
    std::fs::write(l2.join("c/b/c"), content(40, 6)).unwrap();
    whiteout(&l2.join("d/b"));
    set_xattr(&l2.join("c"), "trusted.overlay.opaque", b"y");
    (l1, l2)
}

fn run(seed: u64, ops: usize) {
    run_with(seed, ops, true)
}

/// `io_uring`: let the mount take requests over io_uring where the kernel offers it.
fn run_with(seed: u64, ops: usize, io_uring: bool) {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let _cleanup = Cleanup(tmp.path().to_path_buf());
    let (l1, l2) = make_lowers(tmp.path());
    mkdirs(tmp.path(), &["ou", "ow", "om", "ku", "kw", "km"]);
    let p = |n: &str| tmp.path().join(n);
    let ours = FuseOverlay::mount_with(&rt, &[&l2, &l1], &p("ou"), &p("ow"), &p("om"), |cfg| {
        cfg.io_uring = io_uring
    });
    // redirect_dir=on: kernel overlay renames merged directories too (we copy them up whole).
    let kernel = KernelOverlay::mount(&[&l2, &l1], &p("ku"), &p("kw"), &p("km"), "redirect_dir=on");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut succeeded = 0;
    for i in 0..ops {
        let op = random_op(&mut rng);
        let a = apply(&ours.path, &op);
        let b = apply(&kernel.path, &op);
        assert_eq!(
            a, b,
            "seed {seed}, operation {i} {op:?}: ours {a:?}, kernel {b:?}"
        );
        succeeded += usize::from(a.is_ok());
        if i % 500 == 499 {
            assert_same(
                &format!("seed {seed} after {i} operations"),
                &snapshot(&ours.path),
                &snapshot(&kernel.path),
            );
        }
    }
    let end = snapshot(&ours.path);
    assert_same(
        &format!("seed {seed} at the end"),
        &end,
        &snapshot(&kernel.path),
    );
    // The sequence must really change things, not just collect matching errors.
    assert!(
        succeeded > ops / 6,
        "only {succeeded} of {ops} operations succeeded"
    );
    assert!(end.len() > 10, "the tree ended nearly empty: {end:?}");
    ours.unmount(&rt);
    drop(kernel);
    assert_no_mounts_under(tmp.path());
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = strata_core::fsutil::mounts::unmount_all_under(&self.0);
    }
}

#[test]
fn random_operations_match_kernel_overlay_seed_1() {
    run(1, 3000);
}

#[test]
fn random_operations_match_kernel_overlay_seed_2() {
    run(2, 3000);
}

/// The same with every request through /dev/fuse, the path kernels without FUSE over io_uring
/// (and INIT, FORGET and INTERRUPT on every kernel) take.
#[test]
fn random_operations_match_kernel_overlay_over_dev_fuse() {
    run_with(3, 3000, false);
}
