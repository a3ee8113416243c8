//! overlay2 against the raw kernel operations and GNU tar, in one run. Prints a table of
//! medians and ratios (see BENCHMARKS.md). Run as root: `drivers/overlay2/bench/bench.sh`.
//!
//! - create+mount+unmount of a read-write layer on a 1-deep and a 100-deep parent, versus
//!   mount(2)+umount2 of the same lowers with a fresh upper/work (Docker's relative `l/` paths);
//! - apply_diff of a 20,000-file, 300 MB layer versus `tar -xf` of the same tar;
//! - diff of that layer versus `tar -C diff -cf - .`, both read to the end by this process.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_core::fsutil::mounts;
use strata_core::{CreateOpts, LayerDriver, LayerId, StorageOpts};
use strata_overlay2::Overlay2Driver;
use tokio::io::AsyncReadExt;

const MOUNT_ROUNDS: usize = 200;
const TAR_FILES: usize = 20_000;
const TAR_BYTES: u64 = 300 << 20;
/// Rounds of the tar rows (`TAR_ROUNDS=N` changes it).
const TAR_ROUNDS: usize = 3;

struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(self.0.path());
    }
}

fn id(n: usize) -> LayerId {
    LayerId::new(format!("{n:064x}")).unwrap()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let base_dir = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let scratch = Scratch(tempfile::tempdir_in(&base_dir).unwrap());
    let root = scratch.0.path().join("overlay2");
    let d = strata_overlay2::open(root.clone(), &StorageOpts::default())
        .await
        .unwrap();
    let root = d.driver().root();
    println!("overlay2 benchmark in {}", root.display());
    let status = d.status().await.unwrap();
    for (k, v) in &status {
        println!("  {k}: {v}");
    }
    println!();
    println!("| operation | overlay2 | reference | ratio |");
    println!("|---|---|---|---|");

    // A 100-deep chain of image layers, each with one file.
    for n in 1..=100 {
        let parent = (n > 1).then(|| id(n - 1));
        d.create(&id(n), parent.as_ref(), &CreateOpts::read_only())
            .await
            .unwrap();
        std::fs::write(
            root.join(id(n).as_str()).join("diff").join(format!("f{n}")),
            b"x",
        )
        .unwrap();
    }
    let mut made = Vec::new();
    // ROWS=tar (or ROWS=mount) runs only those rows.
    let rows = std::env::var("ROWS").unwrap_or_else(|_| "mount tar".into());
    let depths: &[usize] = if rows.contains("mount") {
        &[1, 100]
    } else {
        &[]
    };
    for &depth in depths {
        made.extend(bench_mount(&d, &root, depth).await);
    }
    if rows.contains("mount") {
        bench_flush(&root);
    }
    for layer in made {
        d.remove(&layer).await.unwrap();
    }
    d.cleanup().await.unwrap();
    if rows.contains("tar") {
        bench_tar(scratch.0.path()).await;
    }
}

