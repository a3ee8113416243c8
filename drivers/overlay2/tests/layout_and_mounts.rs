//! The on-disk layout, mounts and reference counts, removal rules, metadata and status.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use strata_core::{CreateOpts, Error, LayerDriver, StorageOpts};

fn is_short(s: &str) -> bool {
    s.len() == 26
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

#[tokio::test]
async fn layout_is_dockers() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    let root = d.driver().root();
    let base = create_ro(&d, 1, None).await;
    let mid = create_ro(&d, 2, Some(1)).await;
    let top = create_rw(&d, 3, Some(2)).await;

    let base_dir = root.join(base.as_str());
    let link = std::fs::read_to_string(base_dir.join("link")).unwrap();
    assert!(is_short(&link), "{link:?}");
    assert!(
        !base_dir.join("lower").exists(),
        "a base layer has no lower"
    );
    assert!(
        !base_dir.join("work").exists(),
        "a base layer has no work dir"
    );
    assert_eq!(
        std::fs::read_link(root.join("l").join(&link)).unwrap(),
        std::path::PathBuf::from(format!("../{base}/diff"))
    );
    let mode = std::fs::metadata(&base_dir).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o710);

    let mid_link = std::fs::read_to_string(root.join(mid.as_str()).join("link")).unwrap();
    let top_dir = root.join(top.as_str());
    let lower = std::fs::read_to_string(top_dir.join("lower")).unwrap();
    assert_eq!(lower, format!("l/{mid_link}:l/{link}"), "uppermost first");
    assert!(top_dir.join("work").is_dir());
    assert!(top_dir.join("diff").is_dir());
    assert!(
        !top_dir.join("merged").exists(),
        "merged only while mounted"
    );
    assert!(root.join(mid.as_str()).join("committed").exists());
    assert!(!top_dir.join("committed").exists());
}

#[tokio::test]
async fn mounts_are_reference_counted_and_shaped_by_kind() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    let base = create_ro(&d, 1, None).await;
    let base_path = d.mount(&base, "").await.unwrap();
    assert_eq!(
        base_path,
        d.driver().root().join(base.as_str()).join("diff")
    );
    std::fs::write(base_path.join("bottom"), b"from base").unwrap();
    d.unmount(&base).await.unwrap();

    let image = create_ro(&d, 2, Some(1)).await;
    let rw = create_rw(&d, 3, Some(2)).await;

    let ro_path = d.mount(&image, "").await.unwrap();
    assert!(mounted(&ro_path));
    assert_eq!(std::fs::read(ro_path.join("bottom")).unwrap(), b"from base");
    let err = std::fs::write(ro_path.join("x"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "image layers mount read-only"
    );
    d.unmount(&image).await.unwrap();

    let p1 = d.mount(&rw, "").await.unwrap();
    let p2 = d.mount(&rw, "").await.unwrap();
    assert_eq!(p1, p2);
    std::fs::write(p1.join("new"), b"upper").unwrap();
    assert!(d
        .driver()
        .root()
        .join(rw.as_str())
        .join("diff/new")
        .exists());
    d.unmount(&rw).await.unwrap();
    assert!(mounted(&p1), "still one user");
    d.unmount(&rw).await.unwrap();
    assert!(!mounted(&p1), "last unmount detaches");
    assert!(!p1.exists(), "and removes merged");
}

#[tokio::test]
async fn remove_refuses_while_mounted_or_with_children() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    let base = create_ro(&d, 1, None).await;
    let child = create_rw(&d, 2, Some(1)).await;
    assert!(matches!(d.remove(&base).await, Err(Error::Busy(_))));
    d.mount(&child, "").await.unwrap();
    assert!(matches!(d.remove(&child).await, Err(Error::Busy(_))));
    d.unmount(&child).await.unwrap();
    d.remove(&child).await.unwrap();
    d.remove(&base).await.unwrap();
    assert!(!d.exists(&base).await.unwrap());
    assert_eq!(
        std::fs::read_dir(d.driver().root().join("l"))
            .unwrap()
            .count(),
        0
    );
    assert!(matches!(d.remove(&base).await, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn creating_twice_or_on_a_missing_parent_fails() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    create_ro(&d, 1, None).await;
    let again = d.create(&id(1), None, &CreateOpts::read_only()).await;
    assert!(matches!(again, Err(Error::AlreadyExists(_))));
    let orphan = d
        .create(&id(2), Some(&id(9)), &CreateOpts::read_only())
        .await;
    assert!(matches!(orphan, Err(Error::NotFound(_))));
}

#[tokio::test]
async fn metadata_and_status_read_like_dockers() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    create_ro(&d, 1, None).await;
    create_ro(&d, 2, Some(1)).await;
    let rw = create_rw(&d, 3, Some(2)).await;
    let m = d.metadata(&rw).await.unwrap();
    let dir = d.driver().root().join(rw.as_str());
    assert_eq!(m["UpperDir"], dir.join("diff").to_string_lossy());
    assert_eq!(m["WorkDir"], dir.join("work").to_string_lossy());
    assert_eq!(m["MergedDir"], dir.join("merged").to_string_lossy());
    let expected_lower = format!(
        "{}:{}",
        d.driver()
            .root()
            .join(id(2).as_str())
            .join("diff")
            .display(),
        d.driver()
            .root()
            .join(id(1).as_str())
            .join("diff")
            .display()
    );
    assert_eq!(m["LowerDir"], expected_lower);
    assert!(!d.metadata(&id(1)).await.unwrap().contains_key("LowerDir"));

    let status: std::collections::BTreeMap<_, _> = d.status().await.unwrap().into_iter().collect();
    assert_eq!(status["Backing Filesystem"], "extfs");
    assert_eq!(status["Supports d_type"], "true");
    assert_eq!(status["Native Overlay Diff"], "true");
    assert_eq!(status["Using metacopy"], "false");
    assert_eq!(status["Max Depth"], "500");
    assert!(!d.capabilities().quota, "ext4 has no project quota here");
}

