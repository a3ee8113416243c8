//! Benchmark (not a test): `cargo bench -p strata-btrfs --features testing --bench layers`
//! (or drivers/btrfs/bench/bench.sh). Needs root, btrfs-progs, e2fsprogs and loop devices.
//!
//! In one run, on fresh loop filesystems:
//! 1. create of a read-write layer on a parent of 20,000 files / 300 MB: this driver versus
//!    the `btrfs subvolume snapshot` command on the same parent, versus the vfs driver (on the
//!    same btrfs, where it clones, and on ext4, where it copies), versus
//!    `cp -a --reflink=never`; and the same create on a one-file parent;
//! 2. usage of a layer with quotas on versus a `du` walk of it and versus this driver's walk.
//!
//! Prints medians and ratios against references measured in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_btrfs::qgroup;
use strata_btrfs::testing::LoopBtrfs;
use strata_core::registry::DriverConfig;
use strata_core::{CreateOpts, LayerDriver, LayerId, StorageOpts};

const FILES: usize = 20_000;
const TOTAL_BYTES: usize = 300 << 20;
const REPS: usize = 31;
const COPY_REPS: usize = 3;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// 20,000 files in 200 directories, 300 MB in all (sizes 0..30 KiB, deterministic content).
fn populate(dir: &Path) {
    let per_file = TOTAL_BYTES / FILES;
    let mut seed = 0x1234_5678u64;
    let mut buf = vec![0u8; per_file * 2];
    for b in buf.iter_mut() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *b = (seed >> 33) as u8;
    }
    for d in 0..200 {
        let sub = dir.join(format!("d{d:03}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..FILES / 200 {
            let i = d * (FILES / 200) + f;
            let len = (i * 7919) % (per_file * 2);
            let start = i % per_file;
            let len = len.min(buf.len() - start);
            std::fs::write(sub.join(format!("f{f:03}")), &buf[start..start + len]).unwrap();
        }
    }
    sh(Command::new("sync").arg("-f").arg(dir));
}

/// Medians of REPS creates of a read-write child of each parent through the driver and of as
/// many `btrfs subvolume snapshot SRC DST` commands, all four interleaved so that each sees
/// the same machine load and the same btrfs cleaner backlog.
async fn creates_vs_command(
    d: &dyn LayerDriver,
    parents: [(&LayerId, &Path); 2],
    scratch: &Path,
) -> [(Duration, Duration); 2] {
    let mut times = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
    for i in 0..REPS {
        for (k, (parent, parent_path)) in parents.iter().enumerate() {
            let child = id(&format!("{parent}-child-{i}"));
            let t = Instant::now();
            d.create(&child, Some(parent), &CreateOpts::read_write())
                .await
                .unwrap();
            times[k][0].push(t.elapsed());
            d.remove(&child).await.unwrap();

            let dst = scratch.join(format!("cli-snap-{parent}-{i}"));
            let t = Instant::now();
            sh(Command::new("btrfs")
                .args(["-q", "subvolume", "snapshot"])
                .arg(parent_path)
                .arg(&dst));
            times[k][1].push(t.elapsed());
            sh(Command::new("btrfs")
                .args(["-q", "subvolume", "delete"])
                .arg(&dst));
        }
    }
    times.map(|[ours, cli]| (median(ours), median(cli)))
}

struct Ext4 {
    dir: tempfile::TempDir,
}

impl Ext4 {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("strata-bench-ext4-")
            .tempdir()
            .unwrap();
        let img = dir.path().join("ext4.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img));
        std::fs::create_dir(dir.path().join("mnt")).unwrap();
        sh(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(dir.path().join("mnt")));
        Self { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.path()).status();
    }
}

async fn vfs_create(root: PathBuf) -> Duration {
    let vfs = strata_vfs::init(DriverConfig {
        root,
        options: StorageOpts::default(),
    })
    .await
    .unwrap();
    let base = id("vfs-base");
    vfs.create(&base, None, &CreateOpts::read_write())
        .await
        .unwrap();
    let dir = vfs.mount(&base, "").await.unwrap();
    populate(&dir);
    vfs.unmount(&base).await.unwrap();
    let mut times = Vec::new();
    for i in 0..COPY_REPS {
        let child = id(&format!("vfs-child-{i}"));
        let t = Instant::now();
        vfs.create(&child, Some(&base), &CreateOpts::read_write())
            .await
            .unwrap();
        times.push(t.elapsed());
        vfs.remove(&child).await.unwrap();
    }
    median(times)
}

