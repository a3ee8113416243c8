//! Deep chains of layers, built both container-style (write through a mount) and image-style
//! (diff + apply_diff onto read-only layers), and rewrites that mtime-based diffs miss.

use std::io::{self, Read};
use std::path::Path;

use strata_core::stream::from_bytes;
use strata_core::{ChangeKind, LayerId};

use crate::ctx::{on_dir, snapshot_of, Ctx};
use crate::failure::{CaseResult, Failure, Step};
use crate::tree::ops::{chmod, mkdir, mkdir_all, overwrite, remove, sleep_to_next_second, write};
use crate::{ensure, ensure_eq};

/// Step `i` of containerd's 128LayersMount: overwrite one file, add one, delete and re-create
/// a directory with one new file in it.
fn chain_step(root: &Path, i: usize) -> io::Result<()> {
    write(
        &root.join("overwriteme"),
        format!("layer {i}\n").as_bytes(),
        0o644,
    )?;
    mkdir_all(&root.join("addhere"))?;
    write(
        &root.join(format!("addhere/file-{i}")),
        format!("added in {i}\n").as_bytes(),
        0o644,
    )?;
    let only = root.join("onlyme");
    if only.exists() {
        remove(&only)?;
    }
    mkdir(&only, 0o755)?;
    write(
        &only.join(format!("file-{i}")),
        format!("only {i}\n").as_bytes(),
        0o644,
    )
}

/// 128 stacked read-write layers; every one, and a read-only view of the top, equals a flat
/// directory that went through the same steps.
pub async fn deep_chain_128(ctx: Ctx) -> CaseResult {
    const DEPTH: usize = 128;
    let reference = ctx.reference("chain").await?;
    let mut parent: Option<LayerId> = None;
    let mut expected = None;
    for i in 0..DEPTH {
        let id = ctx.create_rw(&format!("layer{i}"), parent.as_ref()).await?;
        let path = ctx.mount(&id).await?;
        let before = snapshot_of(&path).await?;
        let ref_before = snapshot_of(&reference).await?;
        ref_before
            .compare(
                &before,
                &format!("layer {i} before its own step (its parent's content)"),
            )
            .map_err(Failure::new)?;
        on_dir(&path, move |p| chain_step(p, i))
            .await
            .step(&format!("step {i} in layer {id}"))?;
        on_dir(&reference, move |p| chain_step(p, i)).await?;
        let after = snapshot_of(&path).await?;
        ctx.unmount(&id).await?;
        let ref_after = snapshot_of(&reference).await?;
        ref_after
            .compare(&after, &format!("layer {i} after its step"))
            .map_err(Failure::new)?;
        expected = Some(ref_after);
        parent = Some(id);
    }
    let (top, expected) = (parent.expect("DEPTH > 0"), expected.expect("DEPTH > 0"));
    ctx.expect_tree(&top, &expected, "the top of 128 layers, remounted")
        .await?;
    let view = ctx.create_ro("view", Some(&top)).await?;
    ctx.expect_tree(&view, &expected, "a read-only layer on the top of 128")
        .await
}

/// 32 image-style layers: each step is made in a scratch read-write layer, diffed, and applied
/// onto a read-only layer on the previous image layer. Every image layer equals the reference.
pub async fn image_chain_32(ctx: Ctx) -> CaseResult {
    const DEPTH: usize = 32;
    let reference = ctx.reference("image-chain").await?;
    let driver = ctx.driver();
    let mut parent: Option<LayerId> = None;
    for i in 0..DEPTH {
        let scratch = ctx
            .build_rw(&format!("build{i}"), parent.as_ref(), move |p| {
                chain_step(p, i)
            })
            .await?;
        let tar = ctx.diff_bytes(&scratch, parent.as_ref()).await?;
        let size = driver
            .diff_size(&scratch, parent.as_ref())
            .await
            .step("diff_size")?;
        let image = ctx.create_ro(&format!("image{i}"), parent.as_ref()).await?;
        let applied = driver
            .apply_diff(&image, parent.as_ref(), from_bytes(tar))
            .await
            .step(&format!("apply_diff of step {i} onto {image}"))?;
        ensure_eq!(
            applied,
            size,
            "apply_diff's size for image layer {i} against diff_size of its build layer"
        );
        driver
            .remove(&scratch)
            .await
            .step(&format!("remove the build layer {scratch}"))?;
        on_dir(&reference, move |p| chain_step(p, i)).await?;
        let expected = snapshot_of(&reference).await?;
        ctx.expect_tree(&image, &expected, &format!("image layer {i}"))
            .await?;
        parent = Some(image);
    }
    Ok(())
}

