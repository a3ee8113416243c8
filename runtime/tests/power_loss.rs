//! Power loss, simulated (issue 19): the data root lives on a journaled ext4 image that is
//! loop-mounted through a write recorder (see `power_loss/recorder.rs`). The daemon loads an
//! image, creates a volume, commits a container and tags; the test notes the recorder's
//! position at each acknowledgement. Then, for flush points around each acknowledgement and
//! for random subsets of the writes issued after a flush (a disk may persist any of them),
//! the image is rebuilt as the power cut would have left it, checked with `fsck`, mounted,
//! and a daemon is started on it. It must start; every object acknowledged before the cut
//! must be whole (an image's save verifies its id and every layer against its diffID); and
//! whatever else it lists must be whole too: nothing half-made is served.
//!
//! `STRATA_POWERLOSS_CASES` adds that many random cut points (default 4); `STRATA_FUZZ_SEED`
//! picks them (printed on failure).

#[path = "common/loop_ext4.rs"]
mod loop_ext4;
#[path = "common/stratad.rs"]
mod stratad;

#[path = "power_loss/recorder.rs"]
mod recorder;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use loop_ext4::{make_ext4, LoopMount};
use recorder::{Event, Log, Recorder};
use sha2::{Digest, Sha256};
use stratad::Stratad;

const IMAGE_SIZE: u64 = 256 << 20;

/// What the daemon acknowledged, and the recorder's position when it did.
struct Acked {
    what: &'static str,
    at: usize,
    check: Expect,
}

