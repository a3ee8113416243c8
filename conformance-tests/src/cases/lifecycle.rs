//! Mount reference counts, refusals to remove what is in use, and many tasks at once.

use std::path::Path;

use strata_core::fsutil::mounts::mount_table;

use super::{expect_error, is_busy};
use crate::ctx::Ctx;
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::ops::write;
use crate::{ensure, ensure_eq};

fn mounts_at(path: &Path) -> CaseResult<usize> {
    Ok(mount_table()
        .step("reading the mount table")?
        .iter()
        .filter(|m| m.mount_point == path)
        .count())
}

/// A second mount returns the same path without stacking a second mount; data stays visible
/// until the last unmount, which really unmounts; data written survives a remount.
pub async fn mount_refcount(ctx: Ctx) -> CaseResult {
    let id = ctx
        .build_rw("counted", None, |r| {
            write(&r.join("lower"), b"lower\n", 0o644)
        })
        .await?;
    let first = ctx.mount(&id).await?;
    let mounted_once = mounts_at(&first)?;
    ensure!(
        mounted_once <= 1,
        "{} is mounted {mounted_once} times after one mount",
        first.display()
    );
    let second = ctx.mount(&id).await?;
    ensure_eq!(second, first, "the path of a second mount of {id}");
    ensure_eq!(
        mounts_at(&first)?,
        mounted_once,
        "mounts at {} after the second mount (no stacking)",
        first.display()
    );
    std::fs::write(first.join("marker"), b"written while mounted twice\n")
        .step("write through the mount")?;
    ctx.unmount(&id).await?;
    ensure_eq!(
        mounts_at(&first)?,
        mounted_once,
        "mounts at {} after the first of two unmounts",
        first.display()
    );
    let seen = std::fs::read(first.join("marker"))
        .step("read the marker after the first of two unmounts")?;
    ensure_eq!(
        seen,
        b"written while mounted twice\n".to_vec(),
        "the marker after one of two unmounts"
    );
    let lower =
        std::fs::read(first.join("lower")).step("read lower content after one of two unmounts")?;
    ensure_eq!(
        lower,
        b"lower\n".to_vec(),
        "the layer's content after one of two unmounts"
    );
    expect_error(
        ctx.driver().remove(&id).await,
        is_busy,
        "Busy",
        &format!("remove({id}) after one of two unmounts (one mount is still held)"),
    )?;
    ctx.unmount(&id).await?;
    ensure_eq!(
        mounts_at(&first)?,
        0,
        "mounts at {} after the last unmount",
        first.display()
    );
    let again = ctx.mount(&id).await?;
    let seen = std::fs::read(again.join("marker")).step("read the marker after a remount")?;
    ensure_eq!(
        seen,
        b"written while mounted twice\n".to_vec(),
        "the marker after a remount"
    );
    ctx.unmount(&id).await?;
    ctx.driver()
        .remove(&id)
        .await
        .step("remove after every mount was released (the count must be back at zero)")
}

/// A mounted layer and a layer with a child are refused removal with Busy, and lose nothing.
pub async fn remove_busy(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let (_, expected) =
        crate::ctx::reference_snapshot(&ctx, "busy", super::basic::base_tree).await?;
    let base = ctx.build_rw("busy", None, super::basic::base_tree).await?;
    let path = ctx.mount(&base).await?;
    expect_error(
        driver.remove(&base).await,
        is_busy,
        "Busy",
        &format!("remove({base}) while mounted"),
    )?;
    ensure!(
        driver.exists(&base).await?,
        "{base} does not exist after a refused remove"
    );
    let seen = crate::ctx::snapshot_of(&path).await?;
    expected
        .compare(&seen, "the mounted layer after a refused remove")
        .map_err(Failure::new)?;
    ctx.unmount(&base).await?;

    let child = ctx.create_rw("child", Some(&base)).await?;
    expect_error(
        driver.remove(&base).await,
        is_busy,
        "Busy",
        &format!("remove({base}) while {child} is its child"),
    )?;
    ctx.expect_tree(&base, &expected, "the parent after a refused remove")
        .await?;
    ctx.expect_tree(
        &child,
        &expected,
        "the child after its parent's refused remove",
    )
    .await?;
    driver.remove(&child).await.step("remove the child")?;
    driver
        .remove(&base)
        .await
        .step("remove the parent once it has no child")?;
    ensure!(!driver.exists(&base).await?, "{base} exists after remove");
    Ok(())
}

