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
