//! Hostile tars: nothing outside dest may change.

use std::os::unix::ffi::OsStrExt;

use super::*;

#[test]
fn hostile_dotdot_is_refused() {
    let s = Sandbox::new();
    let tar = raw_tar(&[(b"../sentinel".as_slice(), file_meta(4), b"evil".as_slice())]);
    s.refuses(&tar, WhiteoutMode::Delete, "../sentinel");
    let tar = raw_tar(&[(
        b"a/../../sentinel".as_slice(),
        file_meta(4),
        b"evil".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
}

#[test]
fn absolute_paths_are_refused() {
    let s = Sandbox::new();
    let abs = format!("{}/sentinel", s.outside().display());
    for name in [b"/etc/x".as_slice(), abs.as_bytes()] {
        let tar = raw_tar(&[(name, file_meta(4), b"evil".as_slice())]);
        s.refuses(&tar, WhiteoutMode::Delete, "absolute");
    }
    assert!(!s.dest().join("etc").exists());
}

#[test]
fn symlink_to_root_then_a_file_through_it_is_refused() {
    let s = Sandbox::new();
    let out = s.outside().as_os_str().as_bytes().to_vec();
    for target in [b"/".to_vec(), out.clone(), b"..".to_vec()] {
        let s = Sandbox::new();
        let mut through = b"evil".to_vec();
        through.extend_from_slice(if target == b"/" { &out[..] } else { b"" });
        through.extend_from_slice(b"/sentinel");
        let tar = raw_tar(&[
            (
                b"evil".as_slice(),
                link_meta(kind::SYMLINK, &target),
                b"".as_slice(),
            ),
            (&through, file_meta(4), b"evil"),
        ]);
        s.refuses(&tar, WhiteoutMode::Delete, "symlink");
    }
}

#[test]
fn symlink_made_earlier_in_the_same_tar_is_not_followed() {
    for mode in [WhiteoutMode::Delete, WhiteoutMode::OverlayMarkers] {
        let s = Sandbox::new();
        let tar = raw_tar(&[
            (b"dir/".as_slice(), dir_meta(), b"".as_slice()),
            (b"dir/link", link_meta(kind::SYMLINK, b"../.."), b""),
            (b"dir/link/sentinel", file_meta(4), b"evil"),
        ]);
        s.refuses(&tar, mode, "dir/link/sentinel");
        // A whiteout or an opaque marker through the symlink, too.
        let tar = raw_tar(&[
            (
                b"l".as_slice(),
                link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
                b"".as_slice(),
            ),
            (b"l/.wh.sentinel", file_meta(0), b""),
        ]);
        s.refuses(&tar, mode, "l/.wh.sentinel");
        let tar = raw_tar(&[
            (
                b"l".as_slice(),
                link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
                b"".as_slice(),
            ),
            (b"l/.wh..wh..opq", file_meta(0), b""),
        ]);
        s.refuses(&tar, mode, "l/.wh..wh..opq");
    }
}

#[test]
fn hardlinks_out_of_dest_are_refused() {
    let s = Sandbox::new();
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"../../etc/passwd"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"../sentinel"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "..");
    // Through a symlink (to the outside directory).
    let tar = raw_tar(&[
        (
            b"l".as_slice(),
            link_meta(kind::SYMLINK, s.outside().as_os_str().as_bytes()),
            b"".as_slice(),
        ),
        (b"h", link_meta(kind::LINK, b"l/sentinel"), b""),
    ]);
    s.refuses(&tar, WhiteoutMode::Delete, "symlink");
    // Absolute: refused, whatever it names.
    let tar = raw_tar(&[(
        b"h".as_slice(),
        link_meta(kind::LINK, b"/sentinel"),
        b"".as_slice(),
    )]);
    s.refuses(&tar, WhiteoutMode::Delete, "absolute");
}

#[test]
fn bad_whiteouts_are_refused() {
    for name in [
        &b".wh..."[..],
        b"a/.wh...",
        b".wh..",
        b".wh.",
        b".wh..wh.plnk",
        b"../.wh.sentinel",
        b".wh../sentinel",
        b".wh..wh..opq/x",
    ] {
        for mode in [WhiteoutMode::Delete, WhiteoutMode::OverlayMarkers] {
            let s = Sandbox::new();
            std::fs::create_dir_all(s.dest().join("a")).unwrap();
            let tar = raw_tar(&[(name, file_meta(0), b"".as_slice())]);
            s.refuses(&tar, mode, &String::from_utf8_lossy(name));
            assert!(s.dest().join("a").exists());
        }
    }
}

/// Fills the name, link name and type flag of every header with hostile pieces (`..`, `/`,
/// symlinks to the outside, whiteout prefixes), fixes the checksum, and applies: whatever
/// happens, nothing beside dest may change.
#[test]
fn mutated_headers_never_escape() {
    let pieces: &[&[u8]] = &[
        b"..",
        b"/",
        b"a",
        b"l",
        b".wh.",
        b".wh..wh..opq",
        b"sentinel",
        b"./",
        b"../",
        b"x/",
    ];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..300 {
        let s = Sandbox::new();
        let outside = s.outside().as_os_str().as_bytes().to_vec();
        let mut entries: Vec<(Vec<u8>, EntryMeta, Vec<u8>)> = Vec::new();
        for _ in 0..4 {
            let mut name = Vec::new();
            for _ in 0..(1 + next() % 4) {
                name.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
            let kinds = [kind::REG, kind::DIR, kind::SYMLINK, kind::LINK, kind::FIFO];
            let k = kinds[(next() % kinds.len() as u64) as usize];
            let link = match next() % 3 {
                0 => outside.clone(),
                1 => b"../sentinel".to_vec(),
                _ => pieces[(next() % pieces.len() as u64) as usize].to_vec(),
            };
            let (meta, data) = match k {
                kind::REG => (file_meta(4), b"evil".to_vec()),
                kind::DIR => (dir_meta(), Vec::new()),
                _ => (link_meta(k, &link), Vec::new()),
            };
            entries.push((name, meta, data));
        }
        let refs: Vec<(&[u8], EntryMeta, &[u8])> = entries
            .iter()
            .map(|(n, m, d)| (n.as_slice(), m.clone(), d.as_slice()))
            .collect();
        let tar = raw_tar(&refs);
        let mode = if round % 2 == 0 {
            WhiteoutMode::Delete
        } else {
            WhiteoutMode::OverlayMarkers
        };
        let _ = apply_bytes(&s.dest(), &tar, mode);
        s.assert_outside_untouched();
    }
}

/// Runs `f` on a thread with tokio's default blocking-thread stack (2 MiB).
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn deep_trees_are_refused_not_a_stack_overflow() {
    on_small_stack(|| {
        let s = Sandbox::new();
        // Deeper than MAX_DEPTH: refused by apply, and by the walk when made by other means.
        let mut deep = b"a/".repeat(fsat::MAX_DEPTH + 10);
        deep.extend_from_slice(b"f");
        let tar = raw_tar(&[(deep.as_slice(), file_meta(1), b"x".as_slice())]);
        s.refuses(&tar, WhiteoutMode::Delete, "deeper than");
        let fd = fsat::open_root(&s.dest()).unwrap();
        let mut cur = fsat::dup(fd.as_fd()).unwrap();
        for _ in 0..fsat::MAX_DEPTH + 10 {
            fsat::mkdir_at(cur.as_fd(), c"a", 0o755).unwrap();
            cur = fsat::open_dir_at(cur.as_fd(), c"a").unwrap();
        }
        let err = naive_changes(&s.dest(), None).unwrap_err();
        assert!(err.to_string().contains("deeper than"), "{err}");
        // Removing it through a whiteout fails cleanly too.
        let tar = raw_tar(&[(b".wh.a".as_slice(), file_meta(0), b"".as_slice())]);
        let err = apply_bytes(&s.dest(), &tar, WhiteoutMode::Delete).unwrap_err();
        assert!(err.to_string().contains("deeper than"), "{err}");
        s.assert_outside_untouched();
        // Just under the limit everything works on a small stack.
        let t = tempfile::tempdir().unwrap();
        let (src, dst) = (t.path().join("src"), t.path().join("dst"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        let fd = fsat::open_root(&src).unwrap();
        let mut cur = fsat::dup(fd.as_fd()).unwrap();
        for _ in 0..fsat::MAX_DEPTH - 1 {
            fsat::mkdir_at(cur.as_fd(), c"b", 0o755).unwrap();
            cur = fsat::open_dir_at(cur.as_fd(), c"b").unwrap();
        }
        let changes = naive_changes(&src, None).unwrap();
        assert_eq!(changes.len(), fsat::MAX_DEPTH - 1);
        let tar = diff_bytes(&src, &changes, None);
        apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
        let whiteout = raw_tar(&[(b".wh.b".as_slice(), file_meta(0), b"".as_slice())]);
        apply_bytes(&dst, &whiteout, WhiteoutMode::Delete).unwrap();
        assert!(!dst.join("b").exists());
        fsat::remove_at(fsat::open_root(t.path()).unwrap().as_fd(), c"src").unwrap();
    });
}

#[test]
fn entries_over_symlinks_replace_the_symlink_never_its_target() {
    for mode in [WhiteoutMode::Delete, WhiteoutMode::OverlayMarkers] {
        let s = Sandbox::new();
        let target = s.outside().join("sentinel");
        let target = target.as_os_str().as_bytes();
        let mut dir_meta_evil = dir_meta();
        dir_meta_evil.mode = 0o777;
        let tar = raw_tar(&[
            // A file, a dir, a fifo and a hard link over symlinks to the sentinel.
            (
                b"l1".as_slice(),
                link_meta(kind::SYMLINK, target),
                b"".as_slice(),
            ),
            (b"l1", file_meta(4), b"evil"),
            (b"l2", link_meta(kind::SYMLINK, target), b""),
            (b"l2/", dir_meta_evil, b""),
            (b"l3", link_meta(kind::SYMLINK, target), b""),
            (b"l3", link_meta(kind::FIFO, b""), b""),
            // A hard link to a symlink links the symlink itself.
            (b"l4", link_meta(kind::SYMLINK, target), b""),
            (b"h", link_meta(kind::LINK, b"l4"), b""),
        ]);
        apply_bytes(&s.dest(), &tar, mode).unwrap();
        s.assert_outside_untouched();
        assert_eq!(std::fs::read(s.dest().join("l1")).unwrap(), b"evil");
        assert!(std::fs::symlink_metadata(s.dest().join("l2"))
            .unwrap()
            .is_dir());
        let h = std::fs::symlink_metadata(s.dest().join("h")).unwrap();
        assert!(h.file_type().is_symlink());
        assert_eq!(h.nlink(), 2);
    }
}