#[tokio::test]
async fn usage_counts_the_layers_own_files() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    let base = create_ro(&d, 1, None).await;
    let p = d.mount(&base, "").await.unwrap();
    std::fs::write(p.join("big"), vec![1u8; 1 << 20]).unwrap();
    d.unmount(&base).await.unwrap();
    let rw = create_rw(&d, 2, Some(1)).await;
    let fresh = d.usage(&rw).await.unwrap();
    assert!(
        fresh.bytes < (1 << 20),
        "the parent's file is not counted: {fresh:?}"
    );
    let p = d.mount(&rw, "").await.unwrap();
    std::fs::write(p.join("small"), vec![1u8; 8192]).unwrap();
    d.unmount(&rw).await.unwrap();
    let u = d.usage(&rw).await.unwrap();
    assert_eq!(
        u.inodes,
        fresh.inodes + 1,
        "one file more: {fresh:?} -> {u:?}"
    );
    assert!(
        u.bytes >= fresh.bytes + 8192 && u.bytes < (1 << 20),
        "{u:?}"
    );
}

#[tokio::test]
async fn cleanup_unmounts_everything() {
    let t = TestDir::new();
    let d = open(&t.root()).await;
    create_ro(&d, 1, None).await;
    let a = create_rw(&d, 2, Some(1)).await;
    let b = create_ro(&d, 3, Some(1)).await;
    let pa = d.mount(&a, "").await.unwrap();
    let pb = d.mount(&b, "").await.unwrap();
    d.mount(&b, "").await.unwrap();
    d.cleanup().await.unwrap();
    assert!(!mounted(&pa) && !mounted(&pb));
    d.remove(&b).await.unwrap();
}

#[tokio::test]
async fn bad_options_are_refused_with_the_known_ones() {
    let t = TestDir::new();
    let opts = StorageOpts::parse(&["overlay2.nonsense=1"]).unwrap();
    let err = strata_overlay2::open(t.root(), &opts).await.err().unwrap();
    assert!(err.to_string().contains("overlay2.naive_diff"), "{err}");
    let d = open(&t.root()).await;
    create_ro(&d, 1, None).await;
    let sized =
        CreateOpts::read_write().with_storage_opts(StorageOpts::parse(&["size=10M"]).unwrap());
    let err = d.create(&id(2), Some(&id(1)), &sized).await.unwrap_err();
    assert!(err.to_string().contains("pquota"), "{err}");
}

/// Many tasks mount and unmount one layer at once (the kit serialises the real mount and
/// unmount per layer, with no driver-wide lock): every mount hands out a live overlay, and at
/// the end the layer is unmounted and can be removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mounts_and_unmounts_of_one_layer_stay_consistent() {
    let t = TestDir::new();
    let d = std::sync::Arc::new(open(&t.root()).await);
    let base = create_ro(d.as_ref(), 1, None).await;
    let rw = create_rw(d.as_ref(), 2, Some(1)).await;
    std::fs::write(d.driver().root().join(base.as_str()).join("diff/f"), b"x").unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (d, rw) = (d.clone(), rw.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let path = d.mount(&rw, "").await.unwrap();
                assert_eq!(std::fs::read(path.join("f")).unwrap(), b"x");
                d.unmount(&rw).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let merged = d.driver().root().join(rw.as_str()).join("merged");
    assert!(!merged.exists() || !mounted(&merged));
    d.remove(&rw).await.unwrap();
    d.remove(&base).await.unwrap();
}
