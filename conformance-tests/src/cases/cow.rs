//! Copy-on-write: what a child does is seen in the child only, and every kind of change to
//! lower content (delete, re-create, rename, replace, chown, chmod, hard link) reads back
//! exactly, through the mount and rebuilt from the diff. Most scenarios follow containerd's
//! snapshotter suite (issues.go), which each reproduce an old Docker bug.

use std::io;
use std::path::Path;

use super::{stack, StepOps};
use crate::ctx::{on_dir, reference_snapshot, snapshot_of, Ctx};
use crate::failure::{CaseResult, Step};
use crate::tree::ops::{
    self, chmod, chown, hardlink, mkdir, overwrite, remove, rename_like_mv, set_xattr, write,
};

fn isolation_base(r: &Path) -> io::Result<()> {
    mkdir(&r.join("etc"), 0o755)?;
    write(&r.join("etc/config"), b"original config\n", 0o644)?;
    write(&r.join("etc/to-chmod"), b"chmod me\n", 0o644)?;
    write(&r.join("etc/to-chown"), b"chown me\n", 0o644)?;
    write(&r.join("etc/to-delete"), b"delete me\n", 0o644)?;
    write(&r.join("etc/to-rename"), b"rename me\n", 0o644)?;
    mkdir(&r.join("dir"), 0o750)?;
    write(&r.join("dir/nested"), b"nested\n", 0o600)?;
    write(&r.join("big"), &ops::pseudo_random(300_000, 1), 0o644)?;
    Ok(())
}

fn changes_in_a(r: &Path) -> io::Result<()> {
    overwrite(&r.join("etc/config"), b"changed in A, longer than before\n")?;
    chmod(&r.join("etc/to-chmod"), 0o4755)?;
    chown(&r.join("etc/to-chown"), 7, 8)?;
    remove(&r.join("etc/to-delete"))?;
    rename_like_mv(&r.join("etc/to-rename"), &r.join("renamed"))?;
    rename_like_mv(&r.join("dir"), &r.join("dir-renamed"))?;
    write(&r.join("new-in-a"), b"A was here\n", 0o644)?;
    set_xattr(&r.join("big"), "user.a", b"set in A")?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(r.join("big"))?
        .set_len(1000)?;
    Ok(())
}

fn changes_in_b(r: &Path) -> io::Result<()> {
    remove(&r.join("etc"))?;
    write(&r.join("dir/nested"), b"B rewrote this\n", 0o600)?;
    chown(&r.join("dir"), 3, 3)?;
    Ok(())
}

/// Writes, chmods, chowns, deletes and renames in a child are invisible in its parent and in a
/// sibling, and the sibling's are invisible in the child.
pub async fn cow_isolation(ctx: Ctx) -> CaseResult {
    let (reference, base_snap) = reference_snapshot(&ctx, "cow", isolation_base).await?;
    let base = ctx.build_rw("base", None, isolation_base).await?;
    let a = ctx.build_rw("child-a", Some(&base), changes_in_a).await?;
    let b = ctx.create_rw("child-b", Some(&base)).await?;
    ctx.expect_tree(&base, &base_snap, "the parent after its child A changed")
        .await?;
    ctx.expect_tree(&b, &base_snap, "sibling B after A changed")
        .await?;

    let ref_a = ctx.reference("cow-a").await?;
    let ref_b = ctx.reference("cow-b").await?;
    for dir in [&ref_a, &ref_b] {
        let base_ref = reference.clone();
        on_dir(dir, move |d| {
            remove(d)?;
            ops::copy_tree(&base_ref, d)
        })
        .await
        .step("copying the base reference")?;
    }
    on_dir(&ref_a, changes_in_a).await?;
    on_dir(&ref_b, changes_in_b).await?;
    let (snap_a, snap_b) = (snapshot_of(&ref_a).await?, snapshot_of(&ref_b).await?);
    ctx.modify(&b, changes_in_b).await?;
    ctx.expect_tree(&a, &snap_a, "child A after its sibling B changed")
        .await?;
    ctx.expect_tree(&b, &snap_b, "child B").await?;
    ctx.expect_tree(&base, &base_snap, "the parent after both children changed")
        .await?;
    ctx.expect_tree_both_ways(&a, Some(&base), &snap_a, "child A")
        .await?;
    ctx.expect_tree_both_ways(&b, Some(&base), &snap_b, "child B")
        .await?;
    Ok(())
}

/// Deleting files and a directory tree that came from the lower layer.
pub async fn delete_from_lower(ctx: Ctx) -> CaseResult {
    fn lower(r: &Path) -> io::Result<()> {
        write(&r.join("keep"), b"keep\n", 0o644)?;
        write(&r.join("delete-me"), b"bye\n", 0o644)?;
        mkdir(&r.join("tree"), 0o755)?;
        mkdir(&r.join("tree/sub"), 0o700)?;
        write(&r.join("tree/sub/file"), b"deep\n", 0o644)?;
        mkdir(&r.join("partly"), 0o755)?;
        write(&r.join("partly/stays"), b"stays\n", 0o644)?;
        write(&r.join("partly/goes"), b"goes\n", 0o644)?;
        ops::symlink("keep", &r.join("link-goes"))
    }
    fn upper(r: &Path) -> io::Result<()> {
        remove(&r.join("delete-me"))?;
        remove(&r.join("tree"))?;
        remove(&r.join("partly/goes"))?;
        remove(&r.join("link-goes"))
    }
    stack(&ctx, "delete", &[lower, upper]).await.map(drop)
}

