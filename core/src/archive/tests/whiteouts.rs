//! Whiteouts, opaque directories, replacements and naive change detection.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

#[test]
fn whiteouts_in_both_modes() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("a")).unwrap();
            std::fs::create_dir_all(r.join("b/deep/er")).unwrap();
            std::fs::write(r.join("a/x"), b"x").unwrap();
            std::fs::write(r.join("a/y"), b"y").unwrap();
            std::fs::write(r.join("b/deep/er/z"), b"z").unwrap();
            std::fs::write(r.join("c"), b"c").unwrap();
        },
        |l| {
            std::fs::remove_file(l.join("a/x")).unwrap();
            // Timestamps are coarse (a jiffy): make the directory's change visible for sure.
            set_times(&l.join("a"), 1_111, 0);
            std::fs::remove_dir_all(l.join("b")).unwrap();
            std::fs::write(l.join("c"), b"C").unwrap();
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let find = |path: &str| {
        changes
            .iter()
            .find(|c| c.path == Path::new(path))
            .map(|c| c.kind)
    };
    assert_eq!(find("/a/x"), Some(ChangeKind::Delete));
    assert_eq!(find("/b"), Some(ChangeKind::Delete));
    assert_eq!(find("/b/deep"), None, "a deleted directory is listed alone");
    assert_eq!(
        find("/c"),
        Some(ChangeKind::Modify),
        "same size and mtime may differ: content"
    );
    assert_eq!(find("/a"), Some(ChangeKind::Modify));
    assert_eq!(find("/a/y"), None);
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let names = tar_names(&tar);
    assert!(
        names.contains(&b"a/.wh.x".to_vec()) && names.contains(&b".wh.b".to_vec()),
        "{names:?}"
    );
    p.check_full_apply(&tar);
    let u = p.upper(&tar);
    assert!(is_whiteout_device(&u.join("a/x")));
    assert!(is_whiteout_device(&u.join("b")));
    assert_eq!(std::fs::read(u.join("c")).unwrap(), b"C");
}

#[test]
fn opaque_directories_in_both_modes() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("d/sub")).unwrap();
            std::fs::write(r.join("d/x"), b"x").unwrap();
            std::fs::write(r.join("d/sub/y"), b"y").unwrap();
            std::fs::create_dir_all(r.join("keep")).unwrap();
            std::fs::write(r.join("keep/k"), b"k").unwrap();
        },
        |l| {
            std::fs::remove_dir_all(l.join("d")).unwrap();
            std::fs::create_dir_all(l.join("d")).unwrap();
            // `#` sorts before `.wh..wh..opq`: written before the marker, it must survive it.
            std::fs::write(l.join("d/#first"), b"1").unwrap();
            std::fs::write(l.join("d/zlast"), b"2").unwrap();
            set_times(&l.join("d"), 1_234_567_890, 42);
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let names = tar_names(&tar);
    assert!(names.contains(&b"d/.wh..wh..opq".to_vec()), "{names:?}");
    assert!(!names
        .iter()
        .any(|n| n.starts_with(b"d/.wh.x") || n.starts_with(b"d/.wh.sub")));
    assert!(!names.iter().any(|n| n.starts_with(b"keep")));
    // Without the parent tree the writer cannot know: individual whiteouts.
    let plain = tar_names(&diff_bytes(&p.layer, &changes, None));
    assert!(plain.contains(&b"d/.wh.x".to_vec()) && plain.contains(&b"d/.wh.sub".to_vec()));
    p.check_full_apply(&tar);
    let u = p.upper(&tar);
    let x = fsat::list_xattrs_at(fsat::open_root(&u).unwrap().as_fd(), c"d").unwrap();
    assert!(
        x.contains(&(b"trusted.overlay.opaque".to_vec(), b"y".to_vec())),
        "{x:?}"
    );
    assert_eq!(std::fs::read(u.join("d/#first")).unwrap(), b"1");
    assert_eq!(std::fs::read(u.join("d/zlast")).unwrap(), b"2");
    assert_eq!(
        std::fs::metadata(u.join("d")).unwrap().mtime(),
        1_234_567_890
    );
}

#[test]
fn opaque_marker_removes_only_what_the_tar_did_not_write() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("o/sub")).unwrap();
    std::fs::write(d.join("o/old"), b"").unwrap();
    std::fs::write(d.join("o/sub/old"), b"").unwrap();
    let tar = raw_tar(&[
        (b"o/".as_slice(), dir_meta(), b"".as_slice()),
        (b"o/sub/", dir_meta(), b""),
        (b"o/sub/new", file_meta(1), b"n"),
        (b"o/.wh..wh..opq", file_meta(0), b""),
    ]);
    apply_bytes(d, &tar, WhiteoutMode::Delete).unwrap();
    assert!(d.join("o/sub/new").exists());
    assert!(!d.join("o/old").exists());
    assert!(
        !d.join("o/sub/old").exists(),
        "a rewritten dir keeps only what the tar wrote in it"
    );
}

