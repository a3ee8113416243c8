//! The driver end to end as root: layers, mounts, native changes and the diff round trip.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_core::registry::DriverConfig;
use strata_core::{ChangeKind, CreateOpts, LayerDriver, LayerId, StorageOpts};

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// A driver root that is cleaned up (mounts first) even when the test fails.
struct Root {
    dir: tempfile::TempDir,
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.dir.path());
    }
}

async fn driver() -> (Root, std::sync::Arc<dyn LayerDriver>) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("FO_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let d = strata_fuse_overlay::init(DriverConfig {
        root: dir.path().join("fuse-overlay"),
        options: StorageOpts::default(),
    })
    .await
    .unwrap();
    (Root { dir }, d)
}

fn fill_base(r: &Path) {
    std::fs::create_dir_all(r.join("sub/deeper")).unwrap();
    std::fs::write(r.join("sub/deeper/file"), b"deep").unwrap();
    std::fs::write(r.join("linked"), b"one inode").unwrap();
    std::fs::hard_link(r.join("linked"), r.join("sub/linked-too")).unwrap();
    std::os::unix::fs::symlink("does/not/exist", r.join("dangling")).unwrap();
    nix::unistd::mkfifo(
        &r.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &r.join("null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    let x = r.join("with-xattrs");
    std::fs::write(&x, b"xattrs").unwrap();
    std::os::unix::fs::chown(&x, Some(1000), Some(1000)).unwrap();
    xattr_set(&x, "user.first", b"value one");
    xattr_set(&x, "user.binary", &[0, 1, 2, 255]);
    xattr_set(&x, "user.empty", b"");
    std::fs::write(r.join("gone"), b"bye").unwrap();
    std::fs::create_dir(r.join("dir-gone")).unwrap();
    std::fs::write(r.join("dir-gone/x"), b"x").unwrap();
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_diff_round_trip() {
    let (_root, d) = driver().await;
    let (base, upper) = (id("base"), id("upper"));
    d.create(&base, None, &CreateOpts::read_write())
        .await
        .unwrap();
    let m = d.mount(&base, "").await.unwrap();
    fill_base(&m);
    d.unmount(&base).await.unwrap();

    d.create(&upper, Some(&base), &CreateOpts::read_write())
        .await
        .unwrap();
    let m = d.mount(&upper, "").await.unwrap();
    std::fs::write(m.join("sub/deeper/file"), b"changed").unwrap();
    std::fs::remove_file(m.join("gone")).unwrap();
    std::fs::remove_dir_all(m.join("dir-gone")).unwrap();
    std::fs::create_dir(m.join("dir-gone")).unwrap();
    std::fs::write(m.join("dir-gone/fresh"), b"fresh").unwrap();
    xattr_set(&m.join("with-xattrs"), "user.first", b"changed value");
    std::fs::set_permissions(m.join("linked"), std::fs::Permissions::from_mode(0o600)).unwrap();
    d.unmount(&upper).await.unwrap();

    let changes = d.changes(&upper, Some(&base)).await.unwrap();
    let list: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| (c.path.display().to_string(), c.kind))
        .collect();
    for expected in [
        ("/sub/deeper/file", ChangeKind::Modify),
        ("/gone", ChangeKind::Delete),
        ("/dir-gone/x", ChangeKind::Delete),
        ("/dir-gone/fresh", ChangeKind::Add),
        ("/with-xattrs", ChangeKind::Modify),
    ] {
        assert!(
            list.contains(&(expected.0.to_string(), expected.1)),
            "{expected:?} missing from {list:?}"
        );
    }
    let size = d.diff_size(&upper, Some(&base)).await.unwrap();
    let tar = strata_core::stream::read_all(d.diff(&upper, Some(&base)).await.unwrap())
        .await
        .unwrap();
    let applied = id("applied");
    d.create(&applied, Some(&base), &CreateOpts::read_only())
        .await
        .unwrap();
    let n = d
        .apply_diff(&applied, Some(&base), strata_core::stream::from_bytes(tar))
        .await
        .unwrap();
    assert_eq!(n, size);
    let again = d.changes(&applied, Some(&base)).await.unwrap();
    assert_eq!(again, changes);
    d.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounts_are_reference_counted_and_read_only_layers_stay_read_only() {
    let (root, d) = driver().await;
    let (img, ctr) = (id("image"), id("container"));
    d.create(&img, None, &CreateOpts::read_only())
        .await
        .unwrap();
    d.create(&ctr, Some(&img), &CreateOpts::read_write())
        .await
        .unwrap();

    let a = d.mount(&ctr, "").await.unwrap();
    let b = d.mount(&ctr, "").await.unwrap();
    assert_eq!(a, b);
    assert!(matches!(
        d.remove(&ctr).await,
        Err(strata_core::Error::Busy(_))
    ));
    assert!(
        matches!(d.remove(&img).await, Err(strata_core::Error::Busy(_))),
        "has a child"
    );
    d.unmount(&ctr).await.unwrap();
    assert!(
        strata_core::fsutil::mounts::is_mounted(&a).unwrap(),
        "one reference left"
    );
    std::fs::write(a.join("f"), b"x").unwrap();
    d.unmount(&ctr).await.unwrap();
    assert!(!strata_core::fsutil::mounts::is_mounted(&a).unwrap());

    let ro = d.mount(&img, "").await.unwrap();
    let err = std::fs::write(ro.join("g"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    d.unmount(&img).await.unwrap();

    d.remove(&ctr).await.unwrap();
    d.remove(&img).await.unwrap();
    assert!(!d.exists(&img).await.unwrap());
    let left = strata_core::fsutil::mounts::mounts_under(root.dir.path()).unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_detaches_stale_mounts() {
    let (root, d) = driver().await;
    let l = id("layer");
    d.create(&l, None, &CreateOpts::read_write()).await.unwrap();
    let m = d.mount(&l, "").await.unwrap();
    // A second driver over the same root plays the restarted daemon.
    let again = strata_fuse_overlay::init(DriverConfig {
        root: root.dir.path().join("fuse-overlay"),
        options: StorageOpts::default(),
    })
    .await
    .unwrap();
    assert!(!strata_core::fsutil::mounts::is_mounted(&m).unwrap());
    let m2 = again.mount(&l, "").await.unwrap();
    std::fs::write(m2.join("after-restart"), b"ok").unwrap();
    again.cleanup().await.unwrap();
    d.cleanup().await.unwrap();
    assert!(!strata_core::fsutil::mounts::is_mounted(&m).unwrap());
}

/// The layer index is rebuilt from the `lower` and `kind` files at open: after a restart a
/// parent is still refused removal while its child exists, the chain still mounts, and a
/// layer's kind is kept.
#[tokio::test]
async fn reopening_a_root_keeps_parents_children_and_kinds() {
    let (root, d) = driver().await;
    let (base, mid, top) = (id("base"), id("mid"), id("top"));
    d.create(&base, None, &CreateOpts::read_only())
        .await
        .unwrap();
    // An image layer's content arrives through its diff directory (apply_diff's target).
    let base_diff = root.dir.path().join("fuse-overlay/base/diff");
    std::fs::write(base_diff.join("from-base"), b"base").unwrap();
    d.create(&mid, Some(&base), &CreateOpts::read_only())
        .await
        .unwrap();
    d.create(&top, Some(&mid), &CreateOpts::read_write())
        .await
        .unwrap();
    d.cleanup().await.unwrap();
    drop(d);

    let d = strata_fuse_overlay::init(DriverConfig {
        root: root.dir.path().join("fuse-overlay"),
        options: StorageOpts::default(),
    })
    .await
    .unwrap();
    for (layer, child) in [(&base, &mid), (&mid, &top)] {
        let err = d.remove(layer).await.unwrap_err();
        assert!(
            matches!(err, strata_core::Error::Busy(_)) && err.to_string().contains(child.as_str()),
            "{err}"
        );
    }
    let t = d.mount(&top, "").await.unwrap();
    assert_eq!(std::fs::read(t.join("from-base")).unwrap(), b"base");
    std::fs::write(t.join("written"), b"rw").unwrap();
    d.unmount(&top).await.unwrap();
    let m = d.mount(&mid, "").await.unwrap();
    assert!(
        std::fs::write(m.join("refused"), b"x").is_err(),
        "mid is read-only"
    );
    d.unmount(&mid).await.unwrap();
    for layer in [&top, &mid, &base] {
        d.remove(layer).await.unwrap();
    }
    assert!(!d.exists(&base).await.unwrap());
}
