//! Layer archive benchmark: our apply and diff against GNU tar on the same tree and tar, in the
//! same run (ratios, not absolute numbers, are what to compare across machines).
//!
//! `cargo bench -p strata-core --bench archive` (as root, GNU tar installed). Sizes:
//! STRATA_BENCH_FILES (default 20000), STRATA_BENCH_MB (300), STRATA_BENCH_ROUNDS (3),
//! STRATA_BENCH_DIR (default: the system temp dir).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use strata_core::archive::{self, ApplyOptions, WhiteoutMode};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift: incompressible, zero-free enough that no hole is made.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// `files` files in 100 directories, `total` bytes: 99% small (1..16 KiB), 1% share the rest.
fn build_tree(root: &Path, files: u64, total: u64) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let big = (files / 100).max(1);
    let small = files - big;
    let mut sizes: Vec<u64> = (0..small)
        .map(|_| 1024 + rng.next() % (15 * 1024))
        .collect();
    let used: u64 = sizes.iter().sum();
    let rest = total.saturating_sub(used) / big;
    sizes.extend((0..big).map(|_| rest));
    let mut buf = vec![0u8; rest.max(16 * 1024) as usize];
    let mut bytes = 0;
    for (i, size) in sizes.iter().enumerate() {
        let dir = root.join(format!("dir{:03}", i % 100));
        if i < 100 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        rng.fill(&mut buf[..*size as usize]);
        std::fs::write(dir.join(format!("file{i:06}")), &buf[..*size as usize]).unwrap();
        bytes += size;
    }
    bytes
}

fn syncfs(path: &Path) {
    let f = File::open(path).unwrap();
    // SAFETY: valid fd.
    unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) };
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