#[test]
fn replacing_entries_of_another_type() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::create_dir_all(d.join("was-dir/child")).unwrap();
    std::fs::write(d.join("was-file"), b"f").unwrap();
    std::fs::create_dir_all(d.join("keep")).unwrap();
    std::fs::write(d.join("keep/inside"), b"i").unwrap();
    std::os::unix::fs::symlink("/", d.join("was-link")).unwrap();
    let mut m = dir_meta();
    m.mode = 0o711;
    m.uid = 42;
    let tar = raw_tar(&[
        (b"was-dir".as_slice(), file_meta(3), b"now".as_slice()),
        (b"was-file/", dir_meta(), b""),
        (b"was-file/x", file_meta(1), b"x"),
        (b"keep/", m, b""),
        (b"was-link/", dir_meta(), b""),
    ]);
    apply_bytes(d, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(std::fs::read(d.join("was-dir")).unwrap(), b"now");
    assert_eq!(std::fs::read(d.join("was-file/x")).unwrap(), b"x");
    assert_eq!(std::fs::read(d.join("keep/inside")).unwrap(), b"i");
    let keep = std::fs::metadata(d.join("keep")).unwrap();
    assert_eq!((keep.mode() & 0o7777, keep.uid()), (0o711, 42));
    assert!(std::fs::symlink_metadata(d.join("was-link"))
        .unwrap()
        .is_dir());
}

#[test]
fn write_diff_refuses_names_that_look_like_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join(".wh.foo"), b"x").unwrap();
    let changes = naive_changes(t.path(), None).unwrap();
    let err = write_diff(&mut Vec::new(), t.path(), &changes, None).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)), "{err:?}");
    assert!(err.to_string().contains(".wh.foo"), "{err}");
}

#[test]
fn naive_changes_sees_metadata_and_content() {
    let p = pair(
        |r| {
            for n in ["content", "mode", "owner", "mtime", "xattr", "same"] {
                std::fs::write(r.join(n), b"1234").unwrap();
                set_times(&r.join(n), 1_000_000, 0);
            }
            std::os::unix::fs::symlink("aaaa", r.join("link")).unwrap();
            std::fs::create_dir_all(r.join("dirmode")).unwrap();
        },
        |l| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(l.join("content"))
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, b"9", 2).unwrap();
            drop(f);
            set_times(&l.join("content"), 1_000_000, 0);
            std::fs::set_permissions(l.join("mode"), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            lchown(&l.join("owner"), 5, 5);
            set_times(&l.join("mtime"), 1_000_000, 1);
            lsetxattr(&l.join("xattr"), "user.new", b"v");
            std::fs::remove_file(l.join("link")).unwrap();
            std::os::unix::fs::symlink("bbbb", l.join("link")).unwrap();
            std::fs::set_permissions(l.join("dirmode"), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        },
    );
    // Equalise the symlink and file mtimes so only the target / metadata under test differ.
    let pt = std::fs::symlink_metadata(p.parent.join("link")).unwrap();
    set_times(&p.layer.join("link"), pt.mtime(), pt.mtime_nsec() as u32);
    for n in ["mode", "owner", "xattr"] {
        set_times(&p.layer.join(n), 1_000_000, 0);
    }
    let dm = std::fs::metadata(p.parent.join("dirmode")).unwrap();
    set_times(&p.layer.join("dirmode"), dm.mtime(), dm.mtime_nsec() as u32);
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let paths: Vec<_> = changes
        .iter()
        .map(|c| (c.path.to_str().unwrap().to_string(), c.kind))
        .collect();
    let want: Vec<_> = [
        "/content", "/dirmode", "/link", "/mode", "/mtime", "/owner", "/xattr",
    ]
    .iter()
    .map(|s| (s.to_string(), ChangeKind::Modify))
    .collect();
    assert_eq!(paths, want);
}

/// Unmounts on drop, also when the test fails.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn naive_changes_does_not_descend_into_other_mounts() {
    let t = tempfile::tempdir().unwrap();
    let layer = t.path().join("layer");
    std::fs::create_dir_all(layer.join("mnt")).unwrap();
    std::fs::write(layer.join("f"), b"").unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &layer.join("mnt"),
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting a tmpfs needs root");
    let _guard = MountGuard(layer.join("mnt"));
    std::fs::write(layer.join("mnt/inside"), b"").unwrap();
    let changes = naive_changes(&layer, None).unwrap();
    let paths: Vec<_> = changes.iter().map(|c| c.path.clone()).collect();
    assert_eq!(paths, vec![PathBuf::from("/f"), PathBuf::from("/mnt")]);
}

