//! Names that break naive code: 255-byte names, paths deeper than PATH_MAX, non-UTF-8 and
//! unicode names, names that look like whiteouts but are not.

use std::io;
use std::path::Path;

use strata_core::stream::from_bytes;
use strata_core::ChangeKind;

use crate::ctx::{reference_snapshot, Ctx};
use crate::failure::{CaseResult, Step};
use crate::tree::ops::DirFd;
use crate::{ensure, ensure_eq};

/// Levels of 250-byte directory names: 18 × 251 bytes = 4518 bytes, past PATH_MAX (4096).
const DEEP_LEVELS: usize = 18;

pub(crate) const NON_UTF8: &[u8] = b"bad-\xff\xfe-name";

fn odd_names(root: &Path) -> io::Result<()> {
    let top = DirFd::open(root)?;
    top.write(&[b'n'; 255], b"a name of 255 bytes\n", 0o644)?;
    top.write(NON_UTF8, b"not UTF-8\n", 0o644)?;
    top.write("ünïcødé-日本語-🦀.txt".as_bytes(), b"unicode\n", 0o644)?;
    for name in [
        ".whatever",
        ".wh",
        ".whfoo",
        "wh.not",
        "...",
        "a b c",
        "new\nline",
        "back\\slash",
        "-dash",
        "tab\tname",
    ] {
        top.write(
            name.as_bytes(),
            format!("{name:?} is not a whiteout\n").as_bytes(),
            0o644,
        )?;
    }
    let odd_dir = top.mkdir(b".wh-looking-dir", 0o755)?;
    odd_dir.write(b".whiteout-lookalike", b"a plain file\n", 0o644)?;
    top.symlink(&vec![b'x'; 1000], b"long-target-link")?;
    let mut dir = top.mkdir(&deep_name(0), 0o755)?;
    for level in 1..DEEP_LEVELS {
        dir = dir.mkdir(&deep_name(level), 0o755)?;
    }
    dir.write(b"leaf", b"past PATH_MAX\n", 0o600)?;
    dir.write(NON_UTF8, b"deep and not UTF-8\n", 0o644)
}

fn deep_name(level: usize) -> Vec<u8> {
    let mut name = format!("level-{level:02}-").into_bytes();
    name.resize(250, b'd');
    name
}

/// Odd names round-trip exactly: through the mount, into a child, and through diff/apply;
/// `changes` keeps the non-UTF-8 name's bytes.
pub async fn long_and_odd_names(ctx: Ctx) -> CaseResult {
    let driver = ctx.driver();
    let (_, expected) = reference_snapshot(&ctx, "names", odd_names).await?;
    let deepest = expected.entries.keys().map(|p| p.len()).max().unwrap_or(0);
    ensure!(
        deepest > 4096,
        "the reference tree's deepest path is {deepest} bytes, not past PATH_MAX"
    );
    let layer = ctx.build_rw("names", None, odd_names).await?;
    ctx.expect_tree(&layer, &expected, "the layer with odd names")
        .await?;
    let child = ctx.create_rw("child", Some(&layer)).await?;
    ctx.expect_tree(&child, &expected, "a child of the layer with odd names")
        .await?;

    let changes = driver
        .changes(&layer, None)
        .await
        .step("changes(layer, None)")?;
    let mut want = b"/".to_vec();
    want.extend_from_slice(NON_UTF8);
    ensure!(
        changes
            .iter()
            .any(|c| super::diff::raw(&c.path) == want.as_slice() && c.kind == ChangeKind::Add),
        "changes(layer, None) has no Add for the non-UTF-8 name {:?}",
        String::from_utf8_lossy(&want)
    );
    ensure_eq!(
        changes.len(),
        expected.entries.len() - 1,
        "number of changes against no parent (every path but /)"
    );

    let size = driver.diff_size(&layer, None).await.step("diff_size")?;
    let tar = ctx.diff_bytes(&layer, None).await?;
    let applied_id = ctx.create_ro("applied", None).await?;
    let applied = driver
        .apply_diff(&applied_id, None, from_bytes(tar))
        .await
        .step("apply_diff")?;
    ensure_eq!(
        applied,
        size,
        "apply_diff's returned size against diff_size"
    );
    ctx.expect_tree(
        &applied_id,
        &expected,
        "the odd names rebuilt from the diff",
    )
    .await
}