/// CPU seconds (user, system) used so far by this process or by its waited-for children.
fn cpu(who: libc::c_int) -> (f64, f64) {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: valid out pointer.
    unsafe { libc::getrusage(who, ru.as_mut_ptr()) };
    // SAFETY: getrusage filled it.
    let ru = unsafe { ru.assume_init() };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (s(ru.ru_utime), s(ru.ru_stime))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn gnu_tar(args: &[&str]) {
    let st = Command::new("tar").args(args).status().expect("GNU tar");
    assert!(st.success(), "tar {args:?}");
}

fn main() {
    let files = env_or("STRATA_BENCH_FILES", 20_000);
    let mb = env_or("STRATA_BENCH_MB", 300);
    let rounds = env_or("STRATA_BENCH_ROUNDS", 3) as usize;
    let base = std::env::var("STRATA_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    let work = tempfile::tempdir_in(&base).unwrap();
    let src = work.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let bytes = build_tree(&src, files, mb << 20);
    println!(
        "tree: {files} files, {:.0} MiB in {}",
        bytes as f64 / (1 << 20) as f64,
        work.path().display()
    );

    let ours_tar = work.path().join("ours.tar");
    let gnu_out = work.path().join("gnu.tar");
    let mut diff_t = Vec::new();
    let mut gnu_c_t = Vec::new();
    for _ in 0..rounds {
        diff_t.push(time(|| {
            let changes = archive::naive_changes(&src, None).unwrap();
            let mut out = BufWriter::new(File::create(&ours_tar).unwrap());
            archive::write_diff(&mut out, &src, &changes, None).unwrap();
            out.flush().unwrap();
        }));
        gnu_c_t.push(time(|| {
            gnu_tar(&[
                "-cf",
                gnu_out.to_str().unwrap(),
                "-C",
                src.to_str().unwrap(),
                ".",
            ])
        }));
    }

    if std::env::var_os("STRATA_BENCH_APPLY_ONLY").is_some() {
        // For profiling apply alone (perf record ...).
        for r in 0..rounds {
            let dest = work.path().join(format!("only{r}"));
            std::fs::create_dir_all(&dest).unwrap();
            let t = time(|| {
                let mut input = File::open(&ours_tar).unwrap();
                let opts = ApplyOptions {
                    whiteouts: WhiteoutMode::Delete,
                };
                archive::apply_layer(&dest, &mut input, &opts).unwrap();
            });
            println!("apply_layer round {r}: {:.3} s", t.as_secs_f64());
        }
        return;
    }

    // Nothing is deleted until the end: ext4 avoids reusing recently deleted inodes and makes
    // whoever creates files right after a mass deletion pay for scanning them. Who goes first
    // alternates between rounds.
    let mut apply_t = Vec::new();
    let mut gnu_x_t = Vec::new();
    let mut ours_dest_kept = None;
    for r in 0..rounds {
        let dest = work.path().join(format!("ours{r}"));
        let gdest = work.path().join(format!("gnu{r}"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&gdest).unwrap();
        let ours = || {
            syncfs(work.path());
            let before = cpu(libc::RUSAGE_SELF);
            let t = time(|| {
                let mut input = File::open(&ours_tar).unwrap();
                let opts = ApplyOptions {
                    whiteouts: WhiteoutMode::Delete,
                };
                archive::apply_layer(&dest, &mut input, &opts).unwrap();
            });
            let after = cpu(libc::RUSAGE_SELF);
            println!(
                "  round {r}: apply_layer {:.2} s wall, {:.2} s user, {:.2} s sys",
                t.as_secs_f64(),
                after.0 - before.0,
                after.1 - before.1
            );
            t
        };
        let gnu = || {
            syncfs(work.path());
            let before = cpu(libc::RUSAGE_CHILDREN);
            let t = time(|| {
                gnu_tar(&[
                    "-xf",
                    ours_tar.to_str().unwrap(),
                    "-C",
                    gdest.to_str().unwrap(),
                ])
            });
            let after = cpu(libc::RUSAGE_CHILDREN);
            println!(
                "  round {r}: GNU tar -xf {:.2} s wall, {:.2} s user, {:.2} s sys",
                t.as_secs_f64(),
                after.0 - before.0,
                after.1 - before.1
            );
            t
        };
        if r % 2 == 0 {
            apply_t.push(ours());
            gnu_x_t.push(gnu());
        } else {
            gnu_x_t.push(gnu());
            apply_t.push(ours());
        }
        ours_dest_kept = Some(dest);
    }

    // Same content everywhere: naive_changes has to compare every byte.
    let copy = ours_dest_kept.unwrap();
    let mut changes_t = Vec::new();
    for _ in 0..rounds {
        changes_t.push(time(|| {
            let c = archive::naive_changes(&copy, Some(&src)).unwrap();
            assert!(c.is_empty(), "{} unexpected changes", c.len());
        }));
    }

    let row = |name: &str, ours: &[Duration], reference: Option<(&str, &[Duration])>| {
        let secs = |v: &[Duration]| {
            v.iter()
                .map(|d| format!("{:.2}", d.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "  rounds: ours [{}]{}",
            secs(ours),
            reference
                .map(|(n, r)| format!(" {n} [{}]", secs(r)))
                .unwrap_or_default()
        );
        let m = median(ours.to_vec());
        let mbps = bytes as f64 / (1 << 20) as f64 / m.as_secs_f64();
        match reference {
            Some((rname, r)) => {
                let rm = median(r.to_vec());
                println!(
                    "{name:<34} {:>8.3} s {mbps:>7.0} MiB/s | {rname:<14} {:>8.3} s | ratio ours/ref {:.2}",
                    m.as_secs_f64(),
                    rm.as_secs_f64(),
                    m.as_secs_f64() / rm.as_secs_f64()
                );
            }
            None => println!("{name:<34} {:>8.3} s {mbps:>7.0} MiB/s", m.as_secs_f64()),
        }
    };
    println!("median of {rounds} rounds (page cache warm, no fsync on either side):");
    row(
        "apply_layer (our tar)",
        &apply_t,
        Some(("GNU tar -xf", &gnu_x_t)),
    );
    row(
        "naive_changes + write_diff",
        &diff_t,
        Some(("GNU tar -cf", &gnu_c_t)),
    );
    row("naive_changes vs identical copy", &changes_t, None);
}
