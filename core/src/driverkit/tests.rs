use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::*;
use crate::error::{Error, Result};
use crate::ids::LayerId;

fn id(s: &str) -> LayerId {
    LayerId::new(s).unwrap()
}

/// Mount steps that record what the kit asked for and fail when told to. A real mount that
/// overlaps another step of the same layer, a second mount or an unmount of nothing panics.
#[derive(Default)]
struct Recorder {
    in_step: AtomicBool,
    mounted: AtomicBool,
    mounts: AtomicUsize,
    unmounts: AtomicUsize,
    fail_mount: AtomicBool,
    fail_unmount: AtomicBool,
}

impl Recorder {
    async fn step(&self, mounting: bool) -> Result<()> {
        assert!(
            !self.in_step.swap(true, Ordering::SeqCst),
            "two steps at once on one layer"
        );
        // Give the other tasks every chance to interleave.
        tokio::task::yield_now().await;
        let fail = if mounting {
            &self.fail_mount
        } else {
            &self.fail_unmount
        };
        let out = if fail.load(Ordering::SeqCst) {
            Err(Error::Other("told to fail".into()))
        } else {
            let was = self.mounted.swap(mounting, Ordering::SeqCst);
            assert_ne!(
                was, mounting,
                "mount of a mounted layer or unmount of an unmounted one"
            );
            let n = if mounting {
                &self.mounts
            } else {
                &self.unmounts
            };
            n.fetch_add(1, Ordering::SeqCst);
            Ok(())
        };
        self.in_step.store(false, Ordering::SeqCst);
        out
    }
}

#[async_trait]
impl MountOps<u32> for Recorder {
    type Handle = u32;

    async fn mount(&self, id: &LayerId, record: &u32) -> Result<(PathBuf, u32)> {
        self.step(true).await?;
        Ok((PathBuf::from(format!("/m/{id}")), *record))
    }

    async fn unmount(
        &self,
        _: &LayerId,
        record: &u32,
        path: &Path,
        handle: &mut u32,
    ) -> Result<()> {
        assert_eq!(
            record, handle,
            "the handle of the mount reaches its unmount"
        );
        assert!(path.starts_with("/m"));
        self.step(false).await
    }
}

fn base_and_child() -> Layers<u32, u32> {
    Layers::load(
        "test layer",
        [(id("base"), None, 1), (id("child"), Some(id("base")), 2)],
    )
}

