//! copy_tree against `cp -a` on the same tree, in the same run.
//!
//! `cargo bench -p strata-vfs --bench copy` builds (once, then reuses) a tree of 200 dirs ×
//! 100 files of 1–29 KiB (~300 MB, the "small tree" of filesystem-limits-observed.md) under
//! $STRATA_BENCH_DIR (default /var/tmp/strata-copy-bench), then alternates `cp -a` and
//! copy_tree into fresh destinations on the same filesystem, source warm in the page cache.
//! Each timed copy starts after a sync and a pause, so one run's writeback and deletion do not
//! land on the next.
//! Prints each time, the medians and the speed ratio (cp time / copy_tree time; ≥ 1 = faster),
//! and the CPU time each spent (less disturbed than wall time on a busy machine).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use strata_core::fsutil::copy::copy_tree;

const DIRS: usize = 200;
const FILES_PER_DIR: usize = 100;
const ROUNDS: usize = 7;

fn main() {
    let base = std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/strata-copy-bench"));
    let src = base.join("src");
    build_tree_once(&base, &src);
    let (files, bytes) = tree_size(&src);
    println!(
        "tree: {files} files, {:.1} MB at {}",
        bytes as f64 / 1e6,
        src.display()
    );

    // Warm the source and the allocator: one untimed copy each way.
    timed_cp(&src, &base.join("warm"));
    remove(&base.join("warm"));
    copy_tree(&src, &base.join("warm")).expect("copy_tree");
    remove(&base.join("warm"));

    let mut cp_times = Vec::new();
    let mut ours_times = Vec::new();
    let mut cp_cpu = Vec::new();
    let mut ours_cpu = Vec::new();
    let dst = base.join("dst");
    for round in 0..ROUNDS {
        // Alternate which goes first so neither always gets the fresher cache.
        let order: [bool; 2] = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for use_cp in order {
            settle();
            if use_cp {
                let cpu0 = cpu_time(libc::RUSAGE_CHILDREN);
                let t = timed_cp(&src, &dst);
                let cpu = cpu_time(libc::RUSAGE_CHILDREN) - cpu0;
                println!(
                    "round {round}: cp -a      {:>8.3} s  (cpu {:.3} s)",
                    t.as_secs_f64(),
                    cpu.as_secs_f64()
                );
                cp_times.push(t);
                cp_cpu.push(cpu);
            } else {
                let cpu0 = cpu_time(libc::RUSAGE_SELF);
                let start = Instant::now();
                let stats = copy_tree(&src, &dst).expect("copy_tree");
                let t = start.elapsed();
                let cpu = cpu_time(libc::RUSAGE_SELF) - cpu0;
                println!(
                    "round {round}: copy_tree  {:>8.3} s  (cpu {:.3} s; {} files, {:?})",
                    t.as_secs_f64(),
                    cpu.as_secs_f64(),
                    stats.files,
                    stats.method
                );
                ours_times.push(t);
                ours_cpu.push(cpu);
            }
            remove(&dst);
        }
    }
    let cp = median(&mut cp_times);
    let ours = median(&mut ours_times);
    println!(
        "median: cp -a {:.3} s, copy_tree {:.3} s, speed ratio (cp/copy_tree) {:.2}x",
        cp.as_secs_f64(),
        ours.as_secs_f64(),
        cp.as_secs_f64() / ours.as_secs_f64()
    );
    let (cp_c, ours_c) = (median(&mut cp_cpu), median(&mut ours_cpu));
    println!(
        "median cpu (user+sys): cp -a {:.3} s, copy_tree {:.3} s, ratio (cp/copy_tree) {:.2}x",
        cp_c.as_secs_f64(),
        ours_c.as_secs_f64(),
        cp_c.as_secs_f64() / ours_c.as_secs_f64()
    );
}

/// User + system CPU time of this process (all threads) or of its waited-for children.
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: zeroed rusage is a valid out-buffer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::getrusage(who, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn timed_cp(src: &Path, dst: &Path) -> Duration {
    let start = Instant::now();
    let st = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp");
    assert!(st.success(), "cp -a failed");
    start.elapsed()
}

/// Writes back the previous run's copy and deletion (ext4 here mounts with `discard`, and
/// a delete's journal commit and trims would otherwise land on whichever copy runs next).
fn settle() {
    Command::new("sync").status().expect("run sync");
    std::thread::sleep(Duration::from_secs(3));
    Command::new("sync").status().expect("run sync");
}

fn remove(path: &Path) {
    if path.exists() {
        let st = Command::new("rm")
            .arg("-rf")
            .arg(path)
            .status()
            .expect("rm");
        assert!(st.success());
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Deterministic sizes and content (an LCG), so every run measures the same tree.
fn build_tree_once(base: &Path, src: &Path) {
    let marker = base.join("tree-complete");
    if marker.exists() {
        return;
    }
    remove(src);
    std::fs::create_dir_all(src).expect("mkdir bench dir");
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    let mut buf = vec![0u8; 29 * 1024];
    for d in 0..DIRS {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            let len = 1024 + (next() as usize % (28 * 1024));
            for chunk in buf[..len].chunks_mut(4) {
                let r = (next() as u32).to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
            std::fs::write(dir.join(format!("f{f:03}")), &buf[..len]).expect("write");
        }
    }
    std::fs::write(&marker, b"").expect("marker");
}

fn tree_size(root: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for d in std::fs::read_dir(root).expect("read") {
        let d = d.expect("entry").path();
        for f in std::fs::read_dir(&d).expect("read") {
            let m = f.expect("entry").metadata().expect("stat");
            files += 1;
            bytes += m.len();
        }
    }
    (files, bytes)
}
