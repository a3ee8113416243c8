//! Creating layers: empty ones, a base with every kind of file, children, and refusals.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_core::{CreateOpts, LayerId};

use super::{expect_error, is_already_exists, is_not_found};
use crate::ctx::{reference_snapshot, snapshot_of, Ctx};
use crate::failure::{CaseResult, Step};
use crate::tree::{ops, snapshot::names_in};
use crate::{ensure, ensure_eq};

/// An empty layer mounts as an empty directory, mode 0755, owned by root; it exists until
/// removed, and not after.
pub async fn create_empty(ctx: Ctx) -> CaseResult {
    for opts in [CreateOpts::read_write(), CreateOpts::read_only()] {
        let kind = opts.kind;
        let id = ctx.create("empty", None, opts).await?;
        let driver = ctx.driver();
        ensure!(
            driver.exists(&id).await?,
            "exists({id}) is false right after create ({kind:?})"
        );
        let path = ctx.mount(&id).await?;
        let meta =
            std::fs::symlink_metadata(&path).step(&format!("stat the mount {}", path.display()))?;
        ensure!(
            meta.is_dir(),
            "the mount of an empty {kind:?} layer {} is not a directory",
            path.display()
        );
        ensure_eq!(
            meta.mode() & 0o7777,
            0o755,
            "mode of the empty {kind:?} layer's root {}",
            path.display()
        );
        ensure_eq!(
            (meta.uid(), meta.gid()),
            (0, 0),
            "owner of the empty {kind:?} layer's root"
        );
        let names = names_in(&path)?;
        ensure!(
            names.is_empty(),
            "the empty {kind:?} layer's root {} holds {:?}",
            path.display(),
            names
                .iter()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect::<Vec<_>>()
        );
        ctx.unmount(&id).await?;
        driver.remove(&id).await.step(&format!("remove {id}"))?;
        ensure!(
            !driver.exists(&id).await?,
            "exists({id}) is still true after remove"
        );
    }
    Ok(())
}

/// The base tree: every file type and the metadata drivers get wrong (moby's createBase,
/// extended with links, special files and xattrs).
pub fn base_tree(root: &Path) -> io::Result<()> {
    let sub = root.join("a subdir");
    ops::mkdir(&sub, 0o755)?;
    ops::chown(&sub, 1, 2)?;
    ops::chmod(&sub, 0o1705)?;
    ops::set_xattr(&sub, "user.dir-note", b"on a directory")?;
    ops::write(&sub.join("inner"), b"inside the sticky directory\n", 0o644)?;
    let file = root.join("a file");
    ops::write(&file, b"Some data", 0o644)?;
    ops::chmod(&file, 0o4222)?;
    ops::mkdir(&root.join("setgid dir"), 0o2775)?;
    ops::symlink("a file", &root.join("relative-link"))?;
    ops::symlink("/etc/passwd", &root.join("absolute-link"))?;
    ops::symlink("does/not/exist", &root.join("dangling-link"))?;
    ops::mkfifo(&root.join("fifo"), 0o640)?;
    ops::mknod_char(&root.join("null-device"), 0o666, 1, 3)?;
    ops::write(&root.join("linked"), b"one inode, two names\n", 0o600)?;
    ops::hardlink(&root.join("linked"), &sub.join("linked-too"))?;
    let x = root.join("with-xattrs");
    ops::write(&x, b"xattrs here\n", 0o640)?;
    ops::chown(&x, 1000, 1000)?;
    ops::set_xattr(&x, "user.first", b"value one")?;
    ops::set_xattr(&x, "user.binary", &[0, 1, 2, 255])?;
    ops::set_xattr(&x, "user.empty", b"")?;
    Ok(())
}

