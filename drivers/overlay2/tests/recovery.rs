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
        let link = std::fs::read_to_string(d.root().join(rw.as_str()).join("link")).unwrap();
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