#[test]
fn missing_parents_are_created_and_missing_whiteout_targets_are_fine() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let tar = raw_tar(&[
        (b"x/y/z".as_slice(), file_meta(2), b"zz".as_slice()),
        (b"nothere/.wh.gone", file_meta(0), b""),
        (b"x/.wh.gone", file_meta(0), b""),
    ]);
    let stats = apply_bytes(d, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(stats.content_bytes, 2);
    assert_eq!(std::fs::read(d.join("x/y/z")).unwrap(), b"zz");
    for p in ["x", "x/y"] {
        assert_eq!(
            std::fs::metadata(d.join(p)).unwrap().mode() & 0o7777,
            0o755,
            "{p}"
        );
    }
    assert!(
        !d.join("nothere").exists(),
        "a whiteout in a missing dir creates nothing"
    );
}

#[test]
fn an_empty_layer_is_fine() {
    let t = tempfile::tempdir().unwrap();
    let tar = raw_tar(&[]);
    let stats = apply_bytes(t.path(), &tar, WhiteoutMode::OverlayMarkers).unwrap();
    assert_eq!(stats.tar_bytes, 1024);
    assert_eq!(stats.content_bytes, 0);
    assert_eq!(stats.diff_id, sha(&tar));
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
    let mut out = Vec::new();
    write_diff(&mut out, t.path(), &[], None).unwrap();
    assert_eq!(out, tar, "an empty change list is two zero blocks");
}

#[test]
fn type_changes_between_parent_and_layer() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("was-dir/sub")).unwrap();
            std::fs::write(r.join("was-dir/sub/f"), b"f").unwrap();
            std::fs::write(r.join("was-file"), b"x").unwrap();
            std::os::unix::fs::symlink("target", r.join("was-link")).unwrap();
        },
        |l| {
            std::fs::remove_dir_all(l.join("was-dir")).unwrap();
            std::fs::write(l.join("was-dir"), b"now a file").unwrap();
            std::fs::remove_file(l.join("was-file")).unwrap();
            std::fs::create_dir_all(l.join("was-file")).unwrap();
            std::fs::write(l.join("was-file/inside"), b"i").unwrap();
            std::fs::remove_file(l.join("was-link")).unwrap();
            mknod(&l.join("was-link"), libc::S_IFIFO | 0o600, 0);
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let list: Vec<_> = changes
        .iter()
        .map(|c| (c.path.to_str().unwrap().to_owned(), c.kind))
        .collect();
    let want = vec![
        ("/was-dir".to_owned(), ChangeKind::Modify),
        ("/was-file".to_owned(), ChangeKind::Modify),
        ("/was-file/inside".to_owned(), ChangeKind::Add),
        ("/was-link".to_owned(), ChangeKind::Modify),
    ];
    assert_eq!(list, want);
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    p.check_full_apply(&tar);
    let u = p.upper(&tar);
    assert_eq!(std::fs::read(u.join("was-dir")).unwrap(), b"now a file");
    assert_eq!(std::fs::read(u.join("was-file/inside")).unwrap(), b"i");
}

#[test]
fn xattrs_the_filesystem_cannot_hold_fail_with_eopnotsupp() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("ramfs");
    std::fs::create_dir_all(&dest).unwrap();
    nix::mount::mount(
        Some("ramfs"),
        &dest,
        Some("ramfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mounting a ramfs needs root");
    let _guard = MountGuard(dest.clone());
    let mut meta = file_meta(1);
    meta.xattrs = vec![(b"user.test".to_vec(), b"v".to_vec())];
    let tar = raw_tar(&[(b"f".as_slice(), meta, b"x".as_slice())]);
    let err = apply_bytes(&dest, &tar, WhiteoutMode::Delete).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP), "{err}");
    assert!(err.to_string().contains("user.test"), "{err}");
    // Best effort (vfs.xattrs=i_want_broken_containers): the file lands without the xattr.
    let config = ApplyConfig {
        whiteouts: WhiteoutMode::Delete,
        best_effort_xattrs: true,
        diff_id: true,
    };
    let mut input: &[u8] = &tar;
    apply_layer_with(&dest, &mut input, &config).unwrap();
    assert_eq!(std::fs::read(dest.join("f")).unwrap(), b"x");
}