/// A file deleted in one layer stays deleted in an empty layer on top (containerd
/// DeletedFilesInChildSnapshot).
pub async fn deleted_stays_deleted(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        write(&r.join("foo"), b"foo\n", 0o644)?;
        write(&r.join("foobar"), b"foobar\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        remove(&r.join("foobar"))
    }
    fn l3(_: &Path) -> io::Result<()> {
        Ok(())
    }
    let layers = stack(&ctx, "deleted", &[l1, l2, l3]).await?;
    let top = &layers[2].0;
    let ro_top = ctx.create_ro("view", Some(top)).await?;
    ctx.expect_tree(&ro_top, &layers[2].1, "a read-only layer on the empty top")
        .await
}

/// A directory removed and re-created in an upper layer hides the lower's entries (opaque),
/// also with a third layer on top (docker#25244).
pub async fn remove_dir_in_lower_then_recreate(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        mkdir(&r.join("lib"), 0o755)?;
        write(&r.join("lib/hidden"), b"must stay hidden\n", 0o644)?;
        mkdir(&r.join("lib/hidden-dir"), 0o755)?;
        write(&r.join("lib/hidden-dir/f"), b"hidden too\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        remove(&r.join("lib"))?;
        mkdir(&r.join("lib"), 0o711)?;
        write(&r.join("lib/not-hidden"), b"new\n", 0o644)
    }
    fn l3(r: &Path) -> io::Result<()> {
        write(&r.join("lib/newfile"), b"third layer\n", 0o644)
    }
    stack(&ctx, "opaque", &[l1, l2, l3]).await.map(drop)
}

/// Renaming files and a directory that came from the lower layer, and renaming a new file
/// over a lower one (docker#25409).
pub async fn rename_file_and_dir_from_lower(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        mkdir(&r.join("dir1"), 0o755)?;
        mkdir(&r.join("dir1/sub"), 0o700)?;
        write(&r.join("dir1/sub/file"), b"in a renamed dir\n", 0o644)?;
        mkdir(&r.join("somefiles"), 0o755)?;
        write(&r.join("somefiles/f1"), b"was here first\n", 0o644)?;
        write(&r.join("somefiles/f2"), b"second\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        rename_like_mv(&r.join("dir1"), &r.join("dir2"))?;
        write(&r.join("somefiles/f1-overwrite"), b"replacement\n", 0o600)?;
        rename_like_mv(&r.join("somefiles/f1-overwrite"), &r.join("somefiles/f1"))?;
        rename_like_mv(&r.join("somefiles/f2"), &r.join("somefiles/f3"))
    }
    stack(&ctx, "rename", &[l1, l2]).await.map(drop)
}

/// A lower file replaced by a directory, and a lower directory replaced by a file.
pub async fn replace_file_with_dir_and_dir_with_file(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        write(&r.join("was-file"), b"a file\n", 0o644)?;
        mkdir(&r.join("was-dir"), 0o755)?;
        write(&r.join("was-dir/child"), b"child\n", 0o644)?;
        mkdir(&r.join("was-dir/grandchild-dir"), 0o755)?;
        ops::symlink("target", &r.join("was-link"))
    }
    fn l2(r: &Path) -> io::Result<()> {
        remove(&r.join("was-file"))?;
        mkdir(&r.join("was-file"), 0o750)?;
        write(&r.join("was-file/inside"), b"now a directory\n", 0o644)?;
        remove(&r.join("was-dir"))?;
        write(&r.join("was-dir"), b"now a file\n", 0o600)?;
        remove(&r.join("was-link"))?;
        mkdir(&r.join("was-link"), 0o755)
    }
    stack(&ctx, "replace", &[l1, l2]).await.map(drop)
}

/// Ownership changes on lower files and directories propagate through copy-up
/// (docker#20240, #24913, #28391).
pub async fn chown_copy_up(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        mkdir(&r.join("opt"), 0o700)?;
        mkdir(&r.join("opt/a"), 0o700)?;
        mkdir(&r.join("opt/a/b"), 0o700)?;
        write(&r.join("opt/a/b/file.txt"), b"hello\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        for p in ["opt", "opt/a", "opt/a/b", "opt/a/b/file.txt"] {
            chown(&r.join(p), 1, 1)?;
        }
        Ok(())
    }
    stack(&ctx, "chown", &[l1, l2]).await.map(drop)
}