/// Creates, mounts and unmounts fresh rw layers on layer `depth` (which has `depth` layers in
/// its stack), against mount(2)+umount2 of the same lowers.
/// Returns the layers made, to be removed when all rows are done.
async fn bench_mount(d: &Overlay2Driver, root: &Path, depth: usize) -> Vec<LayerId> {
    let parent = id(depth);
    let mut driver_total = Vec::new();
    let mut driver_create = Vec::new();
    let mut driver_mount = Vec::new();
    let mut raw = Vec::new();
    let lowers = lower_links(root, depth);
    // Nothing is deleted until the row is done: on ext4 without a journal, inodes freed in the
    // last minute slow down every later allocation (see bench_tar).
    let mut made = Vec::new();
    for round in 0..MOUNT_ROUNDS {
        let layer = id(10_000 + depth * 1000 + round);
        let t0 = Instant::now();
        d.create(&layer, Some(&parent), &CreateOpts::read_write())
            .await
            .unwrap();
        let t1 = Instant::now();
        d.mount(&layer, "").await.unwrap();
        d.unmount(&layer).await.unwrap();
        let t2 = Instant::now();
        driver_total.push(t2 - t0);
        driver_create.push(t1 - t0);
        driver_mount.push(t2 - t1);
        made.push(layer);

        let raw_dir = root.join(format!("raw-bench-{depth}-{round}"));
        for sub in ["upper", "work", "merged"] {
            std::fs::create_dir_all(raw_dir.join(sub)).unwrap();
        }
        raw.push(raw_mount_umount(root, &lowers, &raw_dir));
    }
    let (total, create_only, mount_only, raw) = (
        median(driver_total),
        median(driver_create),
        median(driver_mount),
        median(raw),
    );
    println!(
        "| create+mount+unmount, rw on {depth}-deep parent | {} | {} (mount(2)+umount2) | {:.2}x |",
        ms(total),
        ms(raw),
        total.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "| mount+unmount only, rw on {depth}-deep parent | {} | {} (mount(2)+umount2) | {:.2}x |",
        ms(mount_only),
        ms(raw),
        mount_only.as_secs_f64() / raw.as_secs_f64()
    );
    println!(
        "| create only, rw on {depth}-deep parent | {} | {} (mount(2)+umount2) | {:.2}x |",
        ms(create_only),
        ms(raw),
        create_only.as_secs_f64() / raw.as_secs_f64()
    );
    made
}

