//! Changes, diffs and applies for btrfs layers. btrfs keeps no record of a snapshot's changes
//! that maps onto OCI whiteouts, so these walk the layer against its parent with core's naive
//! helpers; layers hold full trees, so whiteouts are applied as deletions.

use std::path::PathBuf;

use strata_core::archive::{self, ApplyOptions, WhiteoutMode};
use strata_core::stream::{blocking_writer_stream, with_blocking_reader};
use strata_core::{Change, Result, TarStream};

/// What differs between the layer tree and its parent's tree.
pub async fn changes(layer: PathBuf, parent: Option<PathBuf>) -> Result<Vec<Change>> {
    tokio::task::spawn_blocking(move || archive::naive_changes(&layer, parent.as_deref())).await?
}

/// The layer's changes as an uncompressed OCI layer tar.
pub fn diff(layer: PathBuf, parent: Option<PathBuf>) -> TarStream {
    blocking_writer_stream(move |out| {
        let changes = archive::naive_changes(&layer, parent.as_deref())?;
        archive::write_diff(out, &layer, &changes, parent.as_deref())
    })
}

/// Bytes of file content the diff would carry.
pub async fn diff_size(layer: PathBuf, parent: Option<PathBuf>) -> Result<u64> {
    tokio::task::spawn_blocking(move || {
        let changes = archive::naive_changes(&layer, parent.as_deref())?;
        archive::changes_size(&layer, &changes)
    })
    .await?
}

/// Applies a layer tar onto the full tree at `dest`; returns the content bytes written.
pub async fn apply(dest: PathBuf, tar: TarStream) -> Result<u64> {
    with_blocking_reader(tar, move |input| {
        let opts = ApplyOptions {
            whiteouts: WhiteoutMode::Delete,
        };
        archive::apply_layer(&dest, input, &opts).map(|stats| stats.content_bytes)
    })
    .await
}
