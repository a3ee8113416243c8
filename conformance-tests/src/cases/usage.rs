//! What layers cost on disk, and size quotas.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_core::{CreateOpts, StorageOpts, Usage};

use crate::ctx::Ctx;
use crate::ensure;
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::ops::{self, mkdir};

/// Filesystem metadata a driver may add beyond the blocks of the files written (directory
/// blocks, extent trees, a qgroup's tree blocks). Far below the 1 MiB file counted twice or
/// the parent's 1.3 MiB counted in a child, which is what the case catches.
const SLACK: u64 = 64 * 1024;

/// Allocated bytes (st_blocks × 512) of these paths, each inode once.
fn allocated(paths: &[std::path::PathBuf]) -> std::io::Result<(u64, u64)> {
    let mut seen = std::collections::HashSet::new();
    let (mut bytes, mut inodes) = (0, 0);
    for p in paths {
        let m = std::fs::symlink_metadata(p)?;
        if seen.insert(m.ino()) {
            bytes += m.blocks() * 512;
            inodes += 1;
        }
    }
    Ok((bytes, inodes))
}

fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

/// Writes the parent layer's content; returns (allocated bytes, inodes) of what it added.
fn parent_content(r: &Path) -> std::io::Result<(u64, u64)> {
    mkdir(&r.join("data"), 0o755)?;
    write_synced(&r.join("data/big"), &ops::pseudo_random(1 << 20, 1))?;
    write_synced(&r.join("data/mid"), &ops::pseudo_random(256 << 10, 2))?;
    write_synced(&r.join("small"), &ops::pseudo_random(4000, 3))?;
    ops::hardlink(&r.join("data/big"), &r.join("big-link"))?;
    let names = ["data", "data/big", "data/mid", "small", "big-link"];
    allocated(&names.iter().map(|n| r.join(n)).collect::<Vec<_>>())
}

fn check_growth(before: Usage, after: Usage, bytes: u64, inodes: u64, what: &str) -> CaseResult {
    let grew = after.bytes as i128 - before.bytes as i128;
    let grew_inodes = after.inodes as i128 - before.inodes as i128;
    ensure!(
        grew_inodes == inodes as i128,
        "{what}: usage inodes went from {} to {} (+{grew_inodes}), expected +{inodes} (hard links count once)",
        before.inodes,
        after.inodes
    );
    ensure!(
        (grew - bytes as i128).unsigned_abs() <= SLACK as u128,
        "{what}: usage bytes went from {} to {} (+{grew}), expected +{bytes} (st_blocks of what was written, \
         hard links once) within {SLACK} bytes",
        before.bytes,
        after.bytes
    );
    Ok(())
}

async fn usage_of(ctx: &Ctx, id: &strata_core::LayerId) -> CaseResult<Usage> {
    ctx.driver().usage(id).await.step(&format!("usage({id})"))
}

/// A layer's usage grows by the allocated bytes and inodes its own content adds (hard links
/// once); a child's usage excludes its parent when the driver shares parent data, or holds a
/// full copy when it does not; a child's writes leave the parent's usage unchanged.
pub async fn usage_accounting(ctx: Ctx) -> CaseResult {
    let parent = ctx.create_rw("parent", None).await?;
    let empty = usage_of(&ctx, &parent).await?;
    let path = ctx.mount(&parent).await?;
    let (bytes, inodes) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || parent_content(&path)
    })
    .await?
    .step("writing the parent's content")?;
    ctx.unmount(&parent).await?;
    let full = usage_of(&ctx, &parent).await?;
    check_growth(
        empty,
        full,
        bytes,
        inodes,
        "the parent after writing 1.3 MiB in 4 inodes",
    )?;

    let child = ctx.create_rw("child", Some(&parent)).await?;
    let fresh = usage_of(&ctx, &child).await?;
    if ctx.driver().capabilities().layers_share_parent {
        ensure!(
            fresh.bytes <= SLACK,
            "a fresh child of a parent with {} bytes uses {} bytes, but the driver declares layers_share_parent: \
             a child's usage must exclude its parent",
            full.bytes,
            fresh.bytes
        );
    } else {
        ensure!(
            fresh.bytes + SLACK >= full.bytes && fresh.inodes >= full.inodes,
            "a fresh child uses {fresh:?}, less than its parent's {full:?}, but the driver declares full copies \
             (layers_share_parent false)"
        );
    }
    let path = ctx.mount(&child).await?;
    let written = tokio::task::spawn_blocking({
        let path = path.clone();
        move || -> std::io::Result<(u64, u64)> {
            write_synced(&path.join("child-file"), &ops::pseudo_random(512 << 10, 9))?;
            allocated(&[path.join("child-file")])
        }
    })
    .await?
    .step("writing in the child")?;
    ctx.unmount(&child).await?;
    let after = usage_of(&ctx, &child).await?;
    check_growth(
        fresh,
        after,
        written.0,
        written.1,
        "the child after writing 512 KiB",
    )?;
    let parent_after = usage_of(&ctx, &parent).await?;
    ensure!(
        (parent_after.bytes as i128 - full.bytes as i128).unsigned_abs() <= SLACK as u128
            && parent_after.inodes == full.inodes,
        "the parent's usage changed from {full:?} to {parent_after:?} when only its child was written"
    );
    Ok(())
}

/// A read-write layer created with size=10M refuses to hold 20 MiB (EDQUOT or ENOSPC), after
/// accepting 5 MiB.
pub async fn quota(ctx: Ctx) -> CaseResult {
    let opts = CreateOpts::read_write()
        .with_storage_opts(StorageOpts::parse(&["size=10M"]).step("options")?);
    let id = ctx.create("quota", None, opts).await?;
    let path = ctx.mount(&id).await?;
    let outcome = tokio::task::spawn_blocking(move || -> Result<u64, (u64, std::io::Error)> {
        let file = path.join("fill");
        let mut f = std::fs::File::create(&file).map_err(|e| (0, e))?;
        let chunk = ops::pseudo_random(1 << 20, 5);
        let mut written = 0u64;
        for _ in 0..20 {
            f.write_all(&chunk).map_err(|e| (written, e))?;
            written += chunk.len() as u64;
        }
        f.sync_all().map_err(|e| (written, e))?;
        Ok(written)
    })
    .await?;
    ctx.unmount(&id).await?;
    match outcome {
        Ok(n) => Err(Failure::new(format!(
            "wrote and synced {n} bytes into a layer created with size=10M"
        ))),
        Err((written, e)) => {
            let code = e.raw_os_error();
            ensure!(
                code == Some(libc::EDQUOT) || code == Some(libc::ENOSPC),
                "writing past size=10M failed with {e}, expected EDQUOT or ENOSPC"
            );
            ensure!(
                written >= 5 << 20,
                "the write failed after only {written} bytes; size=10M must hold 5 MiB"
            );
            Ok(())
        }
    }
}
