//! changes, diff, diff_size and apply_diff: exact change lists, byte-exact round trips,
//! compressed input, and big and sparse files.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use strata_core::stream::from_bytes;
use strata_core::{Change, ChangeKind};

use super::basic::base_tree;
use crate::ctx::{reference_snapshot, Ctx};
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::ops::{
    self, chmod, hardlink, mkdir, mkdir_all, overwrite, remove, set_xattr, write,
};
use crate::tree::Kind;
use crate::{ensure, ensure_eq};

fn changes_base(r: &Path) -> io::Result<()> {
    mkdir_all(&r.join("a/b/c"))?;
    write(&r.join("a/b/c/deep.txt"), b"deep\n", 0o644)?;
    write(&r.join("a/b/mid.txt"), b"mid\n", 0o644)?;
    write(&r.join("a/top.txt"), b"top\n", 0o644)?;
    mkdir_all(&r.join("keep"))?;
    write(&r.join("keep/k.txt"), b"untouched\n", 0o644)?;
    mkdir_all(&r.join("gone-dir/x"))?;
    write(&r.join("gone-dir/x/y.txt"), b"y\n", 0o644)?;
    write(&r.join("rm.txt"), b"rm\n", 0o644)?;
    write(&r.join("chmod-me.txt"), b"chmod\n", 0o644)
}

fn changes_upper(r: &Path) -> io::Result<()> {
    write(&r.join("a/b/c/new.txt"), b"new\n", 0o644)?;
    overwrite(&r.join("a/b/mid.txt"), b"mid, modified\n")?;
    remove(&r.join("a/top.txt"))?;
    remove(&r.join("gone-dir"))?;
    remove(&r.join("rm.txt"))?;
    mkdir_all(&r.join("new-dir/sub"))?;
    write(&r.join("new-dir/sub/f.txt"), b"f\n", 0o644)?;
    chmod(&r.join("chmod-me.txt"), 0o600)
}

fn change(path: &str, kind: ChangeKind) -> Change {
    Change {
        path: PathBuf::from(path),
        kind,
    }
}

/// Adds, modifies and deletes at several depths give exactly the expected change list, with
/// Docker's rules: ancestors of a change are Modify, a deleted tree is one Delete, everything
/// under a new directory is Add. A layer without parent lists every path as Add.
pub async fn changes_exact(ctx: Ctx) -> CaseResult {
    use ChangeKind::{Add, Delete, Modify};
    let base = ctx.build_rw("base", None, changes_base).await?;
    let upper = ctx.build_rw("upper", Some(&base), changes_upper).await?;
    let expected: BTreeSet<Change> = [
        change("/a", Modify),
        change("/a/b", Modify),
        change("/a/b/c", Modify),
        change("/a/b/c/new.txt", Add),
        change("/a/b/mid.txt", Modify),
        change("/a/top.txt", Delete),
        change("/gone-dir", Delete),
        change("/rm.txt", Delete),
        change("/new-dir", Add),
        change("/new-dir/sub", Add),
        change("/new-dir/sub/f.txt", Add),
        change("/chmod-me.txt", Modify),
    ]
    .into_iter()
    .collect();
    let got = ctx
        .driver()
        .changes(&upper, Some(&base))
        .await
        .step("changes(upper, base)")?;
    compare_changes(&expected, &got, "changes(upper, base)")?;

    let all_added: BTreeSet<Change> = [
        "/a",
        "/a/b",
        "/a/b/c",
        "/a/b/c/deep.txt",
        "/a/b/mid.txt",
        "/a/top.txt",
        "/keep",
        "/keep/k.txt",
        "/gone-dir",
        "/gone-dir/x",
        "/gone-dir/x/y.txt",
        "/rm.txt",
        "/chmod-me.txt",
    ]
    .into_iter()
    .map(|p| change(p, Add))
    .collect();
    let got = ctx
        .driver()
        .changes(&base, None)
        .await
        .step("changes(base, None)")?;
    compare_changes(&all_added, &got, "changes(base, None)")
}

