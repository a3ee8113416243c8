//! OCI layer tars: the one place where they are made (`diff`) and applied (`apply`), plus the
//! naive change detection for drivers that keep no record of their own changes.
//!
//! Format (OCI image-spec layer.md, as Docker writes it): deletions are `.wh.NAME` entries,
//! opaque directories `DIR/.wh..wh..opq`; PAX records carry long names, large ids and sizes,
//! nanosecond mtimes and xattrs (`SCHILY.xattr.*`); hard links inside a layer are link entries.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::{Error, Result};
use crate::layer::Change;

/// How whiteouts and opaque markers found in a tar are materialised in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// The target holds the full tree (vfs, btrfs): delete the named path; for an opaque
    /// marker, delete the directory's entries that came from lower layers.
    Delete,
    /// The target is an overlay upper directory (overlay2, fuse-overlay): a whiteout becomes a
    /// 0/0 character device, an opaque marker the `trusted.overlay.opaque=y` xattr.
    OverlayMarkers,
}

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
}

/// What applying a layer tar did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// Bytes of the uncompressed tar stream.
    pub tar_bytes: u64,
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diffID.
    pub diff_id: String,
    /// Bytes of regular-file content written (what `diff_size` reports for the same layer).
    pub content_bytes: u64,
}

/// Applies a layer tar (plain, gzip or zstd, by magic bytes) into `dest`. Blocking. See the
/// module docs of the implementation for the safety rules.
pub fn apply_layer(
    _dest: &Path,
    _input: &mut dyn Read,
    _opts: &ApplyOptions,
) -> Result<ApplyStats> {
    Err(Error::unsupported("archive::apply_layer is being written"))
}

/// Lists what differs between `layer_root` and `parent_root` by walking both trees.
pub fn naive_changes(_layer_root: &Path, _parent_root: Option<&Path>) -> Result<Vec<Change>> {
    Err(Error::unsupported(
        "archive::naive_changes is being written",
    ))
}

/// Writes the OCI layer tar for `changes`, reading file content from `layer_root`.
/// `parent_root` (the parent's full tree) lets the writer use opaque markers.
pub fn write_diff(
    _out: &mut dyn Write,
    _layer_root: &Path,
    _changes: &[Change],
    _parent_root: Option<&Path>,
) -> Result<()> {
    Err(Error::unsupported("archive::write_diff is being written"))
}

/// Bytes of regular-file content the diff of `changes` carries (each inode once).
pub fn changes_size(_layer_root: &Path, _changes: &[Change]) -> Result<u64> {
    Err(Error::unsupported("archive::changes_size is being written"))
}
