//! Start-up recovery: stale mounts, missing short links, half-created layers, and the child
//! index rebuilt from disk.

mod common;

use common::*;
use strata_core::{Error, LayerDriver};

#[tokio::test]
async fn recovers_after_a_crash() {
    let t = TestDir::new();
    let root = t.root();
    let (merged, link) = {
        let d = open(&root).await;
        create_ro(&d, 1, None).await;
        let rw = create_rw(&d, 2, Some(1)).await;
        let merged = d.mount(&rw, "").await.unwrap();
        let link =
            std::fs::read_to_string(d.driver().root().join(rw.as_str()).join("link")).unwrap();
        (merged, link)
        // Dropped without cleanup: the mount stays, as after a crash.
    };
    assert!(mounted(&merged));
    std::fs::remove_file(root.join("l").join(&link)).unwrap();
    std::fs::create_dir_all(root.join(".creating-abc/diff")).unwrap();
    std::fs::create_dir_all(root.join(".removing-def/diff")).unwrap();

    let d = open(&root).await;
    assert!(!mounted(&merged), "stale mount removed");
    assert!(!merged.exists());
    assert!(root.join("l").join(&link).is_symlink(), "link recreated");
    assert!(!root.join(".creating-abc").exists());
    assert!(!root.join(".removing-def").exists());
    assert!(d.exists(&id(2)).await.unwrap());
    assert!(
        matches!(d.remove(&id(1)).await, Err(Error::Busy(_))),
        "children recounted"
    );
    let p = d.mount(&id(2), "").await.unwrap();
    assert!(mounted(&p));
    d.unmount(&id(2)).await.unwrap();
    d.remove(&id(2)).await.unwrap();
    d.remove(&id(1)).await.unwrap();
}

/// What a crash between the rename into place and the end of create's fsyncs can leave: a
/// layer directory under its final name with a torn `link` or `lower`, or without `diff` or
/// `work`. Recovery removes each such layer; sound layers and their chains stay.
#[tokio::test]
async fn torn_creations_are_removed() {
    let t = TestDir::new();
    let root = t.root();
    {
        let d = open(&root).await;
        create_ro(&d, 1, None).await;
        for n in 2..=6 {
            create_rw(&d, n, Some(1)).await;
        }
        create_rw(&d, 7, None).await;
    }
    let layer = |n: usize| root.join(id(n).as_str());
    std::fs::write(layer(2).join("link"), "").unwrap();
    std::fs::write(layer(3).join("lower"), "").unwrap();
    std::fs::remove_dir_all(layer(4).join("diff")).unwrap();
    std::fs::remove_dir_all(layer(5).join("work")).unwrap();
    // A lower that parses but names no layer's chain: left out, not deleted.
    let fake = format!("l/{}", "A".repeat(26));
    std::fs::write(layer(6).join("lower"), &fake).unwrap();

    let d = open(&root).await;
    for n in 2..=5 {
        assert!(!layer(n).exists(), "torn layer {n} removed");
        assert!(!d.exists(&id(n)).await.unwrap());
    }
    assert!(
        layer(6).exists(),
        "a layer with a foreign chain is kept on disk"
    );
    assert!(!d.exists(&id(6)).await.unwrap(), "but not used");
    assert!(d.exists(&id(1)).await.unwrap());
    assert!(d.exists(&id(7)).await.unwrap());
    // The sound ones work, and a removed id can be created again.
    create_rw(&d, 2, Some(1)).await;
    let p = d.mount(&id(2), "").await.unwrap();
    assert!(mounted(&p));
    d.unmount(&id(2)).await.unwrap();
    d.remove(&id(2)).await.unwrap();
    d.remove(&id(7)).await.unwrap();
    d.remove(&id(1)).await.unwrap();
}
