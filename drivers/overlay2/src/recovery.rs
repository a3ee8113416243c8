//! Start-up recovery after a crash: stale `merged` mounts are taken down, half-created and
//! half-removed layer directories deleted, layers whose creation a crash cut short (renamed
//! into place, not yet durable: a torn `link` or `lower`, a missing `diff` or `work`) deleted
//! too, and the `l/` short links made to match the layers' `link` files again. Returns the
//! layers found, with their metadata.

use std::collections::HashMap;
use std::path::Path;

use strata_core::fsutil::{self, mounts};
use strata_core::{Error, IoContext, LayerId, Result};

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
        match LayerMeta::read(&path).and_then(|meta| check_dirs(&path, meta)) {
            Ok(meta) => {
                let _ = std::fs::remove_dir(path.join("merged"));
                layers.insert(id, meta);
            }
            Err(e) => {
                // create fsyncs everything before it returns, so a layer in this state was
                // never handed out: remove it as an unfinished creation.
                tracing::warn!("removing layer {id}, whose creation did not finish: {e}");
                let removing = layout.removing_dir(&id);
                std::fs::rename(&path, &removing).ctx("rename for removal", &path)?;
                fsutil::remove_tree(&removing)?;
            }
        }
    }
    drop_broken_chains(&mut layers);
    repair_links(layout, &layers)?;
    Ok(layers)
}

/// The directories every layer has: `diff`, and `work` when it has a parent.
fn check_dirs(dir: &Path, meta: LayerMeta) -> Result<LayerMeta> {
    let mut needed = vec!["diff"];
    if !meta.lower.is_empty() {
        needed.push("work");
    }
    for name in needed {
        let path = dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            _ => return Err(Error::Other(format!("{} is missing", path.display()))),
        }
    }
    Ok(meta)
}

/// Leaves out (with a warning; nothing is deleted) every layer whose `lower` does not match
/// its parent's: the first entry must be a known layer's link and the rest that layer's own
/// `lower`. Only a layer that passed every check is used, so a stray file that happens to
/// parse can never splice a wrong chain into a mount. Repeated until stable, since leaving
/// out a parent breaks its children.
fn drop_broken_chains(layers: &mut HashMap<LayerId, LayerMeta>) {
    loop {
        let mut by_link: HashMap<&str, Vec<&LayerId>> = HashMap::new();
        for (id, meta) in layers.iter() {
            by_link.entry(meta.link.as_str()).or_default().push(id);
        }
        let broken: Vec<(LayerId, String)> = layers
            .iter()
            .filter_map(|(id, meta)| {
                if by_link.get(meta.link.as_str()).map_or(0, Vec::len) > 1 {
                    return Some((
                        id.clone(),
                        format!("short link {} is not unique", meta.link),
                    ));
                }
                let short = meta.parent_short()?;
                let ok = match by_link.get(short).map(Vec::as_slice) {
                    Some([parent]) => layers
                        .get(*parent)
                        .is_some_and(|p| p.lower.as_slice() == &meta.lower[1..]),
                    _ => false,
                };
                (!ok).then(|| {
                    (
                        id.clone(),
                        format!("its lower chain does not match its parent l/{short}"),
                    )
                })
            })
            .collect();
        if broken.is_empty() {
            return;
        }
        for (id, why) in broken {
            tracing::warn!("ignoring layer {id}: {why}");
            layers.remove(&id);
        }
    }
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