/// base → middle → top: the middle and the base cannot be removed while the top exists
/// (containerd RemoveIntermediateSnapshot); removing top-down works.
pub async fn remove_intermediate_refused(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let base = ctx
        .build_rw("base", None, |r| write(&r.join("base"), b"base\n", 0o644))
        .await?;
    let middle = ctx
        .build_rw("middle", Some(&base), |r| {
            write(&r.join("middle"), b"middle\n", 0o644)
        })
        .await?;
    let top = ctx.create_rw("top", Some(&middle)).await?;
    let expected = ctx.snapshot_layer(&top).await?;
    ensure!(
        expected.get("/base").is_some() && expected.get("/middle").is_some(),
        "the top layer lacks its parents' files"
    );
    expect_error(
        driver.remove(&middle).await,
        is_busy,
        "Busy",
        &format!("remove({middle}), the intermediate layer"),
    )?;
    expect_error(
        driver.remove(&base).await,
        is_busy,
        "Busy",
        &format!("remove({base}), the bottom layer"),
    )?;
    ctx.expect_tree(&top, &expected, "the top after refused removes below it")
        .await?;
    for id in [&top, &middle, &base] {
        driver
            .remove(id)
            .await
            .step(&format!("remove({id}) top-down"))?;
        ensure!(!driver.exists(id).await?, "{id} exists after remove");
    }
    Ok(())
}

const OWN_TASKS: usize = 32;
const SHARED_TASKS: usize = 16;
const SHARED_ROUNDS: usize = 10;

/// 32 tasks create, mount, write, unmount and remove their own layers (children of one shared
/// layer) while 16 tasks mount and unmount the shared layer: no error, and at the end the
/// shared layer's count is back to zero, so it can be removed.
pub async fn concurrent(ctx: Ctx) -> CaseResult {
    let shared = ctx
        .build_rw("shared", None, |r| {
            write(&r.join("shared"), b"shared content\n", 0o644)
        })
        .await?;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..OWN_TASKS {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tasks.spawn(async move {
            let own = ctx.create_rw(&format!("own{t}"), Some(&shared)).await?;
            let path = ctx.mount(&own).await?;
            let name = format!("own-{t}");
            let body = format!("written by task {t}\n");
            std::fs::write(path.join(&name), &body).step(&format!("task {t}: write"))?;
            let base = std::fs::read(path.join("shared"))
                .step(&format!("task {t}: read the shared file"))?;
            ensure_eq!(
                base,
                b"shared content\n".to_vec(),
                "task {t}: the parent's file in its own layer"
            );
            ctx.unmount(&own).await?;
            let path = ctx.mount(&own).await?;
            let back = std::fs::read(path.join(&name))
                .step(&format!("task {t}: read back after remount"))?;
            ensure_eq!(
                back,
                body.into_bytes(),
                "task {t}: its file after a remount"
            );
            ctx.unmount(&own).await?;
            ctx.driver()
                .remove(&own)
                .await
                .step(&format!("task {t}: remove {own}"))?;
            Ok::<(), Failure>(())
        });
    }
    for t in 0..SHARED_TASKS {
        let (ctx, shared) = (ctx.clone(), shared.clone());
        tasks.spawn(async move {
            for round in 0..SHARED_ROUNDS {
                let path = ctx.mount(&shared).await?;
                let seen = std::fs::read(path.join("shared"))
                    .step(&format!("mounter {t}, round {round}: read the shared file"))?;
                ensure_eq!(
                    seen,
                    b"shared content\n".to_vec(),
                    "mounter {t}, round {round}: the shared file"
                );
                tokio::task::yield_now().await;
                ctx.unmount(&shared).await?;
            }
            Ok(())
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(f)) => failures.push(f.message),
            Err(e) => failures.push(format!("a task panicked or was cancelled: {e}")),
        }
    }
    ensure!(
        failures.is_empty(),
        "{} of {} tasks failed:\n    {}",
        failures.len(),
        OWN_TASKS + SHARED_TASKS,
        failures.join("\n    ")
    );
    let driver = ctx.driver();
    driver
        .remove(&shared)
        .await
        .step("remove the shared layer after every task unmounted it and removed its child (a count left above zero?)")?;
    ensure!(
        !driver.exists(&shared).await?,
        "the shared layer exists after remove"
    );
    Ok(())
}
