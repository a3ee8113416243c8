//! A full disk (issue 19): with the data root on a small ext4 filled to the last block, API
//! calls that need space fail with ENOSPC in their message and change nothing; what is stored
//! stays whole; the daemon restarts on the full disk and serves what a user needs to free
//! space (`system df`, `rm`, `rmi`, `volume rm`, `prune`).
//!
//! On a89d5c7 it failed four ways: `load` answered a broken pipe (the daemon stopped reading
//! the upload when the disk filled), a failed commit removed its parent layer from under the
//! image (its reference was given back twice), the daemon did not start (overlay2's start-up
//! probe could not write), and `system prune` stopped at `POST /networks/prune` (501).

#[path = "common/loop_ext4.rs"]
mod loop_ext4;
#[path = "common/stratad.rs"]
mod stratad;

use std::io::Write;

use loop_ext4::{make_ext4, LoopMount};
use stratad::Stratad;

const IMAGE_SIZE: u64 = 128 << 20;
const ENOSPC_TEXT: &str = "no space left on device";

/// Writes a file until the filesystem refuses with ENOSPC (as root, so the reserved blocks go
/// too).
fn fill(path: &std::path::Path) {
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0xa5u8; 1 << 20];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // Smaller writes take the last partial blocks.
    for size in [64 << 10, 4 << 10, 512] {
        while f.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = f.sync_all();
}

/// Runs a call that may need space: it succeeds, or fails naming ENOSPC, never another error.
fn needs_space(d: &Stratad, args: &[&str]) -> bool {
    let out = d.docker(args);
    if out.status.success() {
        return true;
    }
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        err.contains(ENOSPC_TEXT),
        "docker {args:?} on a full disk failed without naming ENOSPC: {err}\n--- daemon log ---\n{}",
        d.log()
    );
    false
}

fn ids(d: &Stratad) -> String {
    d.ok(&["image", "ls", "-q", "--no-trunc"])
}

#[test]
fn a_full_disk_fails_cleanly_and_the_daemon_still_frees_space() {
    let dir = tempfile::Builder::new()
        .prefix("strata-fulldisk-")
        .tempdir()
        .unwrap();
    let image = dir.path().join("disk.img");
    make_ext4(&image, IMAGE_SIZE);
    let mnt = LoopMount::attach(&image, &dir.path().join("mnt"));
    let mut d = Stratad::start_on(&mnt.path().join("root"), Some("overlay2"));
    d.load_busybox();
    d.ok(&["run", "--name", "keep", "--pull", "never", "bb", "true"]);
    d.ok(&[
        "create", "--name", "later", "--pull", "never", "bb", "sleep", "300",
    ]);
    d.ok(&["volume", "create", "vkeep"]);
    d.ok(&["tag", "bb", "kept:tag"]);
    let images_before = ids(&d);
    let bb_id = d.ok(&["image", "inspect", "-f", "{{.Id}}", "bb"]);

    fill(&mnt.path().join("filler"));

    let fixtures = stratad::fixtures();
    let three = fixtures.join("three.tar");
    let mut refused = 0;
    for args in [
        vec!["load", "-i", three.to_str().unwrap()],
        vec!["create", "--name", "new", "--pull", "never", "bb", "true"],
        vec!["volume", "create", "vnew"],
        vec!["tag", "bb", "new:tag"],
        vec!["commit", "keep", "committed"],
        vec!["run", "--name", "ran", "--pull", "never", "bb", "true"],
    ] {
        if !needs_space(&d, &args) {
            refused += 1;
        }
    }
    assert!(
        refused >= 3,
        "a full disk refused only {refused} of 6 calls"
    );
    // A start is all or nothing: if its record cannot be written, the process is gone too.
    let started = needs_space(&d, &["start", "later"]);
    eprintln!(
        "full disk: start of a created container {}",
        if started { "succeeded" } else { "was refused" }
    );
    let state = d.ok(&[
        "inspect",
        "-f",
        "{{.State.Running}} {{.State.Pid}}",
        "later",
    ]);
    if started {
        assert!(state.starts_with("true"), "{state}");
        d.ok(&["kill", "later"]);
    } else {
        assert_eq!(
            state.trim(),
            "false 0",
            "a failed start left the container running"
        );
    }
    // What was stored is whole and still served.
    assert_eq!(d.ok(&["image", "inspect", "-f", "{{.Id}}", "bb"]), bb_id);
    d.ok(&["image", "inspect", "kept:tag"]);
    d.ok(&["volume", "inspect", "vkeep"]);
    d.ok(&["inspect", "keep"]);

    // A restart on the full disk: the daemon starts and serves what frees space.
    d.stop();
    d.spawn();
    assert!(ids(&d).lines().count() >= images_before.lines().count());
    d.ok(&["system", "df"]);
    d.ok(&["system", "df", "-v"]);
    d.ok(&["rm", "-f", "keep"]);
    for name in ["ran", "new"] {
        let _ = d.docker(&["rm", "-f", name]);
    }
    d.ok(&["volume", "rm", "vkeep"]);
    let _ = d.docker(&["volume", "rm", "vnew"]);
    d.ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(ids(&d).trim(), "", "prune -a left images");

    // With space back, everything works again.
    std::fs::remove_file(mnt.path().join("filler")).unwrap();
    d.load_busybox();
    d.ok(&["run", "--rm", "--pull", "never", "bb", "true"]);
    drop(d);
}
