//! Round trips, determinism, compression, diffID and sizes.

use std::io::Write;
use std::os::unix::fs::MetadataExt;

use super::*;

#[test]
fn round_trip_every_entry_type() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);

    let changes = naive_changes(&src, None).unwrap();
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Add));
    assert!(
        changes.windows(2).all(|w| w[0] < w[1]),
        "changes are sorted"
    );
    let tar = diff_bytes(&src, &changes, None);
    let stats = apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();

    let (a, b) = (snapshot(&src), snapshot(&dst));
    for (k, v) in &a {
        let k_s = String::from_utf8_lossy(k);
        if k_s.ends_with("xattrs") {
            assert!(
                v.contains("user.one") && !v.contains("trusted.overlay"),
                "{v}"
            );
        }
        assert_eq!(Some(v), b.get(k), "{k_s}");
    }
    assert_eq!(a.len(), b.len());
    assert_eq!(stats.diff_id, sha(&tar));
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    assert_eq!(stats.content_bytes, changes_size(&src, &changes).unwrap());
    // The trusted.overlay.* xattr never travels.
    let x = fsat::list_xattrs_at(fsat::open_root(&dst).unwrap().as_fd(), c"xattrs").unwrap();
    assert!(!x.iter().any(|(k, _)| k.starts_with(b"trusted.overlay.")));
    // Hard links stay one inode.
    assert_eq!(
        std::fs::metadata(dst.join("hl-c")).unwrap().ino(),
        std::fs::metadata(dst.join("etc/hl-b")).unwrap().ino()
    );
    assert_eq!(std::fs::metadata(dst.join("hl-a")).unwrap().nlink(), 3);
    // The sparse file stays sparse (32 MiB long, almost nothing allocated).
    let m = std::fs::metadata(dst.join("sparse")).unwrap();
    assert_eq!(m.len(), 32 << 20);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "sparse file allocated {} bytes",
        m.blocks() * 512
    );
    // The applied tree has no changes against the source.
    assert_eq!(
        naive_changes(&dst, Some(&src)).unwrap(),
        Vec::<Change>::new()
    );
}

#[test]
fn diffs_are_deterministic_and_stable_through_apply() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);
    let changes = naive_changes(&src, None).unwrap();
    let one = diff_bytes(&src, &changes, None);
    let two = diff_bytes(&src, &changes, None);
    assert_eq!(one, two);
    let mut shuffled = changes.clone();
    shuffled.reverse();
    assert_eq!(
        diff_bytes(&src, &shuffled, None),
        one,
        "order of the change list does not matter"
    );
    apply_bytes(&dst, &one, WhiteoutMode::Delete).unwrap();
    let again = diff_bytes(&dst, &naive_changes(&dst, None).unwrap(), None);
    assert_eq!(
        sha(&again),
        sha(&one),
        "diff of the applied tree gives the same bytes"
    );
    // Entries are in byte order of their names, directories before their content.
    let names = tar_names(&one);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    assert!(names.iter().any(|n| n == b"etc/"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with(b"/") || n.starts_with(b"./")));
}

#[test]
fn truncated_and_corrupt_tars_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), vec![3u8; 5000]).unwrap();
    let tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    for cut in [0usize, 100, 512, 700, 1536, tar.len() - 1024] {
        let d = t.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&d).unwrap();
        let err = apply_bytes(&d, &tar[..cut], WhiteoutMode::Delete).unwrap_err();
        assert!(err.to_string().contains("truncated"), "cut at {cut}: {err}");
    }
    let mut bad = tar.clone();
    bad[3] ^= 0x55;
    let d = t.path().join("bad");
    std::fs::create_dir_all(&d).unwrap();
    let err = apply_bytes(&d, &bad, WhiteoutMode::Delete).unwrap_err();
    assert!(err.to_string().contains("checksum"), "{err}");
    // A truncated gzip stream is an error too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let err = apply_bytes(&d, &gz[..gz.len() / 2], WhiteoutMode::Delete).unwrap_err();
    assert!(!err.to_string().is_empty());
}

