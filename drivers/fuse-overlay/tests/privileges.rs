//! Set-user-ID and set-group-ID bits across writes, truncates and chowns: the mount asks the
//! kernel for FUSE_HANDLE_KILLPRIV_V2, so clearing them is our job. The same operations, by
//! root and by an unprivileged user, on kernel overlayfs and on our mount leave the same modes,
//! and the modes the VFS rules give.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::*;

const USER: u32 = 4242;

/// (file, mode in the lower layer, what is done to it, mode afterwards)
const CASES: &[(&str, u32, &str, u32)] = &[
    ("suid-append", 0o4777, "user-append", 0o777),
    ("sgid-exec-append", 0o2777, "user-append", 0o777),
    // Not group-executable: cleared for a writer outside the file's group (root's), kept
    // for one in it.
    ("sgid-noexec-append", 0o2767, "user-append", 0o767),
    (
        "sgid-noexec-own-group-append",
        0o2767,
        "user-append",
        0o2767,
    ),
    ("suid-root-append", 0o4777, "root-append", 0o4777),
    ("suid-open-trunc", 0o4777, "user-open-trunc", 0o777),
    ("suid-truncate", 0o4777, "user-truncate", 0o777),
    ("suid-root-truncate", 0o4777, "root-truncate", 0o4777),
    ("suid-chown", 0o4755, "root-chown", 0o755),
    ("big-suid-append", 0o4777, "user-append", 0o777),
    ("plain-append", 0o666, "user-append", 0o666),
];

fn run(path: &Path, action: &str) {
    let p = path.display().to_string();
    let (user, script) = match action {
        "user-append" => (true, format!("printf x >> '{p}'")),
        "root-append" => (false, format!("printf x >> '{p}'")),
        "user-open-trunc" => (true, format!(": > '{p}'")),
        "user-truncate" => (true, format!("truncate -s 1 '{p}'")),
        "root-truncate" => (false, format!("truncate -s 1 '{p}'")),
        "root-chown" => (false, format!("chown {USER}:{USER} '{p}'")),
        other => panic!("unknown action {other}"),
    };
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(&script);
    if user {
        cmd.uid(USER).gid(USER);
    }
    let status = cmd.status().expect("sh");
    assert!(status.success(), "{action} on {p} failed");
}

fn make_lower(l1: &Path) {
    std::fs::create_dir_all(l1).unwrap();
    for (name, mode, _, _) in CASES {
        let size = if name.starts_with("big") { 2 << 20 } else { 10 };
        std::fs::write(l1.join(name), vec![b'a'; size]).unwrap();
        if name.contains("own-group") {
            std::os::unix::fs::chown(l1.join(name), None, Some(USER)).unwrap();
        }
        std::fs::set_permissions(l1.join(name), std::fs::Permissions::from_mode(*mode)).unwrap();
    }
}

/// Applies every case through the mount at `m` and returns the resulting modes.
fn apply(m: &Path) -> Vec<(String, u32)> {
    // A file made through the mount with set-user-ID, then written by the user.
    let made = m.join("made-suid");
    std::fs::write(&made, b"abc").unwrap();
    std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o4777)).unwrap();
    run(&made, "user-append");
    let mut out = vec![(
        "made-suid".to_string(),
        std::fs::metadata(&made).unwrap().mode() & 0o7777,
    )];
    for (name, _, action, _) in CASES {
        run(&m.join(name), action);
        let mode = std::fs::metadata(m.join(name)).unwrap().mode() & 0o7777;
        out.push((name.to_string(), mode));
    }
    out
}

#[test]
fn setuid_and_setgid_bits_are_cleared_as_the_kernel_clears_them() {
    let rt = runtime();
    let d = Dirs::new();
    let base = d.tmp.path();
    // The unprivileged user must be able to reach the mounts.
    std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o755)).unwrap();
    make_lower(&base.join("l1"));
    mkdirs(base, &["ku", "kw", "kmnt", "fu", "fw", "fmnt"]);

    let kernel = KernelOverlay::mount(
        &[&base.join("l1")],
        &base.join("ku"),
        &base.join("kw"),
        &base.join("kmnt"),
        "",
    );
    let by_kernel = apply(&kernel.path);
    drop(kernel);

    let ours = FuseOverlay::mount(
        &rt,
        &[&base.join("l1")],
        &base.join("fu"),
        &base.join("fw"),
        &base.join("fmnt"),
    );
    let by_us = apply(&ours.path);
    ours.unmount(&rt);

    assert_eq!(by_us, by_kernel, "modes differ from kernel overlayfs");
    assert_eq!(by_us[0], ("made-suid".to_string(), 0o777));
    for ((name, _, action, want), (got_name, got)) in CASES.iter().zip(&by_us[1..]) {
        assert_eq!(name, got_name);
        assert_eq!(*got, *want, "{name} after {action}: {got:o}, want {want:o}");
    }
    // The user's appends landed (the writes were not lost on the way).
    assert_eq!(
        std::fs::read(base.join("fu/plain-append")).unwrap(),
        b"aaaaaaaaaax"
    );
    assert_no_mounts_under(base);
}
