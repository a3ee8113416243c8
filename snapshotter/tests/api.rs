//! The Snapshots API as containerd's proxy drives it, against an in-process server, with the
//! returned mounts mounted the way containerd 1.6 mounts them (its lowerdir compaction
//! included). Cases after containerd's `snapshots/testsuite` (Basic, StatActive/Committed,
//! Update, Remove, Walk, ViewReadonly, Rename, 128LayersMount), which cannot be built here: see
//! the crate's notes in docs/design-notes.md.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use strata_snapshotter::api::snapshots::v1 as api;
use strata_snapshotter::api::types::Mount;
use strata_snapshotter::client::{connect, Client};
use strata_snapshotter::drivers::DriverSource;
use strata_snapshotter::{server, StrataSnapshotter};
use tonic_code::Code;

mod tonic_code {
    pub use containerd_snapshots::tonic::Code;
}

/// An in-process snapshotter on `driver` in a temporary directory; stopped when dropped.
struct Served {
    client: Client,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
        let _ = strata_core::fsutil::mounts::unmount_all_under(self.dir.path());
    }
}

async fn serve(driver: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    std::fs::create_dir(&layers).unwrap();
    let source = DriverSource::Builtin(driver.into());
    let d = source.open(&layers, &[]).await.expect("open the driver");
    let snap = StrataSnapshotter::open(d, &dir.path().join("metadata.redb"))
        .await
        .unwrap();
    let socket = dir.path().join("s.sock");
    let listener = server::bind(&socket).unwrap();
    let task = tokio::spawn(async move {
        let _ = server::serve(Arc::new(snap), listener, std::future::pending()).await;
    });
    let client = connect(&socket).await.expect("connect");
    Served { client, dir, task }
}

fn labels() -> HashMap<String, String> {
    HashMap::new()
}

async fn prepare(c: &mut Client, key: &str, parent: &str) -> Result<Vec<Mount>, Code> {
    let req = api::PrepareSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
        parent: parent.into(),
        labels: labels(),
    };
    c.prepare(req)
        .await
        .map(|r| r.into_inner().mounts)
        .map_err(|s| s.code())
}

async fn view(c: &mut Client, key: &str, parent: &str) -> Result<Vec<Mount>, Code> {
    let req = api::ViewSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
        parent: parent.into(),
        labels: labels(),
    };
    c.view(req)
        .await
        .map(|r| r.into_inner().mounts)
        .map_err(|s| s.code())
}

async fn commit(c: &mut Client, name: &str, key: &str) -> Result<(), Code> {
    let req = api::CommitSnapshotRequest {
        snapshotter: String::new(),
        name: name.into(),
        key: key.into(),
        labels: labels(),
    };
    c.commit(req).await.map(|_| ()).map_err(|s| s.code())
}

async fn remove(c: &mut Client, key: &str) -> Result<(), Code> {
    let req = api::RemoveSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
    };
    c.remove(req).await.map(|_| ()).map_err(|s| s.code())
}

async fn stat(c: &mut Client, key: &str) -> Result<api::Info, Code> {
    let req = api::StatSnapshotRequest {
        snapshotter: String::new(),
        key: key.into(),
    };
    c.stat(req)
        .await
        .map(|r| r.into_inner().info.unwrap())
        .map_err(|s| s.code())
}

/// Mounts as containerd 1.6's `mount.Mount.Mount` does: binds with MS_BIND (and a read-only
/// remount); overlays with mount(2) data, and when the data reaches a page less 512 bytes, the
/// lowerdirs relative to their common directory, mounted from inside it.
fn mount_like_containerd(m: &[Mount], target: &Path) {
    assert_eq!(m.len(), 1, "{m:?}");
    let m = &m[0];
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if m.r#type == "bind" {
        run(Command::new("mount")
            .arg("--rbind")
            .arg(&m.source)
            .arg(target));
        if m.options.iter().any(|o| o == "ro") {
            run(Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(target));
        }
        return;
    }
    assert_eq!(m.r#type, "overlay");
    let data = m.options.join(",");
    if data.len() < 4096 - 512 {
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &data])
            .arg(target));
        return;
    }
    let (dir, compacted) = compact_lowerdir(&m.options);
    run(Command::new("mount")
        .current_dir(dir)
        .args(["-t", "overlay", "overlay", "-o", &compacted.join(",")])
        .arg(target));
}