#[test]
fn compressed_input_and_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    build_rich_tree(&src);
    let mut tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    // GNU tar pads to 10 KiB records: the padding is part of the diffID.
    tar.extend_from_slice(&[0u8; 4096]);
    let want = snapshot(&src);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let inputs = [
        ("plain", tar.clone()),
        ("gzip", gz.finish().unwrap()),
        ("zstd", zstd::encode_all(&tar[..], 3).unwrap()),
    ];
    for (name, input) in inputs {
        let d = t.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let stats = apply_bytes(&d, &input, WhiteoutMode::Delete).unwrap();
        assert_eq!(stats.diff_id, sha(&tar), "{name}");
        assert_eq!(stats.tar_bytes, tar.len() as u64, "{name}");
        assert_eq!(snapshot(&d), want, "{name}");
        // Without the diffID (the layer store hashes the stream itself): same tree and count.
        let d = t.path().join(format!("{name}-unhashed"));
        std::fs::create_dir_all(&d).unwrap();
        let config = ApplyConfig {
            whiteouts: WhiteoutMode::Delete,
            best_effort_xattrs: false,
            diff_id: false,
        };
        let mut reader: &[u8] = &input;
        let unhashed = apply_layer_with(&d, &mut reader, &config).unwrap();
        assert_eq!(unhashed.diff_id, "", "{name}");
        assert_eq!(unhashed.tar_bytes, tar.len() as u64, "{name}");
        assert_eq!(unhashed.content_bytes, stats.content_bytes, "{name}");
        assert_eq!(snapshot(&d), want, "{name}");
    }
}

#[test]
fn content_bytes_equals_changes_size() {
    let p = pair(
        |r| {
            std::fs::write(r.join("old"), vec![1u8; 1000]).unwrap();
            std::fs::write(r.join("same"), vec![2u8; 10]).unwrap();
        },
        |l| {
            std::fs::write(l.join("old"), vec![9u8; 3000]).unwrap();
            std::fs::write(l.join("new"), vec![5u8; 777]).unwrap();
            std::fs::hard_link(l.join("new"), l.join("new2")).unwrap();
            std::fs::hard_link(l.join("new"), l.join("new3")).unwrap();
            std::os::unix::fs::symlink("new", l.join("sym")).unwrap();
        },
    );
    let changes = naive_changes(&p.layer, Some(&p.parent)).unwrap();
    let size = changes_size(&p.layer, &changes).unwrap();
    assert_eq!(size, 3000 + 777);
    let tar = diff_bytes(&p.layer, &changes, Some(&p.parent));
    let u = p.upper(&tar);
    let stats = apply_bytes(&u, &tar, WhiteoutMode::OverlayMarkers).unwrap();
    assert_eq!(stats.content_bytes, size);
    p.check_full_apply(&tar);
}

#[test]
fn apply_is_idempotent_over_an_existing_tree() {
    let t = tempfile::tempdir().unwrap();
    let (src, dst) = (t.path().join("src"), t.path().join("dst"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&dst).unwrap();
    build_rich_tree(&src);
    let tar = diff_bytes(&src, &naive_changes(&src, None).unwrap(), None);
    apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
    apply_bytes(&dst, &tar, WhiteoutMode::Delete).unwrap();
    assert_eq!(snapshot(&dst), snapshot(&src));
}

#[test]
fn sparse_and_dense_files_give_the_same_tar_and_stay_sparse() {
    let t = tempfile::tempdir().unwrap();
    let (a, b, c) = (t.path().join("a"), t.path().join("b"), t.path().join("c"));
    for d in [&a, &b, &c] {
        std::fs::create_dir_all(d).unwrap();
    }
    let size = 40u64 << 20;
    let parts: [(u64, &[u8]); 3] = [(0, b"head"), (9 << 20, b"middle"), (30 << 20, b"late")];
    // Sparse: holes between the parts and after the last one.
    let f = std::fs::File::create(a.join("f")).unwrap();
    f.set_len(size).unwrap();
    for (off, data) in parts {
        std::os::unix::fs::FileExt::write_all_at(&f, data, off).unwrap();
    }
    drop(f);
    // Dense: every byte written.
    let mut dense = vec![0u8; size as usize];
    for (off, data) in parts {
        dense[off as usize..off as usize + data.len()].copy_from_slice(data);
    }
    std::fs::write(b.join("f"), &dense).unwrap();
    for d in [&a, &b] {
        set_times(&d.join("f"), 1_000, 0);
    }
    let sparse_blocks = std::fs::metadata(a.join("f")).unwrap().blocks();
    assert!(
        sparse_blocks * 512 < size / 4,
        "the test file must be sparse"
    );
    let changes = naive_changes(&a, None).unwrap();
    let ta = diff_bytes(&a, &changes, None);
    let tb = diff_bytes(&b, &changes, None);
    assert!(ta == tb, "sparse and dense files must give identical tars");
    apply_bytes(&c, &ta, WhiteoutMode::Delete).unwrap();
    assert_eq!(std::fs::read(c.join("f")).unwrap(), dense);
    assert!(std::fs::metadata(c.join("f")).unwrap().blocks() * 512 < 1 << 20);
}
