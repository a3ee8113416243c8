//! vfs keeps no record of what a layer changed: every diff is core's naive one, found by
//! walking the layer's tree against its parent's.

use std::path::{Path, PathBuf};

use strata_core::archive::{self, ApplyOptions, WhiteoutMode};
use strata_core::stream::{blocking_writer_stream, with_blocking_reader};
use strata_core::{Change, Result, TarStream};

pub fn changes(dir: &Path, parent_dir: Option<&Path>) -> Result<Vec<Change>> {
    archive::naive_changes(dir, parent_dir)
}

pub fn diff(dir: PathBuf, parent_dir: Option<PathBuf>) -> TarStream {
    blocking_writer_stream(move |out| {
        let changes = archive::naive_changes(&dir, parent_dir.as_deref())?;
        archive::write_diff(out, &dir, &changes, parent_dir.as_deref())
    })
}

pub fn diff_size(dir: &Path, parent_dir: Option<&Path>) -> Result<u64> {
    let changes = archive::naive_changes(dir, parent_dir)?;
    archive::changes_size(dir, &changes)
}

/// The layer's tree already holds its parent's content, so a whiteout deletes for real.
pub async fn apply(dir: PathBuf, tar: TarStream) -> Result<u64> {
    with_blocking_reader(tar, move |input| {
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
        };
        Ok(archive::apply_layer(&dir, input, &opts)?.content_bytes)
    })
    .await
}