/// Directory permissions and owners survive commit in every layer (docker#27298).
pub async fn dir_permissions_on_commit(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        for d in ["dir1", "dir2", "dir3", "dir4", "dir5"] {
            mkdir(&r.join(d), 0o700)?;
            write(&r.join(d).join("f1"), b"f1\n", 0o600)?;
            write(&r.join(d).join("f2"), b"f2\n", 0o644)?;
            chown(&r.join(d), 1, 1)?;
            chown(&r.join(d).join("f1"), 1, 1)?;
        }
        Ok(())
    }
    fn l2(r: &Path) -> io::Result<()> {
        chown(&r.join("dir2"), 0, 0)?;
        remove(&r.join("dir3"))?;
        chown(&r.join("dir4"), 1, 1)?;
        chown(&r.join("dir4/f1"), 1, 1)?;
        chmod(&r.join("dir1"), 0o751)
    }
    fn l3(r: &Path) -> io::Result<()> {
        mkdir(&r.join("dir3"), 0o700)?;
        chown(&r.join("dir3"), 1, 1)?;
        write(&r.join("dir3/f1"), b"recreated\n", 0o600)?;
        chown(&r.join("dir3/f1"), 1, 1)?;
        remove(&r.join("dir5"))?;
        mkdir(&r.join("dir5"), 0o700)?;
        chown(&r.join("dir5"), 1, 1)
    }
    let steps: [StepOps; 3] = [l1, l2, l3];
    stack(&ctx, "dirperm", &steps).await.map(drop)
}

/// A lower file moved by hard-linking it elsewhere and unlinking the original
/// (containerd MoveFileFromLowerLayer); new hard links inside a layer stay one inode.
pub async fn move_file_from_lower_via_hardlink(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        mkdir(&r.join("dir1"), 0o700)?;
        write(&r.join("dir1/f1"), b"f1\n", 0o600)?;
        mkdir(&r.join("dir2"), 0o700)?;
        write(&r.join("dir2/f2"), b"moved by a hard link\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        mkdir(&r.join("dir3"), 0o755)?;
        write(&r.join("dir3/f1"), b"new f1\n", 0o600)?;
        remove(&r.join("dir1"))?;
        hardlink(&r.join("dir2/f2"), &r.join("dir3/f2"))?;
        remove(&r.join("dir2/f2"))?;
        write(&r.join("new"), b"new in this layer\n", 0o644)?;
        hardlink(&r.join("new"), &r.join("dir3/new-link"))
    }
    stack(&ctx, "hardlink", &[l1, l2]).await.map(drop)
}

/// New hard links to a file the layer did not otherwise change: the link set must survive
/// the diff, so the diff has to carry the unchanged file too (containerd's fstest
/// HardlinkUnmodified; Docker's naive diff loses this link).
pub async fn hardlink_to_unmodified_lower(ctx: Ctx) -> CaseResult {
    fn l1(r: &Path) -> io::Result<()> {
        mkdir(&r.join("etc"), 0o755)?;
        write(&r.join("etc/hosts"), b"127.0.0.1 localhost\n", 0o644)
    }
    fn l2(r: &Path) -> io::Result<()> {
        hardlink(&r.join("etc/hosts"), &r.join("etc/hosts.allow"))?;
        hardlink(&r.join("etc/hosts"), &r.join("hosts-at-root"))
    }
    stack(&ctx, "unmodified", &[l1, l2]).await.map(drop)
}

fn with_socket(r: &Path) -> io::Result<()> {
    write(&r.join("data"), b"next to a socket\n", 0o644)?;
    mkdir(&r.join("run"), 0o755)?;
    // Binding creates the socket file; it stays after the listener is closed.
    drop(std::os::unix::net::UnixListener::bind(
        r.join("run/app.sock"),
    )?);
    Ok(())
}

/// A unix socket file in a layer reads back through a remount and in a child (docker#12080);
/// a diff cannot carry sockets (Docker skips them), so the layer rebuilt from its diff has
/// everything but the socket.
pub async fn unix_socket_in_layer(ctx: Ctx) -> CaseResult {
    let (reference, expected) = reference_snapshot(&ctx, "socket", with_socket).await?;
    crate::ensure!(
        matches!(
            expected.get("/run/app.sock").map(|e| &e.kind),
            Some(crate::tree::Kind::Socket)
        ),
        "the reference has no socket at /run/app.sock"
    );
    let layer = ctx.build_rw("socket", None, with_socket).await?;
    ctx.expect_tree(&layer, &expected, "a layer holding a unix socket")
        .await?;
    let child = ctx.create_rw("child", Some(&layer)).await?;
    ctx.expect_tree(
        &child,
        &expected,
        "a child of a layer holding a unix socket",
    )
    .await?;
    on_dir(&reference, |r| remove(&r.join("run/app.sock"))).await?;
    let without = snapshot_of(&reference).await?;
    let tar = ctx.diff_bytes(&layer, None).await?;
    let applied = ctx.create_ro("applied", None).await?;
    ctx.driver()
        .apply_diff(&applied, None, strata_core::stream::from_bytes(tar))
        .await
        .step("apply_diff of a layer holding a socket")?;
    ctx.expect_tree(
        &applied,
        &without,
        "the socket layer rebuilt from its diff (sockets are not carried)",
    )
    .await
}