#[test]
fn deletions_below_a_replaced_directory_are_dropped() {
    // A native driver may list the children of a directory that became a file as deleted;
    // the file's own entry covers them and whiteouts inside a file could not be applied.
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("d")).unwrap();
            std::fs::write(r.join("d/child"), b"c").unwrap();
        },
        |l| {
            std::fs::remove_dir_all(l.join("d")).unwrap();
            std::fs::write(l.join("d"), b"file").unwrap();
        },
    );
    let changes = vec![
        Change {
            path: "/d".into(),
            kind: ChangeKind::Modify,
        },
        Change {
            path: "/d/child".into(),
            kind: ChangeKind::Delete,
        },
    ];
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    assert_eq!(tar_names(&tar), vec![b"d".to_vec()]);
    p.check_full_apply(&tar);
}

fn change_list(changes: &[Change]) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| (c.path.display().to_string(), c.kind))
        .collect()
}

#[test]
fn ancestors_of_a_change_are_modified_and_written() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("a/b/c")).unwrap();
            std::fs::write(r.join("a/b/c/f"), b"old").unwrap();
            std::fs::write(r.join("a/gone"), b"gone").unwrap();
            std::fs::set_permissions(r.join("a/b"), std::fs::Permissions::from_mode(0o700))
                .unwrap();
            std::fs::write(r.join("top"), b"top").unwrap();
        },
        |l| {
            let times: Vec<_> = ["a", "a/b", "a/b/c"]
                .iter()
                .map(|d| std::fs::symlink_metadata(l.join(d)).unwrap())
                .collect();
            std::fs::write(l.join("a/b/c/f"), b"new").unwrap();
            std::fs::remove_file(l.join("a/gone")).unwrap();
            // The directories' own stat stays as in the parent: only the rule lists them.
            for (d, m) in ["a", "a/b", "a/b/c"].iter().zip(times) {
                set_times(&l.join(d), m.mtime(), m.mtime_nsec() as u32);
            }
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    assert_eq!(
        change_list(&changes),
        vec![
            ("/a".to_string(), ChangeKind::Modify),
            ("/a/b".to_string(), ChangeKind::Modify),
            ("/a/b/c".to_string(), ChangeKind::Modify),
            ("/a/b/c/f".to_string(), ChangeKind::Modify),
            ("/a/gone".to_string(), ChangeKind::Delete),
        ]
    );
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    assert_eq!(
        tar_names(&tar),
        vec![
            b"a/".to_vec(),
            b"a/.wh.gone".to_vec(),
            b"a/b/".to_vec(),
            b"a/b/c/".to_vec(),
            b"a/b/c/f".to_vec(),
        ]
    );
    // A list without the ancestors (a driver's own) gives the same bytes.
    let bare: Vec<Change> = changes
        .iter()
        .filter(|c| c.path == Path::new("/a/b/c/f") || c.path == Path::new("/a/gone"))
        .cloned()
        .collect();
    assert_eq!(bare.len(), 2);
    assert_eq!(diff_bytes(&p.layer, &bare, Some(&p.parent)), tar);
    let mut again = bare.clone();
    add_ancestor_dirs(&mut again);
    assert_eq!(again, changes);
    p.check_full_apply(&tar);
}

#[test]
fn a_new_hard_link_to_an_unchanged_file_keeps_the_link_set() {
    let p = pair(
        |r| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::fs::write(r.join("etc/hosts"), b"127.0.0.1 localhost\n").unwrap();
        },
        |l| {
            std::fs::hard_link(l.join("etc/hosts"), l.join("etc/hosts.allow")).unwrap();
            std::fs::hard_link(l.join("etc/hosts"), l.join("hosts-at-root")).unwrap();
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    assert!(
        changes
            .iter()
            .any(|c| c.path == Path::new("/etc/hosts") && c.kind == ChangeKind::Modify),
        "{changes:?}"
    );
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let d = p._t.path().join("rebuilt");
    std::fs::create_dir_all(&d).unwrap();
    apply_bytes(&d, &p.parent_tar, WhiteoutMode::Delete).unwrap();
    apply_bytes(&d, &tar, WhiteoutMode::Delete).unwrap();
    let ino = |rel: &str| std::fs::symlink_metadata(d.join(rel)).unwrap().ino();
    assert_eq!(ino("etc/hosts"), ino("etc/hosts.allow"));
    assert_eq!(ino("etc/hosts"), ino("hosts-at-root"));
    assert_eq!(
        std::fs::symlink_metadata(d.join("etc/hosts"))
            .unwrap()
            .nlink(),
        3
    );
}
