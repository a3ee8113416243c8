//! Reading and writing layerdb's per-layer files (`diff`, `size`, `cache-id`, `parent`, ...)
//! and finding what an interrupted operation left; the layer store's state lives in
//! `layers.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::digest::{chain_id, Digest};
use super::layers::{LayerInfo, MountInfo, MAX_LAYER_DEPTH};
use super::{read_opt, read_text, write_file_synced};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::fsync_dir;
use crate::ids::LayerId;
use crate::layer::Usage;

pub(super) fn write_layer_files(dir: &Path, info: &LayerInfo, tar_split: &[u8]) -> Result<()> {
    write_file_synced(&dir.join("diff"), info.diff_id.as_str().as_bytes())?;
    write_file_synced(&dir.join("size"), info.size.to_string().as_bytes())?;
    write_file_synced(&dir.join("tar-size"), info.tar_size.to_string().as_bytes())?;
    let usage = serde_json::to_vec(&info.usage).map_err(|e| Error::Other(e.to_string()))?;
    write_file_synced(&dir.join("usage"), &usage)?;
    if let Some(p) = &info.parent {
        write_file_synced(&dir.join("parent"), p.as_str().as_bytes())?;
    }
    write_file_synced(&dir.join("tar-split"), tar_split)?;
    fsync_dir(dir)
}

/// Staging directories and `-removing` entries, with the driver layer each one names.
pub(super) fn find_leftovers(root: &Path) -> Result<Vec<(PathBuf, Option<LayerId>)>> {
    let mut out = Vec::new();
    let tmp = root.join("tmp");
    for entry in std::fs::read_dir(&tmp).ctx("read directory", &tmp)? {
        let path = entry.ctx("read directory", &tmp)?.path();
        let id = read_opt(&path.join("cache-id"))?
            .or(read_opt(&path.join("mount-id"))?)
            .and_then(|s| LayerId::new(s).ok());
        out.push((path, id));
    }
    for (sub, id_file) in [("sha256", "cache-id"), ("mounts", "mount-id")] {
        let dir = root.join(sub);
        for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
            let path = entry.ctx("read directory", &dir)?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if name.ends_with("-removing") {
                let id = read_opt(&path.join(id_file))?.and_then(|s| LayerId::new(s).ok());
                out.push((path, id));
            }
        }
    }
    Ok(out)
}

pub(super) fn load_all(root: &Path) -> Result<(Vec<LayerInfo>, Vec<MountInfo>)> {
    let mut layers = HashMap::new();
    let dir = root.join("sha256");
    for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
        let path = entry.ctx("read directory", &dir)?.path();
        match load_layer(&path) {
            Ok(info) => {
                layers.insert(info.chain_id.clone(), info);
            }
            Err(e) => {
                warn!(path = %path.display(), error = %e, "ignoring an unreadable layerdb entry")
            }
        }
    }
    // Depths follow parents.
    let chains: Vec<Digest> = layers.keys().cloned().collect();
    for c in chains {
        let mut depth = 0;
        let mut next = Some(c.clone());
        while let Some(n) = next {
            depth += 1;
            next = layers.get(&n).and_then(|l| l.parent.clone());
            if depth > MAX_LAYER_DEPTH + 1 {
                break;
            }
        }
        if let Some(l) = layers.get_mut(&c) {
            l.depth = depth;
        }
    }
    let mut mounts = Vec::new();
    let dir = root.join("mounts");
    for entry in std::fs::read_dir(&dir).ctx("read directory", &dir)? {
        let path = entry.ctx("read directory", &dir)?.path();
        let container = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let mount_id = LayerId::new(read_text(&path.join("mount-id"))?)?;
        let parent = read_opt(&path.join("parent"))?
            .map(|p| Digest::parse(&p))
            .transpose()?;
        mounts.push(MountInfo {
            container,
            mount_id,
            parent,
        });
    }
    Ok((layers.into_values().collect(), mounts))
}

fn load_layer(dir: &Path) -> Result<LayerInfo> {
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let chain_id = Digest::parse(&name)?;
    let diff_id = Digest::parse(&read_text(&dir.join("diff"))?)?;
    let parent = read_opt(&dir.join("parent"))?
        .map(|p| Digest::parse(&p))
        .transpose()?;
    let expected = chain_id_of(parent.as_ref(), &diff_id);
    if expected != chain_id {
        return Err(Error::Other(format!(
            "layer {chain_id}: diff and parent give chain id {expected}"
        )));
    }
    let number = |file: &str| -> Result<u64> {
        read_opt(&dir.join(file))?
            .map(|s| {
                s.parse::<u64>().map_err(|_| {
                    Error::Other(format!("{}: not a number", dir.join(file).display()))
                })
            })
            .transpose()
            .map(|v| v.unwrap_or(0))
    };
    let usage = match read_opt(&dir.join("usage"))? {
        Some(s) => serde_json::from_str(&s).unwrap_or_default(),
        None => Usage::default(),
    };
    Ok(LayerInfo {
        chain_id,
        diff_id,
        parent,
        cache_id: LayerId::new(read_text(&dir.join("cache-id"))?)?,
        size: number("size")?,
        tar_size: number("tar-size")?,
        usage,
        depth: 0,
    })
}

fn chain_id_of(parent: Option<&Digest>, diff: &Digest) -> Digest {
    chain_id(parent, diff)
}
