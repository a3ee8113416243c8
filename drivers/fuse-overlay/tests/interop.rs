//! Layers written through our mount read the same under kernel overlayfs, and the other way
//! round: the on-disk format (0/0 whiteouts, trusted.overlay.opaque) is shared.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

/// Two lower layers in overlay format: L2 whites out a file and a directory of L1 and has an
/// opaque directory.
fn make_lowers(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let l1 = root.join("l1");
    let l2 = root.join("l2");
    mkdirs(
        &l1,
        &[
            "etc",
            "usr/bin",
            "var/lib/app",
            "hidden-dir/sub",
            "opaque/old",
            "mv-dir/inner",
        ],
    );
    std::fs::write(l1.join("etc/passwd"), b"root:x:0:0\n").unwrap();
    std::fs::write(l1.join("etc/hosts"), b"127.0.0.1\n").unwrap();
    std::fs::hard_link(l1.join("etc/hosts"), l1.join("etc/hosts.link")).unwrap();
    std::fs::write(l1.join("usr/bin/tool"), vec![7u8; 100_000]).unwrap();
    std::fs::set_permissions(
        l1.join("usr/bin/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(l1.join("var/lib/app/data"), b"data").unwrap();
    std::fs::write(l1.join("hidden-file"), b"gone in l2").unwrap();
    std::fs::write(l1.join("hidden-dir/sub/x"), b"x").unwrap();
    std::fs::write(l1.join("opaque/old/y"), b"y").unwrap();
    std::fs::write(l1.join("mv-dir/inner/z"), b"z").unwrap();
    std::fs::write(l1.join("mv-file"), b"moving").unwrap();
    std::os::unix::fs::symlink("etc/passwd", l1.join("pw-link")).unwrap();
    set_xattr(&l1.join("etc/passwd"), "user.origin", b"l1");
    std::os::unix::fs::chown(l1.join("var/lib/app/data"), Some(1000), Some(1000)).unwrap();

    mkdirs(&l2, &["etc", "opaque/new"]);
    std::fs::write(l2.join("etc/passwd"), b"root:x:0:0\nuser:x:1000\n").unwrap();
    whiteout(&l2.join("hidden-file"));
    whiteout(&l2.join("hidden-dir"));
    set_xattr(&l2.join("opaque"), "trusted.overlay.opaque", b"y");
    std::fs::write(l2.join("opaque/new/n"), b"n").unwrap();
    (l1, l2)
}

/// The same changes, whichever overlay does them. Directory renames fall back to copy and
/// delete on EXDEV, as mv does (kernel overlay without redirect_dir refuses them).
fn change_things(m: &Path) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(m.join("etc/hosts"))
        .unwrap()
        .write_all_ext(b"10.0.0.1 box\n");
    std::fs::set_permissions(m.join("etc/passwd"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(m.join("usr/bin/tool"), Some(1), Some(1)).unwrap();
    std::fs::remove_file(m.join("var/lib/app/data")).unwrap();
    std::fs::remove_dir_all(m.join("opaque")).unwrap();
    std::fs::create_dir(m.join("opaque")).unwrap();
    std::fs::write(m.join("opaque/fresh"), b"fresh").unwrap();
    std::fs::rename(m.join("mv-file"), m.join("etc/moved-file")).unwrap();
    rename_dir(&m.join("mv-dir"), &m.join("usr/moved-dir"));
    std::fs::hard_link(m.join("etc/passwd"), m.join("passwd.hard")).unwrap();
    std::os::unix::fs::symlink("/nowhere", m.join("new-link")).unwrap();
    nix::unistd::mkfifo(
        &m.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    set_xattr(&m.join("usr/bin/tool"), "user.note", b"changed");
    std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("etc/hosts.link"))
        .unwrap()
        .set_len(3)
        .unwrap();
    std::fs::create_dir_all(m.join("brand/new/tree")).unwrap();
    std::fs::write(m.join("brand/new/tree/file"), b"new").unwrap();
    std::fs::remove_file(m.join("pw-link")).unwrap();
}

trait WriteAllExt {
    fn write_all_ext(self, data: &[u8]);
}

impl WriteAllExt for std::fs::File {
    fn write_all_ext(mut self, data: &[u8]) {
        std::io::Write::write_all(&mut self, data).unwrap();
    }
}

fn rename_dir(from: &Path, to: &Path) {
    match std::fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let status = std::process::Command::new("cp")
                .arg("-a")
                .arg(from)
                .arg(to)
                .status()
                .unwrap();
            assert!(status.success());
            std::fs::remove_dir_all(from).unwrap();
        }
        Err(e) => panic!("rename {}: {e}", from.display()),
    }
}

#[test]
fn written_by_us_reads_the_same_under_kernel_overlay() {
    let rt = runtime();
    let d = Dirs::new();
    let (l1, l2) = make_lowers(d.tmp.path());
    let ours = FuseOverlay::mount(&rt, &[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"));
    change_things(&ours.path);
    let seen_by_us = snapshot(&ours.path);
    ours.unmount(&rt);

    let kernel = KernelOverlay::mount(&[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"), "");
    let seen_by_kernel = snapshot(&kernel.path);
    drop(kernel);
    assert_same(
        "our mount vs kernel overlay on the same layers",
        &seen_by_us,
        &seen_by_kernel,
    );
    assert!(seen_by_us.contains_key(Path::new("opaque/fresh")));
    assert!(!seen_by_us.contains_key(Path::new("opaque/new")));
    assert!(!seen_by_us.contains_key(Path::new("hidden-file")));
    assert_no_mounts_under(d.tmp.path());
}

#[test]
fn written_by_kernel_overlay_reads_the_same_through_us() {
    let rt = runtime();
    let d = Dirs::new();
    let (l1, l2) = make_lowers(d.tmp.path());
    let kernel = KernelOverlay::mount(&[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"), "");
    change_things(&kernel.path);
    let seen_by_kernel = snapshot(&kernel.path);
    drop(kernel);

    let ours = FuseOverlay::mount(&rt, &[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"));
    let seen_by_us = snapshot(&ours.path);
    ours.unmount(&rt);
    assert_same(
        "kernel overlay vs our mount on the same layers",
        &seen_by_kernel,
        &seen_by_us,
    );
    assert_no_mounts_under(d.tmp.path());
}

#[test]
fn both_see_the_same_untouched_lowers() {
    let rt = runtime();
    let d = Dirs::new();
    let (l1, l2) = make_lowers(d.tmp.path());
    let ours = FuseOverlay::mount(&rt, &[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"));
    let a = snapshot(&ours.path);
    ours.unmount(&rt);
    let kernel = KernelOverlay::mount(&[&l2, &l1], &d.p("upper"), &d.p("work"), &d.p("mnt"), "");
    let b = snapshot(&kernel.path);
    drop(kernel);
    assert_same("fresh mounts", &a, &b);
    assert_eq!(
        a[Path::new("etc/passwd")].data,
        b"root:x:0:0\nuser:x:1000\n"
    );
}
