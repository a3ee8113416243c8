//! `docker pause` / `unpause`: freezing a running container's processes through its cgroup
//! (`cgroups::freezer`). The paused flag lives in memory only: a daemon that restarts kills
//! its containers anyway. A stop, kill or forced removal thaws the container first, so the
//! signal is acted upon (a frozen process cannot die on cgroup v1).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use strata_core::{Error, Result};

use super::Container;
use crate::cgroups::freezer;

pub async fn pause(c: &Arc<Container>) -> Result<()> {
    let _op = c.op_lock.lock().await;
    let id = c.record().id.clone();
    let running = c
        .running()
        .ok_or_else(|| Error::busy(format!("Container {id} is not running")))?;
    if c.paused.load(Ordering::SeqCst) {
        return Err(Error::busy(format!("Container {id} is already paused")));
    }
    let cg = running.cgroup().clone();
    blocking(move || freezer::freeze(&cg)).await?;
    c.paused.store(true, Ordering::SeqCst);
    // Once this run ends: forget the flag and drop the v1 freezer cgroup made for it.
    let c2 = c.clone();
    let cg = running.cgroup().clone();
    drop(running);
    let start = *c.exits.borrow();
    tokio::spawn(async move {
        let mut exits = c2.exits.subscribe();
        while exits.borrow_and_update().count == start.count {
            if exits.changed().await.is_err() {
                break;
            }
        }
        c2.paused.store(false, Ordering::SeqCst);
        if let Err(e) = blocking(move || freezer::remove_v1(&cg)).await {
            tracing::debug!("freezer cleanup: {e}");
        }
    });
    Ok(())
}

pub async fn unpause(c: &Arc<Container>) -> Result<()> {
    let _op = c.op_lock.lock().await;
    let id = c.record().id.clone();
    if !c.paused.load(Ordering::SeqCst) {
        return Err(Error::busy(format!("Container {id} is not paused")));
    }
    let running = c
        .running()
        .ok_or_else(|| Error::busy(format!("Container {id} is not running")))?;
    let cg = running.cgroup().clone();
    blocking(move || freezer::thaw(&cg)).await?;
    c.paused.store(false, Ordering::SeqCst);
    Ok(())
}

/// Thaws a paused container before a signal is sent to it (stop, kill, rm -f).
pub async fn thaw_for_signal(c: &Container) {
    if !c.paused.load(Ordering::SeqCst) {
        return;
    }
    if let Some(running) = c.running() {
        let cg = running.cgroup().clone();
        if let Err(e) = blocking(move || freezer::thaw(&cg)).await {
            tracing::warn!("thawing a paused container before signalling it: {e}");
        }
    }
    c.paused.store(false, Ordering::SeqCst);
}

pub fn is_paused(c: &Container) -> bool {
    c.paused.load(Ordering::SeqCst) && c.is_running()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Other(format!("freezer task: {e}")))?
}
