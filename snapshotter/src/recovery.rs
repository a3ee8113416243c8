//! Bringing the metadata and the driver back in step at start (and on containerd's Cleanup):
//! a pending layer that no snapshot owns is a create or remove a crash cut short, so it goes;
//! a snapshot whose layer the driver lost is reported, not hidden.

use std::collections::HashSet;

use strata_core::{LayerDriver, LayerId};

use crate::error::Result;
use crate::service::MetaHandle;

/// Removes orphan layers and reports snapshots whose layer is missing.
pub async fn recover(driver: &dyn LayerDriver, meta: &MetaHandle) -> Result<()> {
    let removed = remove_orphans(driver, meta).await?;
    let all = meta.run(|m| m.list()).await?;
    for (key, record) in all {
        if let Some(layer) = &record.layer {
            if !driver.exists(layer).await? {
                tracing::error!(key, %layer, "snapshot's layer is missing from the driver");
            }
        }
    }
    tracing::info!(removed, "metadata and driver in step");
    Ok(())
}

/// Removes from the driver every pending layer no snapshot owns; returns how many went.
pub async fn remove_orphans(driver: &dyn LayerDriver, meta: &MetaHandle) -> Result<usize> {
    let pending = meta.run(|m| m.pending()).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let owned: HashSet<String> = meta
        .run(|m| m.list())
        .await?
        .into_iter()
        .filter_map(|(_, r)| r.layer.map(|l| l.to_string()))
        .collect();
    let mut removed = 0;
    for name in pending {
        if !owned.contains(&name) {
            let layer = match LayerId::new(name.clone()) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(name, "pending entry is no layer id: {e}");
                    let n = name.clone();
                    meta.run(move |m| m.drop_pending(&n)).await?;
                    continue;
                }
            };
            if driver.exists(&layer).await? {
                driver.remove(&layer).await?;
                removed += 1;
            }
        }
        meta.run(move |m| m.drop_pending(&name)).await?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    //! A kill -9 between the steps of Prepare and Remove, played by doing the steps before the
    //! crash point by hand and then opening the snapshotter again, as a restart does.

    use std::collections::HashMap;
    use std::path::Path;
    use std::sync::Arc;

    use containerd_snapshots::Snapshotter;
    use strata_core::registry::DriverConfig;
    use strata_core::{CreateOpts, LayerDriver, LayerId, StorageOpts};

    use crate::meta::Meta;
    use crate::StrataSnapshotter;

    async fn vfs(root: &Path) -> Arc<dyn LayerDriver> {
        let config = DriverConfig {
            root: root.join("layers"),
            options: StorageOpts::default(),
        };
        strata_vfs::init(config).await.expect("vfs")
    }

    #[tokio::test]
    async fn a_layer_created_before_its_record_is_removed_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.redb");
        let orphan = LayerId::random().unwrap();
        {
            // Prepare's first two steps: the layer is on `pending`, the driver made it, and
            // the process died before the record was written.
            let driver = vfs(dir.path()).await;
            Meta::open(&db).unwrap().add_pending(&orphan).unwrap();
            driver
                .create(&orphan, None, &CreateOpts::read_write())
                .await
                .unwrap();
        }
        let driver = vfs(dir.path()).await;
        let snap = StrataSnapshotter::open(Arc::clone(&driver), &db)
            .await
            .unwrap();
        assert!(
            !driver.exists(&orphan).await.unwrap(),
            "the orphan layer survived a restart"
        );
        let pending = snap.meta_handle().run(|m| m.pending()).await.unwrap();
        assert!(pending.is_empty(), "{pending:?}");
    }

    #[tokio::test]
    async fn a_removal_cut_short_is_finished_on_start_and_others_survive() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("metadata.redb");
        let (kept, dropped) = {
            let driver = vfs(dir.path()).await;
            let snap = StrataSnapshotter::open(Arc::clone(&driver), &db)
                .await
                .unwrap();
            snap.prepare("ns/1/base".into(), String::new(), HashMap::new())
                .await
                .unwrap();
            snap.commit("ns/2/base".into(), "ns/1/base".into(), HashMap::new())
                .await
                .unwrap();
            snap.prepare("ns/3/gone".into(), "ns/2/base".into(), HashMap::new())
                .await
                .unwrap();
            let layer_of = |key: &'static str| {
                let m = snap.meta_handle();
                async move {
                    m.run(move |m| m.get(key))
                        .await
                        .unwrap()
                        .unwrap()
                        .layer
                        .unwrap()
                }
            };
            let (kept, dropped) = (layer_of("ns/2/base").await, layer_of("ns/3/gone").await);
            // Remove's transaction committed; the process died before the driver removal.
            snap.meta_handle()
                .run(|m| m.remove("ns/3/gone"))
                .await
                .unwrap();
            (kept, dropped)
        };
        let driver = vfs(dir.path()).await;
        let snap = StrataSnapshotter::open(Arc::clone(&driver), &db)
            .await
            .unwrap();
        assert!(
            !driver.exists(&dropped).await.unwrap(),
            "the removed snapshot's layer survived"
        );
        assert!(driver.exists(&kept).await.unwrap());
        let info = snap.stat("ns/2/base".into()).await.unwrap();
        assert_eq!(info.kind, containerd_snapshots::Kind::Committed);
        assert!(snap.stat("ns/3/gone".into()).await.is_err());
    }
}