fn compare_changes(expected: &BTreeSet<Change>, got: &[Change], what: &str) -> CaseResult {
    let got_set: BTreeSet<Change> = got.iter().cloned().collect();
    let show = |c: &Change| format!("{:?} {}", c.kind, c.path.display());
    let missing: Vec<String> = expected.difference(&got_set).map(show).collect();
    let extra: Vec<String> = got_set.difference(expected).map(show).collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}, unexpected {extra:?}"
    );
    ensure_eq!(
        got.len(),
        got_set.len(),
        "{what}: number of entries (a path is listed twice)"
    );
    Ok(())
}

fn roundtrip_base(r: &Path) -> io::Result<()> {
    base_tree(r)?;
    for k in 0..10 {
        let dir = r.join(format!("directory-{k}"));
        mkdir(&dir, 0o755)?;
        write(
            &dir.join(format!("file-{k}")),
            &ops::pseudo_random(1000 + k * 777, 3),
            0o644,
        )?;
    }
    write(&r.join("file-remove.txt"), b"to be removed\n", 0o644)?;
    mkdir_all(&r.join("var/lib/data"))?;
    write(&r.join("var/lib/data/db"), b"lower database\n", 0o600)
}

fn roundtrip_upper(r: &Path) -> io::Result<()> {
    for k in 0..10 {
        let file = r.join(format!("directory-{k}/file-{k}"));
        overwrite(&file, &ops::pseudo_random(1000 + k * 777, 6))?;
    }
    remove(&r.join("file-remove.txt"))?;
    remove(&r.join("var/lib"))?;
    mkdir(&r.join("var/lib"), 0o700)?;
    write(
        &r.join("var/lib/fresh"),
        b"opaque directory's new content\n",
        0o644,
    )?;
    write(&r.join("new-linked"), b"two names in one layer\n", 0o644)?;
    hardlink(&r.join("new-linked"), &r.join("directory-0/new-linked-2"))?;
    set_xattr(&r.join("with-xattrs"), "user.first", b"changed value")?;
    ops::mknod_char(&r.join("zero-device"), 0o600, 1, 5)?;
    remove(&r.join("relative-link"))?;
    ops::symlink("directory-1/file-1", &r.join("relative-link"))
}

/// The diff of a layer applied on a fresh child of the same parent gives an identical tree,
/// also gzip- and zstd-compressed; apply_diff returns diff_size; the fresh child shows the
/// parent's content before the apply; two diffs are byte-identical when the driver says
/// diffs are reproducible; a diff against no parent rebuilds the whole layer.
pub async fn diff_apply_roundtrip(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let (reference, base_snap) = reference_snapshot(&ctx, "roundtrip", roundtrip_base).await?;
    let base = ctx.build_rw("base", None, roundtrip_base).await?;
    let upper = ctx.build_rw("upper", Some(&base), roundtrip_upper).await?;
    crate::ctx::on_dir(&reference, roundtrip_upper).await?;
    let expected = crate::ctx::snapshot_of(&reference).await?;
    ctx.expect_tree(&upper, &expected, "the upper layer")
        .await?;

    let size = driver
        .diff_size(&upper, Some(&base))
        .await
        .step("diff_size(upper, base)")?;
    let tar = ctx.diff_bytes(&upper, Some(&base)).await?;
    if driver.capabilities().reproducible_diff {
        let again = ctx.diff_bytes(&upper, Some(&base)).await?;
        ensure!(
            again == tar,
            "the driver declares reproducible diffs, but two diffs of {upper} differ ({} and {} bytes)",
            tar.len(),
            again.len()
        );
    }
    let compressed: [(&str, Vec<u8>); 3] = [
        ("plain", tar.clone()),
        ("gzip", gzip(&tar).step("gzip")?),
        ("zstd", zstd::encode_all(tar.as_slice(), 3).step("zstd")?),
    ];
    for (format, bytes) in compressed {
        let fresh = ctx
            .create_ro(&format!("apply-{format}"), Some(&base))
            .await?;
        ctx.expect_tree(
            &fresh,
            &base_snap,
            &format!("a fresh child of the base before the {format} apply"),
        )
        .await?;
        let applied = driver
            .apply_diff(&fresh, Some(&base), from_bytes(bytes))
            .await
            .step(&format!("apply_diff of the {format} diff"))?;
        ensure_eq!(
            applied,
            size,
            "apply_diff's returned size ({format}) against diff_size(upper, base)"
        );
        ctx.expect_tree(
            &fresh,
            &expected,
            &format!("the {format} diff applied on a fresh child"),
        )
        .await?;
    }
    ctx.expect_tree(&base, &base_snap, "the base after all applies")
        .await?;

    let full_size = driver
        .diff_size(&upper, None)
        .await
        .step("diff_size(upper, None)")?;
    let full = ctx.diff_bytes(&upper, None).await?;
    let flat = ctx.create_ro("flat", None).await?;
    let applied = driver
        .apply_diff(&flat, None, from_bytes(full))
        .await
        .step("apply_diff of the full diff")?;
    ensure_eq!(
        applied,
        full_size,
        "apply_diff's returned size against diff_size(upper, None)"
    );
    ctx.expect_tree(
        &flat,
        &expected,
        "the full diff of the upper layer applied on an empty layer",
    )
    .await
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data)?;
    enc.finish()
}

