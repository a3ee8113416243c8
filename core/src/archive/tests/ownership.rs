//! Apply skips chown and chmod when creation already gave the right owner and mode: each case
//! where creation gives something else (a setgid directory, a mode the umask would cut,
//! setuid, foreign ids, big files written in place) must still end up exactly as the tar says.
//! And a failure on the file-writing thread fails the apply, naming the file.

use std::os::unix::fs::MetadataExt;

use super::*;

fn meta(kind_: u8, mode: u32, uid: u64, gid: u64, size: u64) -> EntryMeta {
    EntryMeta {
        kind: kind_,
        mode,
        uid,
        gid,
        size,
        mtime: (1_000, 0),
        ..EntryMeta::default()
    }
}

#[test]
fn owners_and_modes_are_exact_whatever_creation_gives() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    // A setgid target: a new file in it gets the directory's group, not ours.
    lchown(&dest, 0, 1234);
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o2755)).unwrap();
    let big = vec![7u8; (filewriter::MAX_DEFERRED + 5000) as usize];
    let small = b"hello".to_vec();
    let entries: Vec<(&[u8], EntryMeta, &[u8])> = vec![
        (b"a", meta(kind::REG, 0o644, 0, 0, 5), &small),
        (b"b", meta(kind::REG, 0o644, 0, 1234, 5), &small),
        (b"d/", meta(kind::DIR, 0o755, 0, 0, 0), b""),
        (b"d/c", meta(kind::REG, 0o644, 0, 0, 5), &small),
        (b"s/", meta(kind::DIR, 0o2775, 0, 4321, 0), b""),
        (b"s/x", meta(kind::REG, 0o644, 0, 0, 5), &small),
        (b"s/y", meta(kind::REG, 0o644, 0, 4321, 5), &small),
        (b"m", meta(kind::REG, 0o777, 0, 0, 5), &small),
        (b"u", meta(kind::REG, 0o4755, 0, 0, 5), &small),
        (b"g", meta(kind::REG, 0o2711, 0, 0, 5), &small),
        (b"w", meta(kind::REG, 0o600, 1000, 1001, 5), &small),
        (b"r", meta(kind::REG, 0o444, 0, 0, 5), &small),
        (b"big", meta(kind::REG, 0o640, 5, 6, big.len() as u64), &big),
        (
            b"big0",
            meta(kind::REG, 0o644, 0, 0, big.len() as u64),
            &big,
        ),
        // A directory entry changes an already used directory's group and setgid bit.
        (b"d/", meta(kind::DIR, 0o2755, 0, 999, 0), b""),
        (b"d/e", meta(kind::REG, 0o644, 0, 0, 5), &small),
    ];
    let tar = raw_tar(&entries);
    apply_bytes(&dest, &tar, WhiteoutMode::Delete).unwrap();
    let check = |name: &str, mode: u32, uid: u32, gid: u32| {
        let m = std::fs::symlink_metadata(dest.join(name)).unwrap();
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (mode, uid, gid),
            "{name}: mode {:o}",
            m.mode() & 0o7777
        );
        assert_eq!(m.mtime(), 1_000, "{name}");
    };
    check("a", 0o644, 0, 0);
    check("b", 0o644, 0, 1234);
    check("d/c", 0o644, 0, 0);
    check("s/x", 0o644, 0, 0);
    check("s/y", 0o644, 0, 4321);
    check("m", 0o777, 0, 0);
    check("u", 0o4755, 0, 0);
    check("g", 0o2711, 0, 0);
    check("w", 0o600, 1000, 1001);
    check("r", 0o444, 0, 0);
    check("big", 0o640, 5, 6);
    check("big0", 0o644, 0, 0);
    check("d/e", 0o644, 0, 0);
    assert_eq!(std::fs::read(dest.join("s/y")).unwrap(), small);
    assert_eq!(std::fs::read(dest.join("big")).unwrap(), big);
}

#[test]
fn a_failure_on_the_writer_thread_fails_the_apply() {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let mut bad = meta(kind::REG, 0o644, 0, 0, 5);
    // No filesystem knows this namespace: EOPNOTSUPP, an error (not best effort).
    bad.xattrs = vec![(b"bogus.name".to_vec(), b"v".to_vec())];
    let mut entries: Vec<(&[u8], EntryMeta, &[u8])> = vec![(b"bad", bad, b"hello".as_slice())];
    let names: Vec<Vec<u8>> = (0..100).map(|i| format!("f{i}").into_bytes()).collect();
    for n in &names {
        entries.push((n, meta(kind::REG, 0o644, 0, 0, 5), b"hello".as_slice()));
    }
    let err = apply_bytes(&dest, &raw_tar(&entries), WhiteoutMode::Delete).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("bad") && text.contains("bogus.name"),
        "{text}"
    );
}
