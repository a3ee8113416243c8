//! Tests of the local volume driver. They run as root (tmpfs and bind mounts).

use super::*;

/// A temporary volumes root; in Drop every mount left below it is taken down first, also when
/// a test fails half way.
struct TestRoot(tempfile::TempDir);

impl TestRoot {
    fn new() -> Self {
        TestRoot(tempfile::tempdir().unwrap())
    }

    fn volumes(&self) -> PathBuf {
        self.0.path().join("volumes")
    }
}

impl Drop for TestRoot {
    fn drop(&mut self) {
        let _ = mounts::unmount_all_under(self.0.path());
    }
}

fn name(s: &str) -> VolumeName {
    VolumeName::new(s).unwrap()
}

fn caller(s: &str) -> CallerId {
    CallerId::new(s).unwrap()
}

fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn fs_type_at(path: &Path) -> Option<String> {
    mounts::mount_table()
        .unwrap()
        .into_iter()
        .rev()
        .find(|m| m.mount_point == path)
        .map(|m| m.fs_type)
}

#[tokio::test]
async fn plain_volume_lifecycle() {
    let root = TestRoot::new();
    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    assert_eq!(d.capabilities().scope, VolumeScope::Local);
    d.create(&name("data1"), &BTreeMap::new()).await.unwrap();
    // Same name, same options: Docker's local driver says yes.
    d.create(&name("data1"), &BTreeMap::new()).await.unwrap();

    let data = root.volumes().join("data1/_data");
    assert_eq!(d.path(&name("data1")).await.unwrap(), data);
    let info = d.get(&name("data1")).await.unwrap();
    assert_eq!(info.mountpoint.as_deref(), Some(data.as_path()));
    let created = info.created_at.unwrap();
    assert_eq!(created.len(), 20, "{created}");
    assert!(
        created.ends_with('Z') && created.starts_with("20"),
        "{created}"
    );

    let p = d.mount(&name("data1"), &caller("c1")).await.unwrap();
    assert_eq!(p, data);
    std::fs::write(p.join("hello.txt"), vec![b'x'; 10_000]).unwrap();
    let u = d.usage(&name("data1")).await.unwrap();
    // The volume's directory, its options file, `_data` and the file.
    assert_eq!(u.inodes, 4);
    assert!(u.bytes >= 10_000, "{u:?}");

    let err = d.remove(&name("data1")).await.unwrap_err();
    assert!(matches!(err, Error::Busy(_)), "{err}");
    assert!(err.to_string().contains("c1"), "{err}");
    d.unmount(&name("data1"), &caller("c1")).await.unwrap();
    d.remove(&name("data1")).await.unwrap();
    assert!(!root.volumes().join("data1").exists());
    assert!(matches!(
        d.get(&name("data1")).await,
        Err(Error::NotFound(_))
    ));
    assert!(d.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn options_are_checked_like_docker() {
    let root = TestRoot::new();
    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    for bad in [
        opts(&[("size", "10m")]),
        opts(&[("type", "tmpfs")]),
        opts(&[("device", "tmpfs")]),
        opts(&[("o", "size=1m"), ("type", "tmpfs")]),
        opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "remount")]),
    ] {
        let err = d.create(&name("bad"), &bad).await.unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{bad:?}: {err}");
    }
    assert!(d.list().await.unwrap().is_empty());
    assert!(!root.volumes().join("bad").exists());

    let tmpfs = opts(&[("type", "tmpfs"), ("device", "tmpfs")]);
    d.create(&name("v1"), &BTreeMap::new()).await.unwrap();
    assert!(matches!(
        d.create(&name("v1"), &tmpfs).await,
        Err(Error::AlreadyExists(_))
    ));
}

#[tokio::test]
async fn tmpfs_volume_is_mounted_for_its_callers_only() {
    let root = TestRoot::new();
    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    let o = opts(&[
        ("type", "tmpfs"),
        ("device", "tmpfs"),
        ("o", "size=8m,uid=1000,mode=0750"),
    ]);
    d.create(&name("scratch"), &o).await.unwrap();
    let data = d.path(&name("scratch")).await.unwrap();
    assert_eq!(
        fs_type_at(&data),
        None,
        "not mounted before the first caller"
    );

    let p = d.mount(&name("scratch"), &caller("c1")).await.unwrap();
    assert_eq!(fs_type_at(&p).as_deref(), Some("tmpfs"));
    let m = std::fs::metadata(&p).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((m.uid(), m.mode() & 0o777), (1000, 0o750));
    std::fs::write(p.join("f"), b"in memory").unwrap();
    let big = std::fs::write(p.join("big"), vec![0u8; 9 << 20]);
    assert!(big.is_err(), "size=8m is enforced");

    // The same caller twice is one reference; a second caller is another.
    d.mount(&name("scratch"), &caller("c1")).await.unwrap();
    d.mount(&name("scratch"), &caller("c2")).await.unwrap();
    d.unmount(&name("scratch"), &caller("c1")).await.unwrap();
    assert_eq!(
        fs_type_at(&p).as_deref(),
        Some("tmpfs"),
        "c2 still holds it"
    );
    assert!(matches!(
        d.remove(&name("scratch")).await,
        Err(Error::Busy(_))
    ));
    let info = d.get(&name("scratch")).await.unwrap();
    assert_eq!(info.options, o);
    assert_eq!(
        info.status.get("mounted"),
        Some(&serde_json::Value::Bool(true))
    );
    d.unmount(&name("scratch"), &caller("c2")).await.unwrap();
    assert_eq!(fs_type_at(&p), None, "the last caller's unmount unmounts");
    assert!(!p.join("f").exists(), "tmpfs content goes with the mount");
    d.remove(&name("scratch")).await.unwrap();
}

