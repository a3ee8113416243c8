//! Start-up recovery after a crash: stale `merged` mounts are taken down, half-created and
//! half-removed layer directories deleted, and the `l/` short links made to match the layers'
//! `link` files again. Returns the layers found, with their metadata.

use std::collections::HashMap;
use std::path::Path;

use strata_core::fsutil::{self, mounts};
use strata_core::{IoContext, LayerId, Result};

use crate::layout::{self, LayerMeta, Layout, CREATING_PREFIX, PROBE_PREFIX, REMOVING_PREFIX};

pub fn recover(layout: &Layout) -> Result<HashMap<LayerId, LayerMeta>> {
    unmount_stale(layout.root())?;
    let mut layers = HashMap::new();
    let entries = std::fs::read_dir(layout.root()).ctx("read directory", layout.root())?;
    for entry in entries {
        let entry = entry.ctx("read directory", layout.root())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if [CREATING_PREFIX, REMOVING_PREFIX, PROBE_PREFIX]
            .iter()
            .any(|p| name.starts_with(p))
        {
            tracing::info!("removing unfinished layer directory {}", path.display());
            fsutil::remove_tree(&path)?;
            continue;
        }
        if !entry.file_type().ctx("stat", &path)?.is_dir() || name == layout::LINK_DIR {
            continue;
        }
        let Ok(id) = LayerId::new(name.as_str()) else {
            continue;
        };
        match LayerMeta::read(&path) {
            Ok(meta) => {
                let _ = std::fs::remove_dir(path.join("merged"));
                layers.insert(id, meta);
            }
            Err(e) => tracing::warn!("ignoring {}: {e}", path.display()),
        }
    }
    repair_links(layout, &layers)?;
    Ok(layers)
}

/// Unmounts whatever is mounted below the root (a crashed daemon's `merged` mounts).
fn unmount_stale(root: &Path) -> Result<()> {
    for m in mounts::mounts_under(root)? {
        if m.mount_point == root {
            continue;
        }
        tracing::info!("unmounting stale mount {}", m.mount_point.display());
        mounts::unmount(&m.mount_point, true)?;
    }
    Ok(())
}

/// Recreates missing `l/<short>` links and drops links whose layer is gone.
fn repair_links(layout: &Layout, layers: &HashMap<LayerId, LayerMeta>) -> Result<()> {
    let links = layout.links_dir();
    for entry in std::fs::read_dir(&links).ctx("read directory", &links)? {
        let entry = entry.ctx("read directory", &links)?;
        let short = entry.file_name().to_string_lossy().into_owned();
        let keep = layout
            .link_target(&short)
            .and_then(|id| layers.get(&id))
            .is_some_and(|meta| meta.link == short);
        if !keep {
            tracing::info!("removing stale short link l/{short}");
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (id, meta) in layers {
        if layout.link_target(&meta.link).as_ref() != Some(id) {
            tracing::info!("recreating short link l/{} for layer {id}", meta.link);
            layout.make_link(&meta.link, id)?;
        }
    }
    Ok(())
}