/// The base tree reads back exactly: through the mount that wrote it, after unmount and
/// remount, and rebuilt from its diff.
pub async fn create_base(ctx: Ctx) -> CaseResult {
    let (_, expected) = reference_snapshot(&ctx, "base", base_tree).await?;
    let id = ctx.create_rw("base", None).await?;
    let path = ctx.mount(&id).await?;
    crate::ctx::on_dir(&path, base_tree)
        .await
        .step("writing the base tree through the mount")?;
    let same_mount = snapshot_of(&path).await?;
    ctx.unmount(&id).await?;
    expected
        .compare(
            &same_mount,
            "the base tree read through the mount that wrote it",
        )
        .map_err(crate::Failure::new)?;
    ctx.expect_tree_both_ways(
        &id,
        None,
        &expected,
        "the base tree after unmount and remount",
    )
    .await?;
    Ok(())
}

/// Children (read-write and read-only) and a grandchild of the base show the same tree
/// exactly, and report no changes against their parent.
pub async fn create_snapshot(ctx: Ctx) -> CaseResult {
    let (_, expected) = reference_snapshot(&ctx, "base", base_tree).await?;
    let base = ctx.build_rw("base", None, base_tree).await?;
    let rw = ctx.create_rw("snap-rw", Some(&base)).await?;
    let ro = ctx.create_ro("snap-ro", Some(&base)).await?;
    let grandchild = ctx.create_rw("snap-of-snap", Some(&rw)).await?;
    for (child, parent) in [(&rw, &base), (&ro, &base), (&grandchild, &rw)] {
        ctx.expect_tree(child, &expected, &format!("child {child} of {parent}"))
            .await?;
        let changes = ctx
            .driver()
            .changes(child, Some(parent))
            .await
            .step(&format!("changes({child}, {parent})"))?;
        ensure!(
            changes.is_empty(),
            "an untouched child {child} reports changes against its parent {parent}: {changes:?}"
        );
        let size = ctx
            .driver()
            .diff_size(child, Some(parent))
            .await
            .step(&format!("diff_size({child}, {parent})"))?;
        ensure_eq!(size, 0, "diff_size of the untouched child {child}");
        let tar = ctx.diff_bytes(child, Some(parent)).await?;
        let entries = tar_entry_names(&tar).step("reading the diff")?;
        ensure!(
            entries.is_empty(),
            "the diff of the untouched child {child} has entries: {entries:?}"
        );
    }
    ctx.expect_tree(&base, &expected, "the base after its children were created")
        .await?;
    Ok(())
}

/// Creating an id twice is refused with AlreadyExists and keeps the first layer whole;
/// creating on a missing parent is refused with NotFound and leaves nothing behind.
pub async fn create_errors(ctx: Ctx) -> CaseResult {
    let (_, expected) = reference_snapshot(&ctx, "base", base_tree).await?;
    let driver = ctx.driver();
    let base = ctx.build_rw("base", None, base_tree).await?;
    expect_error(
        driver.create(&base, None, &CreateOpts::read_write()).await,
        is_already_exists,
        "AlreadyExists",
        &format!("creating {base} a second time"),
    )?;
    ctx.expect_tree(
        &base,
        &expected,
        "the first layer after a second create of its id",
    )
    .await?;

    let before = snapshot_of(ctx.root()).await?;
    let orphan = ctx.id("orphan");
    let missing = ctx.id("missing-parent");
    expect_error(
        driver
            .create(&orphan, Some(&missing), &CreateOpts::read_write())
            .await,
        is_not_found,
        "NotFound",
        &format!("creating {orphan} on the missing parent {missing}"),
    )?;
    ensure!(
        !driver.exists(&orphan).await?,
        "{orphan} exists after its create failed"
    );
    let after = snapshot_of(ctx.root()).await?;
    same_paths(&before, &after, "the driver root after a refused create")
}

