use std::os::unix::fs::MetadataExt;

use super::*;

fn id(n: &str) -> LayerId {
    LayerId::new(n).unwrap()
}

async fn driver(root: &Path) -> Arc<VfsDriver> {
    VfsDriver::new(root.to_path_buf(), StorageOpts::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_child_is_a_full_copy_of_its_parent() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(&t.path().join("vfs")).await;
    d.create(&id("base"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    let base = d.mount(&id("base"), "").await.unwrap();
    let m = std::fs::metadata(&base).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o755, 0, 0));
    std::fs::create_dir(base.join("etc")).unwrap();
    std::fs::write(base.join("etc/hostname"), b"strata\n").unwrap();
    std::os::unix::fs::symlink("hostname", base.join("etc/name")).unwrap();
    d.unmount(&id("base")).await.unwrap();

    d.create(&id("child"), Some(&id("base")), &CreateOpts::read_write())
        .await
        .unwrap();
    let child = d.mount(&id("child"), "").await.unwrap();
    assert_ne!(child, base);
    assert_eq!(
        std::fs::read(child.join("etc/hostname")).unwrap(),
        b"strata\n"
    );
    assert_eq!(
        std::fs::read_link(child.join("etc/name")).unwrap(),
        Path::new("hostname")
    );
    std::fs::write(child.join("etc/hostname"), b"changed\n").unwrap();
    assert_eq!(
        std::fs::read(base.join("etc/hostname")).unwrap(),
        b"strata\n"
    );
    d.unmount(&id("child")).await.unwrap();

    let meta = d.metadata(&id("child")).await.unwrap();
    assert_eq!(meta.get("Dir").map(PathBuf::from), Some(child.clone()));
    assert_eq!(child, t.path().join("vfs/dir/child"));
}

#[tokio::test]
async fn create_refuses_duplicates_and_missing_parents() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("a"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    assert!(matches!(
        d.create(&id("a"), None, &CreateOpts::read_only()).await,
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        d.create(&id("b"), Some(&id("nope")), &CreateOpts::read_only())
            .await,
        Err(Error::NotFound(_))
    ));
    assert!(!d.exists(&id("b")).await.unwrap());
    assert!(d.exists(&id("a")).await.unwrap());
}

#[tokio::test]
async fn remove_waits_for_children_and_mounts() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("p"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .await
        .unwrap();
    let err = d.remove(&id("p")).await.unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    assert!(err.to_string().contains("c"), "{err}");

    let first = d.mount(&id("c"), "").await.unwrap();
    let second = d.mount(&id("c"), "").await.unwrap();
    assert_eq!(first, second);
    d.unmount(&id("c")).await.unwrap();
    assert!(matches!(d.remove(&id("c")).await, Err(Error::Busy(_))));
    d.unmount(&id("c")).await.unwrap();
    d.remove(&id("c")).await.unwrap();
    assert!(!first.exists());
    d.remove(&id("p")).await.unwrap();
    assert!(matches!(d.remove(&id("p")).await, Err(Error::NotFound(_))));
    assert!(matches!(
        d.mount(&id("p"), "").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn size_is_refused_with_a_pointer_to_quota_drivers() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    assert!(!d.capabilities().quota);
    let opts =
        CreateOpts::read_write().with_storage_opts(StorageOpts::parse(&["size=10G"]).unwrap());
    let err = d.create(&id("q"), None, &opts).await.unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("overlay2") && text.contains("btrfs"),
        "{text}"
    );
    assert!(!d.exists(&id("q")).await.unwrap());

    let odd = CreateOpts::read_write().with_storage_opts(StorageOpts::parse(&["x=1"]).unwrap());
    assert!(matches!(
        d.create(&id("q"), None, &odd).await,
        Err(Error::InvalidInput(_))
    ));
    let daemon_wide = VfsDriver::new(
        t.path().join("other"),
        StorageOpts::parse(&["size=1G"]).unwrap(),
    )
    .await;
    assert!(matches!(daemon_wide, Err(Error::Unsupported(_))));
}

#[tokio::test]
async fn restart_keeps_parents_and_drops_half_made_layers() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("vfs");
    {
        let d = driver(&root).await;
        d.create(&id("p"), None, &CreateOpts::read_only())
            .await
            .unwrap();
        d.create(&id("c"), Some(&id("p")), &CreateOpts::read_only())
            .await
            .unwrap();
    }
    // What a crash in the middle of a create leaves: a staging copy, maybe its record.
    std::fs::create_dir_all(root.join("tmp/half/usr")).unwrap();
    std::fs::write(root.join("meta/half.json"), br#"{"parent":"p"}"#).unwrap();
    std::fs::write(root.join("meta/.c.json.tmp-99"), b"{").unwrap();

    let d = driver(&root).await;
    assert!(d.exists(&id("p")).await.unwrap());
    assert!(d.exists(&id("c")).await.unwrap());
    assert!(!d.exists(&id("half")).await.unwrap());
    assert!(!root.join("tmp/half").exists());
    assert!(!root.join("meta/half.json").exists());
    assert!(!root.join("meta/.c.json.tmp-99").exists());
    assert!(matches!(d.remove(&id("p")).await, Err(Error::Busy(_))));
    d.create(&id("half"), Some(&id("p")), &CreateOpts::read_only())
        .await
        .unwrap();
    d.remove(&id("half")).await.unwrap();
    d.remove(&id("c")).await.unwrap();
    d.remove(&id("p")).await.unwrap();
}

#[tokio::test]
async fn usage_counts_the_copy_of_the_parent() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("p"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    let p = d.mount(&id("p"), "").await.unwrap();
    std::fs::write(p.join("blob"), vec![1u8; 1 << 20]).unwrap();
    d.unmount(&id("p")).await.unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .await
        .unwrap();
    let u = d.usage(&id("c")).await.unwrap();
    assert_eq!(u.inodes, 2, "the root and the blob");
    assert!(u.bytes >= 1 << 20, "{u:?}");
    assert!(!d.capabilities().layers_share_parent);

    let status: BTreeMap<String, String> = d.status().await.unwrap().into_iter().collect();
    assert_eq!(
        status.get("Backing Filesystem").map(String::as_str),
        Some("extfs")
    );
    assert_eq!(status.get("Reflink").map(String::as_str), Some("false"));
}

#[tokio::test]
async fn cleanup_drops_mount_references() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("m"), None, &CreateOpts::read_write())
        .await
        .unwrap();
    d.mount(&id("m"), "").await.unwrap();
    assert!(matches!(d.remove(&id("m")).await, Err(Error::Busy(_))));
    d.cleanup().await.unwrap();
    d.remove(&id("m")).await.unwrap();
}

