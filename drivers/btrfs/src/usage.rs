//! What one layer alone costs. With quotas on (and consistent), the layer's qgroup knows its
//! exclusive bytes: tree searches, no walk, and a commit only when the layer has uncommitted
//! changes. (Updates of existing inodes that btrfs keeps as delayed items, such as a chmod,
//! are not seen as uncommitted and show up at the next commit, 30 s at most by default; new
//! inodes, deletions and data are seen at once.) Otherwise the layer is walked against its
//! parent and only added or modified entries are counted (a fresh snapshot costs nothing: it
//! shares every extent with its parent).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strata_core::fsutil::usage::tree_usage;
use strata_core::{archive, ChangeKind, Error, Result, Usage};

use crate::{qgroup, subvol};

/// Usage from the layer's qgroup; None when quotas cannot answer exactly (off, rescanning,
/// inconsistent, or no qgroup for this subvolume). Only for layers without children: a
/// child shares its parent's extents, which then stop being the parent's exclusive bytes.
pub fn from_qgroup(layer: &Path) -> Result<Option<Usage>> {
    let status = qgroup::quota_status(layer)?;
    if !(status.enabled && status.consistent) {
        return Ok(None);
    }
    // qgroup numbers are settled at transaction commit. Commit only when this layer changed
    // since the last one: a commit can cost seconds while btrfs's cleaner accounts the drops
    // of removed subvolumes, and other layers' writes are none of this call's business.
    let info = subvol::subvolume_info(layer)?;
    if qgroup::has_uncommitted_changes(layer, info.id, info.generation)? {
        subvol::sync(layer)?;
    }
    let Some((_referenced, exclusive)) = qgroup::qgroup_bytes(layer, info.id)? else {
        return Ok(None);
    };
    // A fresh subvolume's inodes are all its own (its root directory included, as the walk
    // counts it); a snapshot's are those changed since it was taken, its root directory aside
    // (the walk against the parent does not list the root either).
    let inodes = if info.parent_uuid == [0u8; 16] {
        qgroup::inodes_changed_since(layer, info.id, 0, (0, 0), true)?
    } else {
        qgroup::inodes_changed_since(layer, info.id, info.otransid, info.otime, false)?
    };
    Ok(Some(Usage {
        bytes: exclusive,
        inodes,
    }))
}

/// Usage by walking: the whole tree for a layer without parent, else the entries that differ
/// from the parent (each inode once, st_blocks * 512 as everywhere in the engine).
pub fn by_walk(layer: &Path, parent: Option<&Path>) -> Result<Usage> {
    let Some(parent) = parent else {
        return tree_usage(layer);
    };
    let changes = archive::naive_changes(layer, Some(parent))?;
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    for change in changes {
        if change.kind == ChangeKind::Delete {
            continue;
        }
        let rel = change.path.strip_prefix("/").unwrap_or(&change.path);
        let path = layer.join(rel);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
            continue;
        }
        usage.inodes += 1;
        usage.bytes += meta.blocks() * 512;
    }
    Ok(usage)
}