#[test]
fn load_indexes_children_and_chains() {
    let layers = base_and_child();
    assert_eq!(layers.children(&id("base")), vec![id("child")]);
    assert_eq!(layers.parent(&id("child")).unwrap(), Some(id("base")));
    assert_eq!(layers.chain(&id("child")).unwrap(), vec![id("base")]);
    assert_eq!(layers.record(&id("child")).unwrap(), 2);
    assert_eq!(layers.ids(), vec![id("base"), id("child")]);
    assert!(matches!(
        layers.parent(&id("nope")),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn create_reserves_the_id_and_pins_the_parent_until_it_ends() {
    let layers = base_and_child();
    assert!(matches!(
        layers.begin_create(&id("base"), None),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        layers.begin_create(&id("x"), Some(&id("nope"))),
        Err(Error::NotFound(_))
    ));

    let creating = layers
        .begin_create(&id("grandchild"), Some(&id("child")))
        .unwrap();
    assert_eq!(creating.parent_record(), Some(&2));
    assert!(
        !layers.exists(&id("grandchild")),
        "invisible until committed"
    );
    assert!(matches!(
        layers.begin_create(&id("grandchild"), None),
        Err(Error::AlreadyExists(_))
    ));
    assert!(matches!(
        layers.begin_remove(&id("child")),
        Err(Error::Busy(_))
    ));
    drop(creating);
    assert!(
        layers.children(&id("child")).is_empty(),
        "a dropped create leaves nothing"
    );

    let creating = layers
        .begin_create(&id("grandchild"), Some(&id("child")))
        .unwrap();
    creating.commit(3);
    assert_eq!(
        layers.chain(&id("grandchild")).unwrap(),
        vec![id("child"), id("base")]
    );
    assert_eq!(layers.record(&id("grandchild")).unwrap(), 3);
}

#[test]
fn remove_refuses_parents_and_a_failed_removal_gives_the_layer_back() {
    let layers = base_and_child();
    let err = layers.begin_remove(&id("base")).err().unwrap();
    assert!(err.to_string().contains("child"), "{err}");
    let removing = layers.begin_remove(&id("child")).unwrap();
    assert_eq!(removing.record(), Some(&2));
    assert!(!layers.exists(&id("child")));
    assert!(matches!(
        layers.begin_remove(&id("child")),
        Err(Error::NotFound(_))
    ));
    drop(removing);
    assert!(layers.exists(&id("child")));
    layers.begin_remove(&id("child")).unwrap().done();
    assert!(!layers.exists(&id("child")));
    layers.begin_remove(&id("base")).unwrap().done();
    assert!(layers.is_empty());
}

#[tokio::test]
async fn mounts_are_counted_and_only_the_last_release_unmounts() {
    let (layers, ops) = (base_and_child(), Recorder::default());
    let child = id("child");
    let p1 = layers.acquire(&child, &ops).await.unwrap();
    let p2 = layers.acquire(&child, &ops).await.unwrap();
    assert_eq!(p1, p2);
    assert_eq!(ops.mounts.load(Ordering::SeqCst), 1);
    let err = layers.begin_remove(&child).err().unwrap();
    assert!(err.to_string().contains("2 reference"), "{err}");
    layers.release(&child, &ops).await.unwrap();
    assert_eq!(ops.unmounts.load(Ordering::SeqCst), 0);
    layers.release(&child, &ops).await.unwrap();
    assert_eq!(ops.unmounts.load(Ordering::SeqCst), 1);
    // Put is idempotent; an unknown layer is not found.
    layers.release(&child, &ops).await.unwrap();
    assert!(matches!(
        layers.release(&id("nope"), &ops).await,
        Err(Error::NotFound(_))
    ));
    layers.begin_remove(&child).unwrap().done();
    assert!(matches!(
        layers.acquire(&child, &ops).await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test]
async fn failed_steps_leave_the_counts_right() {
    let (layers, ops) = (base_and_child(), Recorder::default());
    let child = id("child");
    ops.fail_mount.store(true, Ordering::SeqCst);
    assert!(layers.acquire(&child, &ops).await.is_err());
    assert!(
        !layers.is_mounted(&child),
        "a failed mount holds no reference"
    );
    ops.fail_mount.store(false, Ordering::SeqCst);

    layers.acquire(&child, &ops).await.unwrap();
    ops.fail_unmount.store(true, Ordering::SeqCst);
    assert!(layers.release(&child, &ops).await.is_err());
    assert!(
        layers.is_mounted(&child),
        "a failed unmount keeps the mount"
    );
    ops.fail_unmount.store(false, Ordering::SeqCst);
    layers.release(&child, &ops).await.unwrap();
    assert!(!layers.is_mounted(&child));
    assert_eq!(ops.unmounts.load(Ordering::SeqCst), 1);
}

/// Guards the per-layer serialisation: many tasks on several threads mount and unmount one
/// layer at once; the recorder panics if two real steps overlap or repeat, and at the end the
/// layer must be unmounted with every mount matched by one unmount.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mounts_and_unmounts_of_one_layer_never_race() {
    let (layers, ops) = (base_and_child(), Arc::new(Recorder::default()));
    let child = id("child");
    let mut tasks = Vec::new();
    for t in 0..32 {
        let (layers, ops, child) = (layers.clone(), Arc::clone(&ops), child.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                layers.acquire(&child, ops.as_ref()).await.unwrap();
                if (t + i) % 3 == 0 {
                    tokio::task::yield_now().await;
                }
                layers.release(&child, ops.as_ref()).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(!ops.mounted.load(Ordering::SeqCst));
    let (m, u) = (
        ops.mounts.load(Ordering::SeqCst),
        ops.unmounts.load(Ordering::SeqCst),
    );
    assert!(m >= 1 && m == u, "{m} mounts, {u} unmounts");
    assert!(!layers.is_mounted(&child));
    layers.begin_remove(&child).unwrap().done();
}

#[tokio::test]
async fn held_mounts_release_once_whichever_way() {
    let (layers, ops) = (base_and_child(), Arc::new(Recorder::default()));
    let child = id("child");
    let held = layers.hold(&child, &ops).await.unwrap();
    assert_eq!(held.path, PathBuf::from("/m/child"));
    held.release().await.unwrap();
    assert!(!layers.is_mounted(&child));

    let held = layers.hold(&child, &ops).await.unwrap();
    run_blocking(move || held.release_blocking()).await.unwrap();
    assert!(!layers.is_mounted(&child));

    let held = layers.hold(&child, &ops).await.unwrap();
    drop(held);
    for _ in 0..100 {
        if !layers.is_mounted(&child) {
            assert_eq!(ops.unmounts.load(Ordering::SeqCst), 3);
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("a dropped guard was never released");
}

#[tokio::test]
async fn in_place_mounts_count_without_mounting() {
    let layers: Layers<()> = Layers::load("vfs layer", [(id("a"), None, ())]);
    let ops = InPlace(PathBuf::from("/dirs"));
    assert_eq!(
        layers.acquire(&id("a"), &ops).await.unwrap(),
        PathBuf::from("/dirs/a")
    );
    assert_eq!(layers.mounted(), 1);
    assert!(matches!(layers.begin_remove(&id("a")), Err(Error::Busy(_))));
    layers.release_all(&ops).await.unwrap();
    assert_eq!(layers.mounted(), 0);
    layers.begin_remove(&id("a")).unwrap().done();
}

#[test]
fn records_round_trip_in_the_vfs_format_and_drop_temporaries() {
    let t = tempfile::tempdir().unwrap();
    let records = RecordDir::new(t.path().to_path_buf());
    let plain = LayerRecord {
        parent: Some(id("p")),
        kind: None,
    };
    records.write(&id("a"), &plain).unwrap();
    assert_eq!(
        std::fs::read_to_string(t.path().join("a.json")).unwrap(),
        r#"{"parent":"p"}"#
    );
    let kinded = LayerRecord {
        parent: None,
        kind: Some(crate::LayerKind::ReadWrite),
    };
    records.write(&id("b"), &kinded).unwrap();
    std::fs::write(t.path().join(".a.json.tmp-x"), b"{").unwrap();
    let mut loaded = records.load().unwrap();
    loaded.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(loaded, vec![(id("a"), plain), (id("b"), kinded)]);
    assert!(!t.path().join(".a.json.tmp-x").exists());
    records.remove(&id("a")).unwrap();
    records.remove(&id("a")).unwrap();
    std::fs::write(t.path().join("c.json"), b"{").unwrap();
    let err = records.load().unwrap_err().to_string();
    assert!(err.contains("c.json"), "{err}");
}