#[tokio::test]
async fn the_registry_constructor_builds_a_vfs_driver() {
    let t = tempfile::tempdir().unwrap();
    let config = DriverConfig {
        root: t.path().join("vfs"),
        options: StorageOpts::default(),
    };
    let d = init(config).await.unwrap();
    assert_eq!(d.name(), "vfs");
    assert!(t.path().join("vfs/dir").is_dir());
}

fn layer_tar(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[tokio::test]
async fn apply_diff_deletes_whiteouts_and_diff_gives_them_back() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("base"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    let base_tar = layer_tar(&[("etc/keep", b"keep"), ("etc/old", b"old!")]);
    let n = d
        .apply_diff(&id("base"), None, strata_core::stream::from_bytes(base_tar))
        .await
        .unwrap();
    assert_eq!(n, 8);
    d.create(&id("top"), Some(&id("base")), &CreateOpts::read_only())
        .await
        .unwrap();
    let top_tar = layer_tar(&[("etc/.wh.old", b""), ("etc/new", b"brand new")]);
    let n = d
        .apply_diff(
            &id("top"),
            Some(&id("base")),
            strata_core::stream::from_bytes(top_tar),
        )
        .await
        .unwrap();
    assert_eq!(n, 9);
    let dir = t.path().join("dir/top");
    assert!(!dir.join("etc/old").exists());
    assert_eq!(std::fs::read(dir.join("etc/new")).unwrap(), b"brand new");
    assert_eq!(std::fs::read(dir.join("etc/keep")).unwrap(), b"keep");
    assert!(
        t.path().join("dir/base/etc/old").exists(),
        "the parent is untouched"
    );

    assert_eq!(d.diff_size(&id("top"), Some(&id("base"))).await.unwrap(), 9);
    let changes = d.changes(&id("top"), Some(&id("base"))).await.unwrap();
    let listed: Vec<(String, strata_core::ChangeKind)> = changes
        .iter()
        .map(|c| (c.path.to_string_lossy().into_owned(), c.kind))
        .collect();
    assert!(listed.contains(&("/etc/old".into(), strata_core::ChangeKind::Delete)));
    assert!(listed.contains(&("/etc/new".into(), strata_core::ChangeKind::Add)));
    let tar = strata_core::stream::read_all(d.diff(&id("top"), Some(&id("base"))).await.unwrap())
        .await
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with("etc/.wh.old")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with("etc/new")), "{names:?}");
}

#[tokio::test]
async fn a_diff_in_flight_keeps_its_layers() {
    let t = tempfile::tempdir().unwrap();
    let d = driver(t.path()).await;
    d.create(&id("p"), None, &CreateOpts::read_only())
        .await
        .unwrap();
    d.create(&id("c"), Some(&id("p")), &CreateOpts::read_write())
        .await
        .unwrap();
    // Bigger than the stream's buffer, so the writer is still at work when remove is tried.
    std::fs::write(t.path().join("dir/c/file"), vec![3u8; 16 << 20]).unwrap();
    let stream = d.diff(&id("c"), Some(&id("p"))).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(matches!(d.remove(&id("c")).await, Err(Error::Busy(_))));
    let tar = strata_core::stream::read_all(stream).await.unwrap();
    assert!(tar.len() > 16 << 20);
    d.remove(&id("c")).await.unwrap();
    d.remove(&id("p")).await.unwrap();
}
