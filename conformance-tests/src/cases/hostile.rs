//! Hostile layer archives: each must be refused by apply_diff, and nothing outside the layer
//! may change — a sentinel file in the case's scratch directory stays as it was.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_core::stream::from_bytes;

use crate::ctx::{reference_snapshot, snapshot_of, Ctx};
use crate::failure::{CaseResult, Failure, Step};
use crate::rawtar::{archive, RawEntry};
use crate::tree::ops::write;
use crate::{ensure, ensure_eq};

const SENTINEL: &[u8] = b"the sentinel, untouched\n";
const MARK: &str = "ESCAPED";

/// `../` repeated enough to climb from any layer directory to `/`.
fn to_root() -> Vec<u8> {
    b"../".repeat(64)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The hostile archives, each with a name for the failure message.
fn hostile_archives(sentinel: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let abs = sentinel.as_os_str().as_bytes();
    let rel = &abs[1..];
    vec![
        (
            "a file named ../ESCAPED",
            archive(&[RawEntry::file(b"../ESCAPED", b"out")]),
        ),
        (
            "a file named a/../../ESCAPED",
            archive(&[
                RawEntry::dir(b"a/"),
                RawEntry::file(b"a/../../ESCAPED", b"out"),
            ]),
        ),
        (
            "a file whose ../ path reaches the sentinel",
            archive(&[RawEntry::file(&cat(&[&to_root(), rel]), b"pwned")]),
        ),
        (
            "a file with the sentinel's absolute path",
            archive(&[RawEntry::file(abs, b"pwned")]),
        ),
        (
            "an absolute path /ESCAPED",
            archive(&[RawEntry::file(b"/ESCAPED", b"out")]),
        ),
        (
            "a symlink to / followed by a file through it",
            archive(&[
                RawEntry::symlink(b"evil", b"/"),
                RawEntry::file(&cat(&[b"evil/", rel]), b"pwned"),
            ]),
        ),
        (
            "a symlink climbing with ../ followed by a file through it",
            archive(&[
                RawEntry::symlink(b"up", &to_root()),
                RawEntry::file(&cat(&[b"up/", rel]), b"pwned"),
            ]),
        ),
        (
            "a symlink to the scratch directory followed by a new file through it",
            archive(&[
                RawEntry::symlink(
                    b"scr",
                    sentinel
                        .parent()
                        .map(|p| p.as_os_str().as_bytes())
                        .unwrap_or(b"/"),
                ),
                RawEntry::file(b"scr/ESCAPED", b"out"),
            ]),
        ),
        (
            "a hard link to the sentinel by absolute path",
            archive(&[RawEntry::hardlink(b"hl", abs)]),
        ),
        (
            "a hard link to the sentinel through ../",
            archive(&[RawEntry::hardlink(b"hl", &cat(&[&to_root(), rel]))]),
        ),
        (
            "a hard link to the sentinel then content written to it",
            archive(&[
                RawEntry::hardlink(b"hl", abs),
                RawEntry::file(b"hl", b"pwned"),
            ]),
        ),
        (
            "a whiteout naming ..",
            archive(&[RawEntry::file(b".wh..", b"")]),
        ),
        (
            "a whiteout naming .. in a subdirectory",
            archive(&[RawEntry::dir(b"sub/"), RawEntry::file(b"sub/.wh..", b"")]),
        ),
        (
            "a whiteout naming ../ESCAPED-target",
            archive(&[RawEntry::file(b".wh../ESCAPED-target", b"")]),
        ),
        (
            "a truncated archive (cut inside a file's data)",
            truncated(),
        ),
        (
            "an archive whose header checksum is wrong",
            bad_checksum(archive(&[RawEntry::file(b"file", b"data")])),
        ),
    ]
}

/// A valid archive cut in the middle of a file's data: a short read must not pass as a layer.
fn truncated() -> Vec<u8> {
    let mut tar = archive(&[
        RawEntry::file(b"first", b"complete"),
        RawEntry::file(b"second", &vec![b'x'; 4096]),
    ]);
    tar.truncate(512 + 512 + 512 + 1000);
    tar
}

fn bad_checksum(mut tar: Vec<u8>) -> Vec<u8> {
    tar[148] = if tar[148] == b'1' { b'2' } else { b'1' };
    tar
}

fn find_marked(dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name()
            .as_bytes()
            .windows(MARK.len())
            .any(|w| w == MARK.as_bytes())
        {
            found.push(path.display().to_string());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            find_marked(&path, found);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn try_hostile(
    ctx: &Ctx,
    lower: &strata_core::LayerId,
    lower_snap: &crate::tree::Snapshot,
    sentinel: &Path,
    sentinel_dir: &Path,
    outside_before: &crate::tree::Snapshot,
    what: &str,
    tar: Vec<u8>,
) -> CaseResult {
    let driver = ctx.driver();
    let target = ctx.create_ro("target", Some(lower)).await?;
    let result = driver
        .apply_diff(&target, Some(lower), from_bytes(tar))
        .await;
    // The layer goes first, so whatever is left named ESCAPED is outside every layer.
    driver
        .remove(&target)
        .await
        .step(&format!("remove the layer {target} after applying {what}"))?;
    let outside = snapshot_of(sentinel_dir).await?;
    outside_before
        .compare(
            &outside,
            &format!("the directory outside the layer after {what}"),
        )
        .map_err(Failure::new)?;
    let links = std::fs::metadata(sentinel)
        .step("stat the sentinel")?
        .nlink();
    ensure_eq!(links, 1, "hard links to the sentinel after {what}");
    let mut marked = Vec::new();
    for dir in [ctx.root(), ctx.scratch()] {
        find_marked(dir, &mut marked);
    }
    marked.retain(|p| !p.ends_with("ESCAPED-target"));
    ensure!(
        marked.is_empty(),
        "after {what}, files escaped the layer: {marked:?}"
    );
    for dir in [ctx.root(), ctx.scratch()] {
        ensure!(
            dir.join("ESCAPED-target").exists(),
            "after {what}, {} was deleted",
            dir.join("ESCAPED-target").display()
        );
    }
    ensure!(
        result.is_err(),
        "apply_diff accepted {what} (returned {result:?}); nothing escaped, but the suite requires hostile \
         archives to be refused with an error, not confined"
    );
    ctx.expect_tree(lower, lower_snap, &format!("the lower layer after {what}"))
        .await
}

/// Each hostile archive is refused with an error; the sentinel outside the layer keeps its
/// content and its single link; no file named ESCAPED appears anywhere in the case's
/// directories; the lower layer is unchanged; the target layer can still be removed.
pub async fn malicious_tars(ctx: Ctx) -> CaseResult {
    let sentinel_dir = ctx.scratch().join("outside");
    std::fs::create_dir(&sentinel_dir).step("mkdir the sentinel's directory")?;
    let sentinel = sentinel_dir.join("sentinel");
    write(&sentinel, SENTINEL, 0o644)?;
    let outside_before = snapshot_of(&sentinel_dir).await?;
    // The files ../ESCAPED-target would delete if a whiteout could climb out of the layer.
    for dir in [ctx.root().to_path_buf(), ctx.scratch().to_path_buf()] {
        write(&dir.join("ESCAPED-target"), b"must survive\n", 0o644)?;
    }
    let (_, lower_snap) = reference_snapshot(&ctx, "lower", super::basic::base_tree).await?;
    let lower = ctx.build_rw("lower", None, super::basic::base_tree).await?;

    let mut failures = Vec::new();
    for (what, tar) in hostile_archives(&sentinel) {
        if let Err(f) = try_hostile(
            &ctx,
            &lower,
            &lower_snap,
            &sentinel,
            &sentinel_dir,
            &outside_before,
            what,
            tar,
        )
        .await
        {
            failures.push(f.message);
        }
    }
    ensure!(
        failures.is_empty(),
        "{} hostile archives were not handled safely:\n    {}",
        failures.len(),
        failures.join("\n    ")
    );
    Ok(())
}