const HOSTS_LEN: usize = 24;

fn hosts(version: usize) -> Vec<u8> {
    let text = format!("127.0.0.1 host-{version:05}\n");
    let mut bytes = text.into_bytes();
    bytes.resize(HOSTS_LEN, b'#');
    bytes
}

/// A same-size rewrite of a lower file is seen by `changes`, carried by `diff` with its new
/// content, and survives apply: 5 rounds, each with a rewrite in the same second as the lower
/// layer was written and one after the second changed (docker#21555, containerd
/// LayerFileupdate).
pub async fn same_size_rewrite(ctx: Ctx) -> CaseResult {
    let reference = ctx.reference("rewrite").await?;
    fn base(r: &Path) -> io::Result<()> {
        mkdir(&r.join("etc"), 0o700)?;
        write(&r.join("etc/hosts"), &hosts(0), 0o644)?;
        write(&r.join("etc/profile"), b"PATH=/bin\n", 0o644)?;
        mkdir(&r.join("root"), 0o700)
    }
    let mut version = 0;
    for round in 0..5 {
        on_dir(&reference, |r| {
            if r.join("etc").exists() {
                remove(&r.join("etc"))?;
                remove(&r.join("root"))?;
            }
            base(r)
        })
        .await?;
        tokio::task::spawn_blocking(sleep_to_next_second).await?;
        let lower = ctx.build_rw(&format!("lower{round}"), None, base).await?;
        let mut parent = lower;
        for wait in [false, true] {
            if wait {
                tokio::task::spawn_blocking(sleep_to_next_second).await?;
            }
            version += 1;
            let v = version;
            let change = move |r: &Path| -> io::Result<()> {
                overwrite(&r.join("etc/hosts"), &hosts(v))?;
                chmod(
                    &r.join("etc/profile"),
                    if v % 2 == 0 { 0o644 } else { 0o666 },
                )?;
                write(
                    &r.join(format!("root/.bashrc-{v}")),
                    b"alias ll='ls -l'\n",
                    0o644,
                )
            };
            let upper = ctx
                .build_rw(&format!("upper{v}"), Some(&parent), change)
                .await?;
            on_dir(&reference, change).await?;
            let expected = snapshot_of(&reference).await?;
            let what = format!(
                "round {round}, rewrite {v} ({})",
                if wait {
                    "after the second changed"
                } else {
                    "in the lower layer's second"
                }
            );
            let changes = ctx
                .driver()
                .changes(&upper, Some(&parent))
                .await
                .step("changes")?;
            ensure!(
                changes
                    .iter()
                    .any(|c| c.path == Path::new("/etc/hosts") && c.kind == ChangeKind::Modify),
                "{what}: changes() does not list Modify /etc/hosts after a same-size rewrite: {changes:?}"
            );
            let tar = ctx.diff_bytes(&upper, Some(&parent)).await?;
            let carried = file_in_tar(&tar, "etc/hosts").step("reading the diff")?;
            ensure!(
                carried.as_deref() == Some(hosts(v).as_slice()),
                "{what}: the diff carries /etc/hosts as {:?}, expected the new content {:?}",
                carried.map(|c| String::from_utf8_lossy(&c).into_owned()),
                String::from_utf8_lossy(&hosts(v))
            );
            ctx.expect_tree_both_ways(&upper, Some(&parent), &expected, &what)
                .await?;
            parent = upper;
        }
    }
    Ok(())
}

/// The content of the regular file `path` in a tar, if the tar has it.
pub(crate) fn file_in_tar(tar: &[u8], path: &str) -> io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if name == path && entry.header().entry_type().is_file() {
            let mut content = Vec::new();
            entry.read_to_end(&mut content)?;
            return Ok(Some(content));
        }
    }
    Ok(None)
}