fn cp_full_copy(src: &Path, scratch: &Path) -> Duration {
    let mut times = Vec::new();
    for i in 0..COPY_REPS {
        let dst = scratch.join(format!("cp-{i}"));
        let t = Instant::now();
        sh(Command::new("cp")
            .args(["-a", "--reflink=never"])
            .arg(src)
            .arg(&dst));
        times.push(t.elapsed());
        std::fs::remove_dir_all(&dst).unwrap();
    }
    median(times)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64())
}

#[tokio::main]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / nextest probing: nothing to list.
    }
    let fs = LoopBtrfs::with_size(16 << 30).expect("loop btrfs (root, btrfs-progs)");
    let driver: Arc<dyn LayerDriver> = Arc::new(
        strata_btrfs::open(fs.path().join("btrfs"), StorageOpts::default())
            .await
            .unwrap(),
    );
    let scratch = fs.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    // Parents: a 20,000-file / 300 MB image layer (read-only, as image layers are) and a
    // one-file one.
    let (big_rw, big, tiny) = (id("big-rw"), id("big"), id("tiny"));
    driver
        .create(&big_rw, None, &CreateOpts::read_write())
        .await
        .unwrap();
    let dir = driver.mount(&big_rw, "").await.unwrap();
    let t = Instant::now();
    populate(&dir);
    eprintln!(
        "populated {FILES} files / {} MB in {:.1} s",
        TOTAL_BYTES >> 20,
        t.elapsed().as_secs_f64()
    );
    driver.unmount(&big_rw).await.unwrap();
    driver
        .create(&big, Some(&big_rw), &CreateOpts::read_only())
        .await
        .unwrap();
    driver
        .create(&tiny, None, &CreateOpts::read_write())
        .await
        .unwrap();
    let tdir = driver.mount(&tiny, "").await.unwrap();
    std::fs::write(tdir.join("one"), b"1").unwrap();
    driver.unmount(&tiny).await.unwrap();
    let big_path = fs.path().join("btrfs/subvolumes/big");
    let tiny_path = fs.path().join("btrfs/subvolumes/tiny");

    // 1. create.
    let [(drv_big, cli_big), (drv_tiny, cli_tiny)] = creates_vs_command(
        driver.as_ref(),
        [(&big, &big_path), (&tiny, &tiny_path)],
        &scratch,
    )
    .await;
    let vfs_btrfs = vfs_create(fs.path().join("vfs")).await;
    let ext4 = Ext4::new();
    let vfs_ext4 = vfs_create(ext4.path().join("vfs")).await;
    let cp = cp_full_copy(&big_path, &scratch);

    println!("\n== create of a read-write layer (median; {REPS} runs, copies {COPY_REPS}) ==");
    println!("parent: {FILES} files / {} MB", TOTAL_BYTES >> 20);
    println!("  strata-btrfs create                 {:>12}", ms(drv_big));
    println!(
        "  `btrfs subvolume snapshot` command  {:>12}   driver/command = {}",
        ms(cli_big),
        ratio(drv_big, cli_big)
    );
    println!(
        "  strata-vfs create, same btrfs (clone) {:>10}   vfs/driver = {}",
        ms(vfs_btrfs),
        ratio(vfs_btrfs, drv_big)
    );
    println!(
        "  strata-vfs create, ext4 (copy)      {:>12}   vfs/driver = {}",
        ms(vfs_ext4),
        ratio(vfs_ext4, drv_big)
    );
    println!(
        "  cp -a --reflink=never (btrfs)       {:>12}   cp/driver = {}",
        ms(cp),
        ratio(cp, drv_big)
    );
    println!("parent: 1 file");
    println!(
        "  strata-btrfs create                 {:>12}   big/tiny = {}",
        ms(drv_tiny),
        ratio(drv_big, drv_tiny)
    );
    println!(
        "  `btrfs subvolume snapshot` command  {:>12}   driver/command = {}",
        ms(cli_tiny),
        ratio(drv_tiny, cli_tiny)
    );

    // 2. usage with quotas on versus walks. The container layer writes 2,000 files / 30 MB.
    qgroup::enable_quota(fs.path()).unwrap();
    let c = id("container");
    driver
        .create(&c, Some(&big), &CreateOpts::read_write())
        .await
        .unwrap();
    let cdir = driver.mount(&c, "").await.unwrap();
    for i in 0..2000 {
        std::fs::write(
            cdir.join(format!("d{:03}/new-{i}", i % 200)),
            vec![7u8; 15 << 10],
        )
        .unwrap();
    }
    let quiet = usage_vs_du(driver.as_ref(), &c, &cdir).await;
    let mut walk_times = Vec::new();
    for _ in 0..COPY_REPS {
        let t = Instant::now();
        strata_btrfs_walk(&cdir, &big_path);
        walk_times.push(t.elapsed());
    }
    let walk = median(walk_times);

    // Creates with quotas on, plain and with size= (the staged path); their removes leave the
    // cleaner a backlog of quota-accounted drops, which the next usage's commit meets.
    let sized =
        CreateOpts::read_write().with_storage_opts(StorageOpts::parse(&["size=1G"]).unwrap());
    let (mut plain_q, mut sized_q) = (Vec::new(), Vec::new());
    for i in 0..REPS {
        for (opts, times) in [
            (&CreateOpts::read_write(), &mut plain_q),
            (&sized, &mut sized_q),
        ] {
            let child = id(&format!("q-child-{i}"));
            let t = Instant::now();
            driver.create(&child, Some(&big), opts).await.unwrap();
            times.push(t.elapsed());
            driver.remove(&child).await.unwrap();
        }
    }
    let busy = usage_vs_du(driver.as_ref(), &c, &cdir).await;
    driver.unmount(&c).await.unwrap();

    let (plain_q, sized_q) = (median(plain_q), median(sized_q));
    println!("\n== create with quotas on (parent: {FILES} files) ==");
    println!(
        "  strata-btrfs create                 {:>12}   quotas-on/off = {}",
        ms(plain_q),
        ratio(plain_q, drv_big)
    );
    println!(
        "  strata-btrfs create, size=1G (staged, limit, rename) {:>8}   sized/plain = {}",
        ms(sized_q),
        ratio(sized_q, plain_q)
    );

    println!("\n== usage of a layer that wrote 2,000 files / 30 MB on the 20,000-file parent ==");
    for (label, (first, q, du, u)) in [
        ("quiet filesystem", quiet),
        ("right after 62 creates+removes with quotas on", busy),
    ] {
        println!("  {label}: {u:?}");
        println!(
            "    strata-btrfs usage, quotas on, first call {:>10}",
            ms(first)
        );
        println!("    strata-btrfs usage, quotas on (median) {:>13}", ms(q));
        println!(
            "    du -sx of the layer (median)        {:>12}   du/quota = {}",
            ms(du),
            ratio(du, q)
        );
    }
    println!(
        "  strata-btrfs usage, quotas off (walk vs parent) {:>8}   walk/quota(quiet) = {}",
        ms(walk),
        ratio(walk, quiet.1)
    );
}

/// The first `usage` (which commits what was written), then the medians of REPS `usage`
/// calls and REPS `du -sx` walks, interleaved.
async fn usage_vs_du(
    d: &dyn LayerDriver,
    layer: &LayerId,
    dir: &Path,
) -> (Duration, Duration, Duration, strata_core::Usage) {
    let t = Instant::now();
    let usage = d.usage(layer).await.unwrap();
    let first = t.elapsed();
    let (mut ours, mut du) = (Vec::new(), Vec::new());
    for _ in 0..REPS {
        let t = Instant::now();
        d.usage(layer).await.unwrap();
        ours.push(t.elapsed());
        let t = Instant::now();
        sh(Command::new("du").args(["-sx", "--block-size=1"]).arg(dir));
        du.push(t.elapsed());
    }
    (first, median(ours), median(du), usage)
}

/// The quotas-off path of `usage`: changes against the parent.
fn strata_btrfs_walk(layer: &Path, parent: &Path) {
    let changes = strata_core::archive::naive_changes(layer, Some(parent)).unwrap();
    assert!(!changes.is_empty());
}