const DENSE_BYTES: usize = 64 << 20;
const SPARSE_BYTES: u64 = 1 << 30;
const SPARSE_BLOCKS: [u64; 3] = [0, 300 * (1 << 20) + 123, SPARSE_BYTES - 4096];
/// An applied sparse file may allocate at most this much (its data is 12 KiB).
const SPARSE_ALLOWANCE: u64 = 16 << 20;

fn big_files(r: &Path) -> io::Result<()> {
    write(
        &r.join("dense"),
        &ops::pseudo_random(DENSE_BYTES, 64),
        0o644,
    )?;
    let path = r.join("sparse");
    let f = std::fs::File::create(&path)?;
    f.set_len(SPARSE_BYTES)?;
    for (i, off) in SPARSE_BLOCKS.iter().enumerate() {
        f.write_all_at(&ops::pseudo_random(4096, 100 + i as u64), *off)?;
    }
    f.sync_all()
}

/// A 64 MiB dense file and a 1 GiB sparse file survive create (a child), diff and apply;
/// the applied sparse file stays sparse; a child reports no changes against its parent.
pub async fn large_and_sparse(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let (_, expected) = reference_snapshot(&ctx, "big", big_files).await?;
    let layer = ctx.build_rw("big", None, big_files).await?;
    ctx.expect_tree(&layer, &expected, "the layer with the big files")
        .await?;
    let child = ctx.create_rw("child", Some(&layer)).await?;
    ctx.expect_tree(&child, &expected, "a child of the layer with the big files")
        .await?;
    let changes = driver
        .changes(&child, Some(&layer))
        .await
        .step("changes(child, layer)")?;
    ensure!(
        changes.is_empty(),
        "an untouched child of the big layer reports changes: {changes:?}"
    );

    let size = driver.diff_size(&layer, None).await.step("diff_size")?;
    let stream = driver.diff(&layer, None).await.step("diff")?;
    let applied_id = ctx.create_ro("applied", None).await?;
    let applied = driver
        .apply_diff(&applied_id, None, stream)
        .await
        .step("apply_diff of the big layer's diff, streamed")?;
    ensure_eq!(
        applied,
        size,
        "apply_diff's returned size against diff_size"
    );
    let path = ctx.mount(&applied_id).await?;
    let got = crate::ctx::snapshot_of(&path).await?;
    ctx.unmount(&applied_id).await?;
    expected
        .compare(&got, "the big layer rebuilt from its diff")
        .map_err(Failure::new)?;
    let sparse = got
        .get("/sparse")
        .ok_or_else(|| Failure::new("no /sparse after apply"))?;
    ensure!(
        matches!(sparse.kind, Kind::File { .. }) && sparse.allocated <= SPARSE_ALLOWANCE,
        "the applied 1 GiB sparse file allocates {} bytes, more than {} for its 12 KiB of data: apply_diff must keep holes",
        sparse.allocated,
        SPARSE_ALLOWANCE
    );
    Ok(())
}

