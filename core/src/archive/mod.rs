//! OCI layer tars: the one place where they are made (`diff`) and applied (`apply`), plus the
//! naive change detection for drivers that keep no record of their own changes.
//!
//! Format (OCI image-spec layer.md, as Docker writes it): deletions are `.wh.NAME` entries,
//! opaque directories `DIR/.wh..wh..opq`; PAX records carry long names, large ids and sizes,
//! nanosecond mtimes and xattrs (`SCHILY.xattr.*`); hard links inside a layer are link entries.
//!
//! Where the rules live:
//! - `write.rs`: entry order, header fields, the opaque rule (a directory whose parent entries
//!   are all deleted gets one `.wh..wh..opq`), hard links, why a `.wh.*` file is refused;
//! - `apply.rs`: entry creation, metadata order, whiteouts per [`WhiteoutMode`], sparse files;
//! - `path_safety.rs`: what is refused so nothing outside the target changes. Unlike Docker,
//!   which untars in a chroot and so follows symlinks *inside* the layer, an entry whose parent
//!   path goes through any symlink is refused;
//! - `changes.rs`: what counts as a change, which xattrs travel (user.*, security.capability,
//!   trusted.* but never trusted.overlay.*).
//!
//! Module map: `reader.rs`/`header.rs` parse and write tar headers, `limits.rs` caps the
//! extension headers (PAX, GNU long names) of one entry, `compression.rs` detects
//! gzip/zstd and hashes the uncompressed stream, `fsat.rs` wraps the `*at` syscalls.

use std::io::{Read, Write};
use std::path::Path;

use crate::error::Result;
use crate::layer::Change;

mod apply;
mod changes;
mod compression;
mod dircache;
mod filewriter;
mod fsat;
mod header;
pub(crate) mod limits;
mod path_safety;
mod reader;
pub(crate) mod tar_fields;
mod tarout;
#[cfg(test)]
mod tests;
mod write;
mod xattrs;

pub use limits::ExtensionLimit;

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
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's diffID (empty when
    /// [`ApplyConfig::diff_id`] was false).
    pub diff_id: String,
    /// Bytes of regular-file content written (what `diff_size` reports for the same layer).
    pub content_bytes: u64,
}

/// Applies a layer tar (plain, gzip or zstd, by magic bytes) into `dest`, streaming. Blocking.
///
/// Safety: anything that would write outside `dest` (a `..` component, a parent reached
/// through a symlink, a hard link target outside or through a symlink, a bad whiteout, an
/// absolute name or link target) is refused with [`crate::Error::InvalidInput`] naming the
/// entry; what was written before the refusal stays (the caller discards the layer). A
/// truncated or corrupt stream is an error. See `apply.rs` for the full rules.
pub fn apply_layer(dest: &Path, input: &mut dyn Read, opts: &ApplyOptions) -> Result<ApplyStats> {
    let config = ApplyConfig {
        whiteouts: opts.whiteouts,
        best_effort_xattrs: false,
        diff_id: true,
    };
    apply::apply_layer(dest, input, &config)
}

/// [`ApplyOptions`] plus the rarer knobs (a separate type so that adding a knob never breaks
/// callers that build `ApplyOptions` literally).
#[derive(Debug, Clone)]
pub struct ApplyConfig {
    pub whiteouts: WhiteoutMode,
    /// An xattr the target filesystem does not support (EOPNOTSUPP) is skipped with a warning
    /// instead of failing the apply: Docker's `vfs.xattrs=i_want_broken_containers`.
    pub best_effort_xattrs: bool,
    /// Compute the diffID (SHA-256 of the uncompressed stream). A caller that hashes the
    /// stream itself (the layer store does, for every driver) sets false and saves a second
    /// SHA-256 pass over every byte; [`ApplyStats::diff_id`] is then empty.
    pub diff_id: bool,
}

/// [`apply_layer`] with every knob.
pub fn apply_layer_with(
    dest: &Path,
    input: &mut dyn Read,
    config: &ApplyConfig,
) -> Result<ApplyStats> {
    apply::apply_layer(dest, input, config)
}

/// Lists what differs between `layer_root` and `parent_root` by walking both trees (`None`:
/// everything is added). Sorted; paths absolute inside the layer. See `changes.rs`.
pub fn naive_changes(layer_root: &Path, parent_root: Option<&Path>) -> Result<Vec<Change>> {
    changes::naive_changes(layer_root, parent_root)
}

/// Lists every ancestor directory (but `/`) of a listed change as Modify when it is not listed
/// yet, and sorts: Docker's rule. [`naive_changes`] applies it; a driver with its own change
/// detection calls it on its list so both lists stay equal. [`write_diff`] applies it too.
pub fn add_ancestor_dirs(changes: &mut Vec<Change>) {
    changes::add_ancestor_dirs(changes)
}

/// Writes the OCI layer tar for `changes`, reading file content from `layer_root`.
/// `parent_root` (the parent's full tree) lets the writer use opaque markers. The output is
/// deterministic: the same tree and changes always give the same bytes. See `write.rs` for the
/// rules (entry order, opaque rule, hard links, refused `.wh.` names).
pub fn write_diff(
    out: &mut dyn Write,
    layer_root: &Path,
    changes: &[Change],
    parent_root: Option<&Path>,
) -> Result<()> {
    write::write_diff(tarout::Sink::Writer(out), layer_root, changes, parent_root)
}

/// [`write_diff`] that hands the tar over in owned chunks of about 1 MB, in order (nothing is
/// copied after the file reads: a caller forwarding them to an async stream saves a pass over
/// every byte). An error from `send` stops the diff and is returned as an I/O error.
pub fn write_diff_chunks(
    send: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
    layer_root: &Path,
    changes: &[Change],
    parent_root: Option<&Path>,
) -> Result<()> {
    write::write_diff(tarout::Sink::Chunks(send), layer_root, changes, parent_root)
}

/// Bytes of regular-file content the diff of `changes` carries (each inode once). Equals the
/// `content_bytes` that applying that diff reports.
pub fn changes_size(layer_root: &Path, changes: &[Change]) -> Result<u64> {
    changes::changes_size(layer_root, changes)
}