/// Unsafe ids are refused before any driver sees them; valid ids that do not exist give
/// NotFound from remove, mount, usage and metadata, and nothing is created on disk.
pub async fn bad_ids(ctx: Ctx) -> CaseResult {
    let long = "a".repeat(256);
    for bad in [
        "..",
        ".",
        "/x",
        "a/b",
        "",
        "a\0b",
        "../x",
        ".hidden",
        long.as_str(),
    ] {
        ensure!(
            LayerId::new(bad).is_err(),
            "LayerId::new accepted the unsafe id {bad:?}"
        );
    }
    ensure!(
        LayerId::new("a".repeat(255)).is_ok(),
        "LayerId::new refused a valid 255-byte id"
    );
    let driver = ctx.driver();
    let existing = ctx.create_rw("present", None).await?;
    let before = snapshot_of(ctx.root()).await?;
    let missing = ctx.id("missing");
    ensure!(
        !driver.exists(&missing).await?,
        "exists({missing}) is true for an id never created"
    );
    expect_error(
        driver.remove(&missing).await,
        is_not_found,
        "NotFound",
        &format!("remove({missing})"),
    )?;
    expect_error(
        driver.mount(&missing, "").await,
        is_not_found,
        "NotFound",
        &format!("mount({missing})"),
    )?;
    expect_error(
        driver.usage(&missing).await,
        is_not_found,
        "NotFound",
        &format!("usage({missing})"),
    )?;
    expect_error(
        driver.metadata(&missing).await,
        is_not_found,
        "NotFound",
        &format!("metadata({missing})"),
    )?;
    let after = snapshot_of(ctx.root()).await?;
    same_paths(
        &before,
        &after,
        "the driver root after operations on a missing id",
    )?;
    ensure!(
        driver.exists(&existing).await?,
        "the existing layer {existing} vanished"
    );
    ensure!(
        !driver.exists(&missing).await?,
        "{missing} exists after failed operations on it"
    );
    Ok(())
}

/// Fails if a path appeared or disappeared between two snapshots of a driver's root.
fn same_paths(
    before: &crate::tree::Snapshot,
    after: &crate::tree::Snapshot,
    what: &str,
) -> CaseResult {
    let added: Vec<String> = after
        .entries
        .keys()
        .filter(|p| !before.entries.contains_key(*p))
        .map(|p| crate::tree::snapshot::show(p))
        .collect();
    let removed: Vec<String> = before
        .entries
        .keys()
        .filter(|p| !after.entries.contains_key(*p))
        .map(|p| crate::tree::snapshot::show(p))
        .collect();
    ensure!(
        added.is_empty() && removed.is_empty(),
        "{what}: paths appeared {added:?} / disappeared {removed:?}"
    );
    Ok(())
}

/// The names of the entries in a tar.
fn tar_entry_names(tar: &[u8]) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in tar::Archive::new(tar).entries()? {
        names.push(entry?.path()?.display().to_string());
    }
    Ok(names)
}

/// An id can be used again after its layer was removed, and the new layer shows only its own
/// parent's content, nothing left from the removed one (containerd's Remove case).
pub async fn reuse_removed_id(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let first_parent = ctx
        .build_rw("first-parent", None, |r| {
            ops::write(&r.join("from-first-parent"), b"old\n", 0o644)
        })
        .await?;
    let second_parent = ctx
        .build_rw("second-parent", None, |r| {
            ops::write(&r.join("from-second-parent"), b"new\n", 0o644)
        })
        .await?;
    let reused = ctx.id("reused");
    driver
        .create(&reused, Some(&first_parent), &CreateOpts::read_write())
        .await
        .step("first create of the reused id")?;
    ctx.modify(&reused, |r| {
        ops::write(
            &r.join("written-in-the-first"),
            b"gone after remove\n",
            0o644,
        )
    })
    .await?;
    driver
        .remove(&reused)
        .await
        .step("remove the first layer")?;
    driver
        .create(&reused, Some(&second_parent), &CreateOpts::read_write())
        .await
        .step("create the same id again on another parent")?;
    let (_, expected) = reference_snapshot(&ctx, "reused", |r| {
        ops::write(&r.join("from-second-parent"), b"new\n", 0o644)
    })
    .await?;
    ctx.expect_tree(&reused, &expected, "the re-created layer")
        .await?;
    driver
        .remove(&first_parent)
        .await
        .step("remove the first parent (its only child was removed, so it has none)")?;
    ensure!(
        driver.exists(&second_parent).await?,
        "the second parent vanished"
    );
    Ok(())
}