/// Raw bytes of a path, for building expected change paths from non-UTF-8 names.
pub(crate) fn raw(path: &Path) -> &[u8] {
    path.as_os_str().as_bytes()
}

/// `/d1`, `/d1/d2`, ... `/d1/.../d9`, `/d1/.../d9/file`: the path at each depth 0..=9.
fn nested_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let mut p = String::new();
    for level in 1..=9 {
        p.push_str(&format!("/d{level}"));
        paths.push(p.clone());
    }
    paths.push(format!("{p}/file"));
    paths
}

fn nested_tree(r: &Path) -> io::Result<()> {
    let paths = nested_paths();
    for dir in &paths[..9] {
        mkdir(&r.join(&dir[1..]), 0o755)?;
    }
    write(&r.join(&paths[9][1..]), b"at the bottom\n", 0o644)
}

/// At every depth 0..=9 of a nested tree: removing the path gives Modify for each ancestor
/// plus one Delete; re-creating it gives Modify for each ancestor plus Add for everything
/// re-created (containers/storage's DriverTestEcho, aimed at native change detection).
pub async fn changes_at_every_depth(ctx: Ctx) -> CaseResult {
    use ChangeKind::{Add, Delete, Modify};
    let paths = nested_paths();
    let base = ctx.build_rw("nested", None, nested_tree).await?;
    let all: BTreeSet<Change> = paths.iter().map(|p| change(p, Add)).collect();
    let got = ctx
        .driver()
        .changes(&base, None)
        .await
        .step("changes(nested, None)")?;
    compare_changes(&all, &got, "changes of the nested tree against no parent")?;
    for depth in 0..paths.len() {
        let target = paths[depth].clone();
        let removed = ctx
            .build_rw(&format!("removed{depth}"), Some(&base), {
                let target = target.clone();
                move |r| remove(&r.join(&target[1..]))
            })
            .await?;
        let mut expected: BTreeSet<Change> =
            paths[..depth].iter().map(|p| change(p, Modify)).collect();
        expected.insert(change(&target, Delete));
        let got = ctx
            .driver()
            .changes(&removed, Some(&base))
            .await
            .step("changes")?;
        compare_changes(&expected, &got, &format!("changes after removing {target}"))?;

        let recreated = ctx
            .build_rw(
                &format!("recreated{depth}"),
                Some(&removed),
                nested_tree_tail(depth),
            )
            .await?;
        let mut expected: BTreeSet<Change> =
            paths[..depth].iter().map(|p| change(p, Modify)).collect();
        expected.extend(paths[depth..].iter().map(|p| change(p, Add)));
        let got = ctx
            .driver()
            .changes(&recreated, Some(&removed))
            .await
            .step("changes")?;
        compare_changes(
            &expected,
            &got,
            &format!("changes after re-creating {target}"),
        )?;
        for id in [&recreated, &removed] {
            ctx.driver()
                .remove(id)
                .await
                .step(&format!("remove {id}"))?;
        }
    }
    Ok(())
}

/// Re-creates the nested tree from `depth` down.
fn nested_tree_tail(depth: usize) -> impl FnOnce(&Path) -> io::Result<()> + Send + 'static {
    move |r: &Path| {
        let paths = nested_paths();
        for dir in paths[depth..].iter().take_while(|p| !p.ends_with("/file")) {
            mkdir(&r.join(&dir[1..]), 0o755)?;
        }
        write(&r.join(&paths[9][1..]), b"at the bottom, again\n", 0o644)
    }
}