/// containerd's `compactLowerdirOption`: the common directory of the lowerdirs (cut back to a
/// whole directory) and the options with lowerdirs relative to it.
fn compact_lowerdir(options: &[String]) -> (PathBuf, Vec<String>) {
    let lower = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap();
    let dirs: Vec<&str> = lower.split(':').collect();
    let mut prefix = dirs[0].to_string();
    for d in &dirs[1..] {
        while !d.starts_with(&prefix) {
            prefix.pop();
        }
    }
    // Go's path.Dir: everything before the last slash ("/r/l/AB" and "/r/l/" both give "/r/l").
    let common = format!("{}/", &prefix[..prefix.rfind('/').unwrap()]);
    let relative: Vec<&str> = dirs.iter().map(|d| &d[common.len()..]).collect();
    let opts = options
        .iter()
        .map(|o| match o.starts_with("lowerdir=") {
            true => format!("lowerdir={}", relative.join(":")),
            false => o.clone(),
        })
        .collect();
    (PathBuf::from(common), opts)
}

fn umount(target: &Path) {
    let ok = Command::new("umount")
        .arg(target)
        .status()
        .unwrap()
        .success();
    assert!(ok, "umount {}", target.display());
}

/// Basic: write through an active snapshot, commit, build on it, read through a view.
async fn basic(driver: &str) {
    let mut s = serve(driver).await;
    let target = s.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let c = &mut s.client;
    let m = prepare(c, "ns/1/base", "").await.unwrap();
    mount_like_containerd(&m, &target);
    std::fs::write(target.join("a"), "one").unwrap();
    std::fs::create_dir(target.join("gone")).unwrap();
    umount(&target);
    commit(c, "base", "ns/1/base").await.unwrap();
    assert_eq!(stat(c, "base").await.unwrap().kind, 3, "committed");
    let m = prepare(c, "ns/2/child", "base").await.unwrap();
    assert_eq!(stat(c, "ns/2/child").await.unwrap().kind, 2, "active");
    mount_like_containerd(&m, &target);
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "one");
    std::fs::write(target.join("b"), "two").unwrap();
    std::fs::remove_dir(target.join("gone")).unwrap();
    umount(&target);
    commit(c, "child", "ns/2/child").await.unwrap();
    let m = view(c, "ns/3/view", "child").await.unwrap();
    mount_like_containerd(&m, &target);
    assert_eq!(std::fs::read_to_string(target.join("b")).unwrap(), "two");
    assert!(
        !target.join("gone").exists(),
        "a deletion in the child shows through"
    );
    let err = std::fs::write(target.join("c"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "views are read-only");
    umount(&target);
    assert_eq!(
        remove(c, "child").await,
        Err(Code::FailedPrecondition),
        "has a view"
    );
    remove(c, "ns/3/view").await.unwrap();
    remove(c, "child").await.unwrap();
    remove(c, "base").await.unwrap();
    assert_eq!(stat(c, "base").await.unwrap_err(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_on_vfs() {
    basic("vfs").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_on_overlay2() {
    basic("overlay2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_on_fuse_overlay() {
    basic("fuse-overlay").await;
}

/// The refusals containerd relies on, with the codes its proxy maps back to errdefs.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_carry_containerds_codes() {
    let mut s = serve("vfs").await;
    let c = &mut s.client;
    prepare(c, "a", "").await.unwrap();
    assert_eq!(prepare(c, "a", "").await.unwrap_err(), Code::AlreadyExists);
    assert_eq!(
        prepare(c, "b", "a").await.unwrap_err(),
        Code::InvalidArgument,
        "active parent"
    );
    assert_eq!(
        prepare(c, "b", "missing").await.unwrap_err(),
        Code::NotFound
    );
    view(c, "v", "").await.unwrap();
    assert_eq!(
        commit(c, "x", "v").await.unwrap_err(),
        Code::FailedPrecondition,
        "a view"
    );
    commit(c, "a1", "a").await.unwrap();
    prepare(c, "a2", "").await.unwrap();
    assert_eq!(
        commit(c, "a1", "a2").await.unwrap_err(),
        Code::AlreadyExists,
        "name taken"
    );
    assert_eq!(
        stat(c, "a").await.unwrap_err(),
        Code::NotFound,
        "commit drops the key"
    );
    let mounts = c.mounts(api::MountsRequest {
        snapshotter: String::new(),
        key: "a1".into(),
    });
    assert_eq!(
        mounts.await.unwrap_err().code(),
        Code::FailedPrecondition,
        "committed"
    );
}

/// Update by field paths, and List with filters.
#[tokio::test(flavor = "multi_thread")]
async fn update_labels_and_list_filters() {
    let mut s = serve("vfs").await;
    let c = &mut s.client;
    prepare(c, "k", "").await.unwrap();
    commit(c, "c", "k").await.unwrap();
    prepare(c, "k2", "c").await.unwrap();
    let update = |labels: &[(&str, &str)], paths: &[&str]| api::UpdateSnapshotRequest {
        snapshotter: String::new(),
        info: Some(api::Info {
            name: "c".into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: paths.iter().map(|p| p.to_string()).collect(),
        }),
    };
    let gc = "containerd.io/gc.root";
    c.update(update(&[(gc, "x"), ("other", "1")], &[]))
        .await
        .unwrap();
    c.update(update(&[("third", "3")], &["labels.third", "labels.other"]))
        .await
        .unwrap();
    let info = stat(c, "c").await.unwrap();
    let mut got: Vec<_> = info.labels.into_iter().collect();
    got.sort();
    assert_eq!(
        got,
        [
            (gc.to_string(), "x".to_string()),
            ("third".into(), "3".into())
        ]
    );
    let bad = c.update(update(&[], &["parent"])).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let list = |filters: &[&str]| api::ListSnapshotsRequest {
        snapshotter: String::new(),
        filters: filters.iter().map(|f| f.to_string()).collect(),
    };
    for (filters, want) in [
        (vec![], vec!["c", "k2"]),
        (vec!["kind==active"], vec!["k2"]),
        (vec!["parent==c"], vec!["k2"]),
        (vec![r#"labels."containerd.io/gc.root""#], vec!["c"]),
    ] {
        let mut stream = c.list(list(&filters)).await.unwrap().into_inner();
        let mut names = Vec::new();
        while let Some(batch) = stream.message().await.unwrap() {
            names.extend(batch.info.into_iter().map(|i| i.name));
        }
        names.sort();
        assert_eq!(names, want, "{filters:?}");
    }
}

/// Builds a `depth`-deep overlay2 chain through the API, each layer adding one file, and
/// mounts a view of its top as containerd would; every layer's file must show.
async fn deep_overlay2_chain(depth: usize, expected_type: &str) {
    let mut s = serve("overlay2").await;
    let target = s.dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let c = &mut s.client;
    let mut parent = String::new();
    for i in 0..depth {
        let key = format!("ns/{i}/active");
        let m = prepare(c, &key, &parent).await.unwrap();
        mount_like_containerd(&m, &target);
        std::fs::write(target.join(format!("f{i}")), i.to_string()).unwrap();
        umount(&target);
        parent = format!("layer-{i}");
        commit(c, &parent, &key).await.unwrap();
    }
    let m = view(c, "ns/view", &parent).await.unwrap();
    assert_eq!(m[0].r#type, expected_type, "{m:?}");
    mount_like_containerd(&m, &target);
    for i in [0, depth / 2, depth - 1] {
        let got = std::fs::read_to_string(target.join(format!("f{i}"))).unwrap();
        assert_eq!(got, i.to_string());
    }
    umount(&target);
    remove(c, "ns/view").await.unwrap();
}

/// 128LayersMount and beyond: a 140-deep chain is still an overlay containerd mounts itself
/// (its lowerdir compaction keeps the options in one page).
#[tokio::test(flavor = "multi_thread")]
async fn a_140_deep_overlay2_chain_is_an_overlay_containerd_mounts() {
    deep_overlay2_chain(140, "overlay").await;
}

/// Past one page of options the snapshotter mounts through the driver (lowerdir+, up to the
/// kernel's 500 lowers) and hands containerd a bind: the depth is the driver's, not mount(2)'s.
#[tokio::test(flavor = "multi_thread")]
async fn a_200_deep_overlay2_chain_is_mounted_by_the_driver_and_bound() {
    deep_overlay2_chain(200, "bind").await;
}