enum Expect {
    Image { name: &'static str, id: String },
    Volume { name: &'static str },
}

/// Drives the daemon through the acknowledged operations while the recorder logs.
fn record(base: &Path, dir: &Path) -> (Log, Vec<Acked>) {
    let live = dir.join("live.img");
    std::fs::copy(base, &live).unwrap();
    let fuse_dir = dir.join("fuse");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&fuse_dir).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let rec = Recorder::serve(&live, &fuse_dir, &dir.join("log.data"));
    let mut acked = Vec::new();
    {
        let _mounted = LoopMount::attach(&rec.disk(), &mnt);
        let mut d = Stratad::start_on(&mnt.join("root"), Some("overlay2"));
        d.load_busybox();
        let id = |name: &str| {
            d.ok(&["image", "inspect", "-f", "{{.Id}}", name])
                .trim()
                .to_string()
        };
        acked.push(Acked {
            what: "load bb",
            at: rec.position(),
            check: Expect::Image {
                name: "bb:latest",
                id: id("bb"),
            },
        });
        d.ok(&["volume", "create", "--label", "k=v", "plvol"]);
        acked.push(Acked {
            what: "volume create",
            at: rec.position(),
            check: Expect::Volume { name: "plvol" },
        });
        d.ok(&[
            "run",
            "--name",
            "c1",
            "--pull",
            "never",
            "bb",
            "sh",
            "-c",
            "echo hello > /hello",
        ]);
        d.ok(&["commit", "c1", "plcommit"]);
        acked.push(Acked {
            what: "commit",
            at: rec.position(),
            check: Expect::Image {
                name: "plcommit:latest",
                id: id("plcommit"),
            },
        });
        d.ok(&["tag", "bb", "pltag"]);
        acked.push(Acked {
            what: "tag",
            at: rec.position(),
            check: Expect::Image {
                name: "pltag:latest",
                id: id("bb"),
            },
        });
        // The power cut: nothing after the last acknowledgement matters.
        d.kill();
    }
    (rec.finish(), acked)
}

/// A cut: the first `cut` events are durable, and of the writes between it and the next
/// flush, those in `extra` reached the disk too.
#[derive(Debug, Clone)]
struct Cut {
    cut: usize,
    extra: Vec<usize>,
}

/// Cuts at the flushes around each acknowledgement plus `random` more, each with a random
/// subset of the writes that followed its flush.
fn cuts(log: &Log, acked: &[Acked], random: usize, rng: &mut fastrand::Rng) -> Vec<Cut> {
    let flushes = log.flushes();
    assert!(
        !flushes.is_empty(),
        "the recorder saw no flush: the filesystem's flushes do not reach it"
    );
    let mut points = Vec::new();
    for a in acked {
        // Just before the acknowledgement (the object may be half made) and just after it.
        if let Some(f) = flushes.iter().rev().find(|f| **f < a.at) {
            points.push(*f + 1);
        }
        if let Some(f) = flushes.iter().find(|f| **f >= a.at) {
            points.push(*f + 1);
        }
    }
    for _ in 0..random {
        points.push(flushes[rng.usize(..flushes.len())] + 1);
    }
    points.sort_unstable();
    points.dedup();
    points
        .into_iter()
        .map(|cut| {
            let next_flush = flushes
                .iter()
                .copied()
                .find(|f| *f >= cut)
                .unwrap_or(log.events.len());
            let extra = (cut..next_flush)
                .filter(|i| matches!(log.events[*i], Event::Write { .. }) && rng.bool())
                .collect();
            Cut { cut, extra }
        })
        .collect()
}

/// Saves image `id` and checks the archive: the config hashes to the id and every layer to
/// its diffID.
fn verify_image(d: &Stratad, id: &str, dir: &Path) {
    let out = dir.join("saved.tar");
    d.ok(&["save", "-o", out.to_str().unwrap(), id]);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Docker's layout links `<config>.json` and `<layer>/layer.tar` to the blobs.
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type().is_symlink() {
            let target = entry.link_name().unwrap().unwrap();
            links.insert(path, target.to_string_lossy().into_owned());
            continue;
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.insert(path, data);
    }
    let read = |path: &str| -> &Vec<u8> {
        let resolved = match links.get(path) {
            Some(target) => {
                let parent = Path::new(path).parent().unwrap_or(Path::new(""));
                let mut parts: Vec<String> = Vec::new();
                for part in parent.join(target).components() {
                    match part {
                        std::path::Component::ParentDir => drop(parts.pop()),
                        c => parts.push(c.as_os_str().to_string_lossy().into_owned()),
                    }
                }
                parts.join("/")
            }
            None => path.to_string(),
        };
        files
            .get(&resolved)
            .unwrap_or_else(|| panic!("{path} (-> {resolved}) is not in the saved archive"))
    };
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let config_path = manifest[0]["Config"].as_str().unwrap();
    let config = read(config_path);
    let sha = |b: &[u8]| format!("sha256:{}", hex::encode(Sha256::digest(b)));
    assert_eq!(
        sha(config),
        id,
        "the saved config does not hash to the image id"
    );
    let config: serde_json::Value = serde_json::from_slice(config).unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    for (layer, diff_id) in layers.iter().zip(diff_ids) {
        let bytes = read(layer.as_str().unwrap());
        assert_eq!(
            &sha(bytes),
            diff_id,
            "layer {layer} of {id} is not its diffID"
        );
    }
    std::fs::remove_file(out).unwrap();
}

/// Rebuilds the image for one cut and checks what a daemon started on it serves.
fn check_cut(base: &Path, log: &Log, cut: &Cut, acked: &[Acked], dir: &Path) {
    let image = dir.join("cut.img");
    recorder::rebuild(base, log, cut.cut, &cut.extra, &image);
    let fsck = Command::new("fsck.ext4")
        .args(["-f", "-y"])
        .arg(&image)
        .output()
        .expect("fsck.ext4");
    // 0: clean, 1: errors corrected (a replayed journal counts). Anything else: the cut left
    // a filesystem the journal could not make whole, which a real disk would not.
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "fsck after cut {cut:?}: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let mnt = dir.join("mnt");
    let _mounted = LoopMount::attach(&image, &mnt);
    let d = Stratad::start_on(&mnt.join("root"), Some("overlay2"));
    for a in acked.iter().filter(|a| a.at <= cut.cut) {
        match &a.check {
            Expect::Image { name, id } => {
                let got = d.ok(&["image", "inspect", "-f", "{{.Id}}", name]);
                assert_eq!(got.trim(), id, "{} acknowledged before cut {cut:?}", a.what);
            }
            Expect::Volume { name } => {
                let labels = d.ok(&["volume", "inspect", "-f", "{{.Labels.k}}", name]);
                assert_eq!(
                    labels.trim(),
                    "v",
                    "{} acknowledged before cut {cut:?}",
                    a.what
                );
            }
        }
    }
    // Everything listed, acknowledged or not, is whole.
    let ids = d.ok(&["image", "ls", "-q", "--no-trunc"]);
    for id in ids.lines().map(str::trim).filter(|l| !l.is_empty()) {
        verify_image(&d, id, dir);
    }
    d.ok(&["volume", "ls"]);
    d.ok(&["ps", "-a"]);
    drop(d);
    drop(_mounted);
    std::fs::remove_file(image).unwrap();
}

#[test]
fn acknowledged_objects_survive_power_loss_and_nothing_torn_is_served() {
    let dir = tempfile::Builder::new()
        .prefix("strata-powerloss-")
        .tempdir()
        .unwrap();
    let base = dir.path().join("base.img");
    make_ext4(&base, IMAGE_SIZE);
    let (log, acked) = record(&base, dir.path());
    let seed = std::env::var("STRATA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let random = std::env::var("STRATA_POWERLOSS_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    for a in &acked {
        eprintln!("power loss: {} acknowledged at event {}", a.what, a.at);
    }
    let mut rng = fastrand::Rng::with_seed(seed);
    let cuts = cuts(&log, &acked, random, &mut rng);
    eprintln!(
        "power loss: {} events, {} flushes, {} cuts, seed {seed}",
        log.events.len(),
        log.flushes().len(),
        cuts.len()
    );
    for cut in &cuts {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_cut(&base, &log, cut, &acked, dir.path())
        }));
        if let Err(e) = result {
            if std::env::var_os("STRATA_POWERLOSS_KEEP").is_some() {
                let kept = std::path::Path::new("/tmp/strata-powerloss-failed.img");
                recorder::rebuild(&base, &log, cut.cut, &cut.extra, kept);
                eprintln!(
                    "power loss: the failing image is kept at {}",
                    kept.display()
                );
            }
            eprintln!("power loss: cut {cut:?} failed (STRATA_FUZZ_SEED={seed})");
            std::panic::resume_unwind(e);
        }
    }
}
