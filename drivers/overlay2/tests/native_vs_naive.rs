//! The native diff (reading the upper directory) and the naive walk (comparing mounts) must
//! give the same change lists, sizes and tar bytes on the same layers.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;
use strata_core::stream::{from_bytes, read_all};
use strata_core::{Change, LayerDriver, LayerId};
use strata_overlay2::Settings;

/// A layer tar with a whiteout and an opaque directory, applied with overlay markers.
fn image_layer_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |path: &str, kind: tar::EntryType, data: &[u8], mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, path, data).unwrap();
    };
    add("etc/", tar::EntryType::Directory, b"", 0o755);
    add("etc/config", tar::EntryType::Regular, b"v2", 0o644);
    add("etc/.wh.removed", tar::EntryType::Regular, b"", 0o600);
    add("opaque/", tar::EntryType::Directory, b"", 0o755);
    add("opaque/.wh..wh..opq", tar::EntryType::Regular, b"", 0o600);
    add("opaque/kept-new", tar::EntryType::Regular, b"new", 0o644);
    add("added/", tar::EntryType::Directory, b"", 0o700);
    add("added/file", tar::EntryType::Regular, &[7u8; 5000], 0o640);
    b.into_inner().unwrap()
}

fn write(p: &Path, data: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

/// Builds: base (files, dirs, links) <- image (applied tar) <- container (changes through
/// the mount, including rmdir+mkdir which leaves an opaque dir in the upper).
async fn build_layers(d: &dyn LayerDriver) -> [LayerId; 3] {
    let base = create_ro(d, 1, None).await;
    let p = d.mount(&base, "").await.unwrap();
    write(&p.join("etc/config"), b"v1");
    write(&p.join("etc/removed"), b"bye");
    write(&p.join("etc/keep"), b"keep");
    for i in 0..20 {
        write(&p.join(format!("opaque/old{i}")), b"old");
    }
    write(&p.join("opaque/sub/deep"), b"deep");
    write(&p.join("data/a"), b"aaaa");
    write(&p.join("data/b"), b"bbbb");
    write(&p.join("data/dir/inner"), b"inner");
    write(&p.join("rebuilt/x"), b"x");
    write(&p.join("rebuilt/y"), b"y");
    std::os::unix::fs::symlink("etc/config", p.join("cfglink")).unwrap();
    std::fs::hard_link(p.join("data/a"), p.join("data/a-hard")).unwrap();
    d.unmount(&base).await.unwrap();

    let image = create_ro(d, 2, Some(1)).await;
    d.apply_diff(&image, Some(&base), from_bytes(image_layer_tar()))
        .await
        .unwrap();

    let container = create_rw(d, 3, Some(2)).await;
    let m = d.mount(&container, "").await.unwrap();
    write(&m.join("data/a"), b"changed content");
    std::fs::set_permissions(m.join("data/b"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(m.join("etc/keep")).unwrap();
    std::fs::remove_dir_all(m.join("data/dir")).unwrap();
    std::fs::remove_dir_all(m.join("rebuilt")).unwrap();
    std::fs::create_dir(m.join("rebuilt")).unwrap();
    write(&m.join("rebuilt/y"), b"y again");
    write(&m.join("rebuilt/z"), b"z");
    std::fs::rename(m.join("etc/config"), m.join("etc/config.moved")).unwrap();
    write(&m.join("new/tree/file"), &[3u8; 10_000]);
    std::fs::hard_link(m.join("new/tree/file"), m.join("new/tree/link")).unwrap();
    std::os::unix::fs::symlink("../new", m.join("etc/newlink")).unwrap();
    xattr::set(m.join("new/tree/file"), "user.note", b"hello").unwrap();
    // Copied up, then set back: metadata unchanged, so neither path may list it.
    let added = m.join("added/file");
    let before = std::fs::metadata(&added).unwrap();
    std::fs::set_permissions(&added, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(&added, before.permissions()).unwrap();
    d.unmount(&container).await.unwrap();
    [base, image, container]
}

struct Observed {
    changes: Vec<Vec<Change>>,
    tars: Vec<Vec<u8>>,
    sizes: Vec<u64>,
}

async fn observe(d: &dyn LayerDriver, layers: &[LayerId; 3]) -> Observed {
    let pairs = [
        (&layers[0], None),
        (&layers[1], Some(&layers[0])),
        (&layers[2], Some(&layers[1])),
        (&layers[2], Some(&layers[0])),
        (&layers[2], None),
    ];
    let mut o = Observed {
        changes: Vec::new(),
        tars: Vec::new(),
        sizes: Vec::new(),
    };
    for (id, parent) in pairs {
        o.changes.push(d.changes(id, parent).await.unwrap());
        o.tars
            .push(read_all(d.diff(id, parent).await.unwrap()).await.unwrap());
        o.sizes.push(d.diff_size(id, parent).await.unwrap());
    }
    o
}

#[tokio::test]
async fn native_and_naive_agree() {
    let t = TestDir::new();
    let root = t.root();
    let native = {
        let d = open(&root).await;
        assert!(d.capabilities().native_diff);
        let layers = build_layers(&d).await;
        let o = observe(&d, &layers).await;
        d.cleanup().await.unwrap();
        o
    };
    let naive = {
        let d = open_with(
            &root,
            Settings {
                naive_diff: true,
                ..Settings::default()
            },
        )
        .await;
        assert!(!d.capabilities().native_diff);
        let layers = [id(1), id(2), id(3)];
        let o = observe(&d, &layers).await;
        d.cleanup().await.unwrap();
        o
    };
    for (i, (a, b)) in native.changes.iter().zip(&naive.changes).enumerate() {
        assert_eq!(a, b, "change lists of pair {i} differ");
    }
    assert_eq!(native.sizes, naive.sizes);
    for (i, (a, b)) in native.tars.iter().zip(&naive.tars).enumerate() {
        assert!(
            a == b,
            "tar bytes of pair {i} differ ({} vs {} bytes)",
            a.len(),
            b.len()
        );
    }
    // The container layer's list is what the scenario did.
    let c = &native.changes[2];
    let has = |p: &str, k: strata_core::ChangeKind| {
        c.iter().any(|x| x.path == Path::new(p) && x.kind == k)
    };
    use strata_core::ChangeKind::*;
    assert!(has("/data/a", Modify));
    assert!(has("/data/b", Modify));
    assert!(has("/etc/keep", Delete));
    assert!(has("/data/dir", Delete));
    assert!(has("/rebuilt/x", Delete), "hidden by the opaque dir");
    assert!(has("/rebuilt/z", Add));
    assert!(has("/etc/config", Delete) && has("/etc/config.moved", Add));
    assert!(has("/new/tree/link", Add));
    assert!(
        !c.iter().any(|x| x.path == Path::new("/added/file")),
        "{c:?}"
    );
    // The image layer's whiteout and opaque dir came through apply_diff as overlay markers.
    let img = &native.changes[1];
    assert!(img
        .iter()
        .any(|x| x.path == Path::new("/etc/removed") && x.kind == Delete));
    assert!(img
        .iter()
        .any(|x| x.path == Path::new("/opaque/old3") && x.kind == Delete));
    assert!(img
        .iter()
        .any(|x| x.path == Path::new("/opaque/sub") && x.kind == Delete));
}
