//! A driver that goes away mid-work, and a new one on the same root.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strata_core::fsutil::mounts;
use strata_core::{CreateOpts, LayerDriver, LayerId};

use crate::ctx::{reference_snapshot, Ctx};
use crate::ensure;
use crate::failure::{CaseResult, Step};
use crate::tree::ops::{self, mkdir, write};

fn complete_tree(r: &Path) -> std::io::Result<()> {
    super::basic::base_tree(r)?;
    write(&r.join("complete"), b"a complete layer\n", 0o644)
}

fn mounted_changes(r: &Path) -> std::io::Result<()> {
    write(
        &r.join("written-while-mounted"),
        b"must survive the restart\n",
        0o600,
    )
}

/// 24 MiB in 192 files: long enough to copy that a create of a child is still running when
/// it is aborted.
fn big_tree(r: &Path) -> std::io::Result<()> {
    for d in 0..12 {
        let dir = r.join(format!("d{d}"));
        mkdir(&dir, 0o755)?;
        for f in 0..16 {
            write(
                &dir.join(format!("f{f}")),
                &ops::pseudo_random(128 << 10, d * 100 + f),
                0o644,
            )?;
        }
    }
    Ok(())
}

/// Starts `create(half, big)` on a runtime of its own, aborts it 15 ms in, and shuts that
/// runtime down. Dropping a runtime waits for its blocking threads, so the create's blocking
/// work (which a crash would have killed) is over before a new driver looks at the root; what
/// stays is whatever the aborted future had done when it was dropped.
async fn abort_create_in_flight(
    driver: Arc<dyn LayerDriver>,
    half: LayerId,
    big: LayerId,
) -> CaseResult {
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let in_flight = runtime.spawn(async move {
            driver
                .create(&half, Some(&big), &CreateOpts::read_write())
                .await
        });
        runtime.block_on(async {
            tokio::time::sleep(Duration::from_millis(15)).await;
            in_flight.abort();
            let _ = in_flight.await;
        });
        drop(runtime);
        Ok(())
    })
    .await?
    .step("running the aborted create on its own runtime")
}

/// The driver is dropped with a layer mounted and a create in flight (aborted); a new driver
/// on the same root leaves nothing mounted, reads every complete layer back intact, has the
/// half-created layer either absent or complete, and can remove everything.
pub async fn restart_recovery(ctx: Ctx) -> CaseResult {
    let (_, complete_snap) = reference_snapshot(&ctx, "complete", complete_tree).await?;
    let (mounted_ref, _) = reference_snapshot(&ctx, "mounted", complete_tree).await?;
    crate::ctx::on_dir(&mounted_ref, mounted_changes).await?;
    let mounted_snap = crate::ctx::snapshot_of(&mounted_ref).await?;
    let (_, big_snap) = reference_snapshot(&ctx, "big", big_tree).await?;

    let complete = ctx.build_rw("complete", None, complete_tree).await?;
    let mounted = ctx.create_rw("mounted", Some(&complete)).await?;
    let path = ctx.mount(&mounted).await?;
    crate::ctx::on_dir(&path, mounted_changes).await?;
    let big = ctx.build_rw("big", None, big_tree).await?;

    let half = ctx.id("half");
    abort_create_in_flight(ctx.driver(), half.clone(), big.clone()).await?;

    let driver = ctx.reopen().await?;
    let root = ctx.root().to_path_buf();
    let left: Vec<String> = mounts::mounts_under(&root)
        .step("reading the mount table")?
        .into_iter()
        .filter(|m| m.mount_point != root)
        .map(|m| format!("{} ({})", m.mount_point.display(), m.fs_type))
        .collect();
    ensure!(
        left.is_empty(),
        "after a new driver opened on the root, mounts of the old one remain: {left:?} (start-up must recover stale mounts)"
    );
    for (id, snap, what) in [
        (&complete, &complete_snap, "the complete layer"),
        (
            &mounted,
            &mounted_snap,
            "the layer that was mounted when the driver went away",
        ),
        (&big, &big_snap, "the parent of the aborted create"),
    ] {
        ensure!(
            driver.exists(id).await?,
            "{what} ({id}) does not exist after the restart"
        );
        ctx.expect_tree(id, snap, &format!("{what}, after the restart"))
            .await?;
    }
    if driver.exists(&half).await? {
        ctx.expect_tree(
            &half,
            &big_snap,
            "the layer whose create was aborted (it exists, so it must be complete)",
        )
        .await?;
    } else {
        driver
            .create(&half, Some(&big), &CreateOpts::read_write())
            .await
            .step("creating the aborted layer's id again after the restart")?;
        ctx.expect_tree(&half, &big_snap, "the aborted layer, created again")
            .await?;
    }
    for id in [&half, &big, &mounted, &complete] {
        driver.remove(id).await.step(&format!(
            "remove({id}) after the restart (no mount count may survive the old driver)"
        ))?;
    }
    Ok(())
}