/// What one durable write costs on this disk, whatever the code around it: create a small
/// file, write 26 bytes, fsync it (one device flush), against the same without the fsync.
fn bench_flush(root: &Path) {
    let dir = root.join("flush-bench");
    std::fs::create_dir(&dir).unwrap();
    let mut with = Vec::new();
    let mut without = Vec::new();
    for round in 0..MOUNT_ROUNDS {
        for (fsync, out) in [(true, &mut with), (false, &mut without)] {
            let path = dir.join(format!("{round}-{fsync}"));
            let t0 = Instant::now();
            let mut f = std::fs::File::create(&path).unwrap();
            f.write_all(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ").unwrap();
            if fsync {
                f.sync_all().unwrap();
            }
            out.push(t0.elapsed());
        }
    }
    let (with, without) = (median(with), median(without));
    println!(
        "| (device flush: create+write+fsync of a 26-byte file) | {} | {} (same without fsync) | {:.2}x |",
        ms(with),
        ms(without),
        with.as_secs_f64() / without.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `l/<short>` of layer `depth` and its ancestors, nearest first, as the driver stacks them.
fn lower_links(root: &Path, depth: usize) -> Vec<String> {
    (1..=depth)
        .rev()
        .map(|n| {
            let link = std::fs::read_to_string(root.join(id(n).as_str()).join("link")).unwrap();
            format!("l/{link}")
        })
        .collect()
}

/// mount(2) + umount2 of an rw overlay with relative paths from `root`, as Docker does it.
fn raw_mount_umount(root: &Path, lowers: &[String], dir: &Path) -> Duration {
    let rel = dir
        .strip_prefix(root)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let data = format!(
        "index=off,redirect_dir=off,metacopy=off,lowerdir={},upperdir={rel}/upper,workdir={rel}/work",
        lowers.join(":")
    );
    let data = CString::new(data).unwrap();
    let target = CString::new(dir.join("merged").as_os_str().as_bytes()).unwrap();
    std::env::set_current_dir(root).unwrap();
    let t0 = Instant::now();
    // SAFETY: valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            target.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    assert_eq!(rc, 0, "mount: {}", std::io::Error::last_os_error());
    // SAFETY: as above.
    let rc = unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    let elapsed = t0.elapsed();
    assert_eq!(rc, 0, "umount2: {}", std::io::Error::last_os_error());
    std::env::set_current_dir("/").unwrap();
    elapsed
}

/// A deterministic tar of `TAR_FILES` files (about `TAR_BYTES`) in 200 directories.
fn make_tar(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let avg = TAR_BYTES / TAR_FILES as u64;
    let buf = vec![0x5au8; (avg * 2) as usize];
    for dir in 0..200 {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, format!("d{dir:03}/"), std::io::empty())
            .unwrap();
    }
    for n in 0..TAR_FILES {
        let size = (next() % (avg * 2)) as usize;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(size as u64);
        h.set_cksum();
        b.append_data(&mut h, format!("d{:03}/f{n:05}", n % 200), &buf[..size])
            .unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
}

/// A journaled ext4 image, loop-mounted for the tar rows; unmounted (the loop device detaches
/// with it) and deleted on drop.
struct Ext4Image {
    image: PathBuf,
    mount_point: tempfile::TempDir,
}

impl Ext4Image {
    /// `mkfs.ext4` defaults (a journal, as the tar reference was measured on), inode
    /// tables and journal initialised now so that no lazy-init thread writes during the rows.
    fn new(in_dir: &Path) -> Self {
        let image = in_dir.join("tar-rows.ext4");
        let f = std::fs::File::create(&image).unwrap();
        f.set_len(8 << 30).unwrap();
        drop(f);
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image)
            .status()
            .unwrap();
        assert!(ok.success(), "mkfs.ext4 failed");
        let mount_point = tempfile::tempdir_in(in_dir).unwrap();
        let ok = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(mount_point.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount -o loop failed");
        Self { image, mount_point }
    }

    fn path(&self) -> &Path {
        self.mount_point.path()
    }
}

impl Drop for Ext4Image {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(self.mount_point.path());
        let _ = mounts::unmount(self.mount_point.path(), false);
        let _ = std::fs::remove_file(&self.image);
    }
}

fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

/// One timed step of a tar round.
#[derive(Clone, Copy)]
enum Step {
    Driver,
    Core,
    Gnu,
}

/// The tar rows, on a dedicated journaled ext4 (see [`Ext4Image`]). The root ext4 here has no
/// journal, and without one ext4's inode allocator skips every inode freed in the last ~60 s
/// one by one (find_inode_bit -> recently_deleted): a step measured right after a big delete
/// pays for it. A journaled ext4 has no such check, so each round's trees are deleted after
/// the round (untimed, then `sync`) and every round starts on the same, nearly empty
/// filesystem (left to fill up, later rounds ran up to 2x slower for all three appliers).
/// `sync` runs before every timed step, and the three appliers take turns at going first.
/// `TAR_ON_BENCH_DIR=1` runs the rows on BENCH_DIR itself instead (nothing is deleted there
/// until the end).
async fn bench_tar(scratch: &Path) {
    let image = (std::env::var_os("TAR_ON_BENCH_DIR").is_none()).then(|| Ext4Image::new(scratch));
    let base = image.as_ref().map_or(scratch, |i| i.path()).to_path_buf();
    let d = strata_overlay2::open(base.join("overlay2"), &StorageOpts::default())
        .await
        .unwrap();
    println!(
        "| (tar rows on {}, {}) | | | |",
        if image.is_some() {
            "a loop-mounted journaled ext4"
        } else {
            "BENCH_DIR"
        },
        strata_core::fsutil::filesystem_name(&base).unwrap()
    );
    let tar_path = base.join("layer.tar");
    make_tar(&tar_path);
    let tar_size = std::fs::metadata(&tar_path).unwrap().len();
    let mut ours_apply = Vec::new();
    let mut gnu_apply = Vec::new();
    let mut ours_diff = Vec::new();
    let mut gnu_diff = Vec::new();
    let mut core_apply = Vec::new();
    let mut layers = Vec::new();
    let on_image = image.is_some();
    let steps = [Step::Driver, Step::Core, Step::Gnu];
    let rounds = std::env::var("TAR_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(TAR_ROUNDS);
    for round in 0..rounds {
        let layer = id(90_000 + round);
        d.create(&layer, None, &CreateOpts::read_only())
            .await
            .unwrap();
        for i in 0..steps.len() {
            let step = steps[(i + round) % steps.len()];
            sync();
            match step {
                Step::Driver => {
                    let input = tokio::fs::File::open(&tar_path).await.unwrap();
                    let t0 = Instant::now();
                    d.apply_diff(&layer, None, Box::pin(input)).await.unwrap();
                    ours_apply.push(t0.elapsed());
                }
                Step::Core => {
                    // core's apply_layer alone, from a plain file (no async bridge, no driver).
                    let core_dir = base.join(format!("core{round}"));
                    std::fs::create_dir(&core_dir).unwrap();
                    let t0 = Instant::now();
                    let mut file = std::fs::File::open(&tar_path).unwrap();
                    strata_core::archive::apply_layer(
                        &core_dir,
                        &mut file,
                        &strata_core::archive::ApplyOptions {
                            whiteouts: strata_core::archive::WhiteoutMode::OverlayMarkers,
                        },
                    )
                    .unwrap();
                    core_apply.push(t0.elapsed());
                }
                Step::Gnu => {
                    let gnu_dir = base.join(format!("gnu{round}"));
                    std::fs::create_dir(&gnu_dir).unwrap();
                    let t0 = Instant::now();
                    let ok = Command::new("tar")
                        .arg("-C")
                        .arg(&gnu_dir)
                        .arg("-xf")
                        .arg(&tar_path)
                        .status()
                        .unwrap();
                    gnu_apply.push(t0.elapsed());
                    assert!(ok.success());
                }
            }
        }

        let mut buf = vec![0u8; 1 << 20];
        sync();
        let t0 = Instant::now();
        let mut stream = d.diff(&layer, None).await.unwrap();
        let mut total = 0u64;
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        ours_diff.push(t0.elapsed());
        assert!(total > TAR_BYTES / 2);

        let diff_dir = d.driver().root().join(layer.as_str()).join("diff");
        sync();
        let t0 = Instant::now();
        let mut child = Command::new("tar")
            .arg("-C")
            .arg(&diff_dir)
            .args(["-cf", "-", "."])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut total = 0u64;
        loop {
            let n = out.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        assert!(child.wait().unwrap().success());
        gnu_diff.push(t0.elapsed());
        assert!(total > TAR_BYTES / 2);
        if on_image {
            d.remove(&layer).await.unwrap();
            for dir in [format!("core{round}"), format!("gnu{round}")] {
                std::fs::remove_dir_all(base.join(dir)).unwrap();
            }
            sync();
        } else {
            layers.push(layer);
        }
    }
    let all = |v: &[Duration]| {
        v.iter()
            .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "| (every round, ms: apply_diff {}; apply_layer {}; tar -xf {}; diff {}; tar -cf {}) | | | |",
        all(&ours_apply),
        all(&core_apply),
        all(&gnu_apply),
        all(&ours_diff),
        all(&gnu_diff)
    );
    let gnu_apply = median(gnu_apply);
    let rows = [
        ("apply_diff", median(ours_apply), gnu_apply, "tar -xf"),
        (
            "(core::archive::apply_layer alone, from a file)",
            median(core_apply),
            gnu_apply,
            "tar -xf",
        ),
        (
            "diff",
            median(ours_diff),
            median(gnu_diff),
            "tar -C diff -cf - .",
        ),
    ];
    for (what, ours, gnu, reference) in rows {
        println!(
            "| {what} of {TAR_FILES} files, {} MB | {} | {} ({reference}) | {:.2}x |",
            tar_size >> 20,
            ms(ours),
            ms(gnu),
            ours.as_secs_f64() / gnu.as_secs_f64()
        );
    }
    for layer in layers {
        d.remove(&layer).await.unwrap();
    }
    d.cleanup().await.unwrap();
}