#[tokio::test]
async fn bind_volume_shows_its_device_and_removal_keeps_the_source() {
    let root = TestRoot::new();
    let src = root.0.path().join("host-dir");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("kept"), b"host data").unwrap();
    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    let o = opts(&[
        ("type", "none"),
        ("o", "bind,ro"),
        ("device", src.to_str().unwrap()),
    ]);
    d.create(&name("hostvol"), &o).await.unwrap();
    let p = d.mount(&name("hostvol"), &caller("c1")).await.unwrap();
    assert_eq!(std::fs::read(p.join("kept")).unwrap(), b"host data");
    assert!(std::fs::write(p.join("new"), b"x").is_err(), "ro bind");
    d.unmount(&name("hostvol"), &caller("c1")).await.unwrap();
    d.remove(&name("hostvol")).await.unwrap();
    assert_eq!(std::fs::read(src.join("kept")).unwrap(), b"host data");
}

#[tokio::test]
async fn restart_reloads_volumes_and_drops_crash_leftovers() {
    let root = TestRoot::new();
    let o = opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]);
    let created_at;
    {
        let d = LocalVolumes::new(root.volumes()).await.unwrap();
        d.create(&name("plain"), &BTreeMap::new()).await.unwrap();
        d.create(&name("mem"), &o).await.unwrap();
        created_at = d.get(&name("mem")).await.unwrap().created_at;
        // The daemon "crashes" with the tmpfs mounted.
        d.mount(&name("mem"), &caller("c1")).await.unwrap();
    }
    let mem_data = root.volumes().join("mem/_data");
    assert_eq!(fs_type_at(&mem_data).as_deref(), Some("tmpfs"));
    // And a create was interrupted before its rename.
    std::fs::create_dir_all(root.volumes().join(".tmp-half-0011/_data")).unwrap();

    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    assert_eq!(fs_type_at(&mem_data), None, "stale mount dropped");
    assert!(!root.volumes().join(".tmp-half-0011").exists());
    let names: Vec<String> = d
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["mem", "plain"]);
    let mem = d.get(&name("mem")).await.unwrap();
    assert_eq!(mem.options, o);
    assert_eq!(mem.created_at, created_at);
    // Nobody holds it after a restart: it can go.
    d.remove(&name("mem")).await.unwrap();
}

#[test]
fn rfc3339_dates() {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096);
    assert_eq!(rfc3339_utc(t), "2024-02-29T12:34:56Z");
    assert_eq!(rfc3339_utc(std::time::UNIX_EPOCH), "1970-01-01T00:00:00Z");
}

/// The size `system df` reads is the driver's, kept from the last unmount: what the last
/// user wrote is in it, exactly what a walk of the volume's directory finds, and a new
/// mount drops it (the volume may change again).
#[tokio::test]
async fn usage_is_measured_when_the_last_user_unmounts() {
    let root = TestRoot::new();
    let d = LocalVolumes::new(root.volumes()).await.unwrap();
    d.create(&name("sized"), &BTreeMap::new()).await.unwrap();
    let dir = root.volumes().join("sized");
    let p = d.mount(&name("sized"), &caller("c1")).await.unwrap();
    std::fs::write(p.join("a"), vec![1u8; 100_000]).unwrap();
    d.unmount(&name("sized"), &caller("c1")).await.unwrap();
    let kept = d.usage(&name("sized")).await.unwrap();
    assert_eq!(kept, fsutil::usage::tree_usage(&dir).unwrap());
    assert!(kept.bytes >= 100_000, "{kept:?}");

    let p = d.mount(&name("sized"), &caller("c2")).await.unwrap();
    std::fs::write(p.join("b"), vec![2u8; 200_000]).unwrap();
    // Held: measured now, not the kept figure.
    let live = d.usage(&name("sized")).await.unwrap();
    assert!(
        live.bytes >= kept.bytes + 200_000,
        "{live:?} after {kept:?}"
    );
    d.unmount(&name("sized"), &caller("c2")).await.unwrap();
    assert_eq!(
        d.usage(&name("sized")).await.unwrap(),
        fsutil::usage::tree_usage(&dir).unwrap()
    );
}
