//! On-disk layout, overlay2's shape: `<root>/<id>/{diff,work,merged,lower,kind}`. `lower`
//! lists the parent chain uppermost first (`id:id:...`); `kind` says `ro` or `rw`. A layer is
//! made under a staging name and renamed into place, so it exists whole or not at all.

use std::path::PathBuf;

use strata_core::fsutil::{atomic_write, fsync_dir, remove_tree};
use strata_core::{Error, IoContext, LayerId, LayerKind, Result};

pub const STAGING_PREFIX: &str = ".staging-";
pub const REMOVING_PREFIX: &str = ".removing-";

#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn dir(&self, id: &LayerId) -> PathBuf {
        self.root.join(id.as_str())
    }

    pub fn diff(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("diff")
    }

    pub fn work(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("work")
    }

    pub fn merged(&self, id: &LayerId) -> PathBuf {
        self.dir(id).join("merged")
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.dir(id).join("diff").is_dir()
    }

    /// The parent chain of `id`, uppermost first.
    pub fn lowers(&self, id: &LayerId) -> Result<Vec<LayerId>> {
        let path = self.dir(id).join("lower");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if self.exists(id) {
                    return Ok(Vec::new());
                }
                return Err(Error::not_found(format!("layer {id}")));
            }
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        text.trim()
            .split(':')
            .filter(|s| !s.is_empty())
            .map(LayerId::new)
            .collect()
    }

    pub fn kind(&self, id: &LayerId) -> Result<LayerKind> {
        let path = self.dir(id).join("kind");
        let text = std::fs::read_to_string(&path).ctx("read", &path)?;
        Ok(if text.trim() == "ro" {
            LayerKind::ReadOnly
        } else {
            LayerKind::ReadWrite
        })
    }

    /// Makes the layer's directories under a staging name, then renames them into place.
    pub fn create(&self, id: &LayerId, parent: Option<&LayerId>, kind: LayerKind) -> Result<()> {
        let dest = self.dir(id);
        if dest.exists() {
            return Err(Error::AlreadyExists(format!("layer {id}")));
        }
        let mut chain = Vec::new();
        if let Some(p) = parent {
            if !self.exists(p) {
                return Err(Error::not_found(format!("parent layer {p}")));
            }
            chain.push(p.clone());
            chain.extend(self.lowers(p)?);
        }
        let mut nonce = [0u8; 8];
        strata_core::ids::fill_random(&mut nonce)?;
        let staging = self.root.join(format!(
            "{STAGING_PREFIX}{id}-{:016x}",
            u64::from_ne_bytes(nonce)
        ));
        let made = (|| -> Result<()> {
            for sub in ["diff", "work", "merged"] {
                let p = staging.join(sub);
                std::fs::create_dir_all(&p).ctx("create", &p)?;
            }
            let lower: Vec<&str> = chain.iter().map(|l| l.as_str()).collect();
            atomic_write(&staging.join("lower"), lower.join(":").as_bytes())?;
            let kind = match kind {
                LayerKind::ReadOnly => "ro",
                LayerKind::ReadWrite => "rw",
            };
            atomic_write(&staging.join("kind"), kind.as_bytes())?;
            fsync_dir(&staging)?;
            std::fs::rename(&staging, &dest).ctx("rename", &dest)?;
            fsync_dir(&self.root)
        })();
        if made.is_err() {
            let _ = remove_tree(&staging);
        }
        made
    }

    /// Renames the layer out of the way, then deletes it.
    pub fn remove(&self, id: &LayerId) -> Result<()> {
        let dir = self.dir(id);
        let mut nonce = [0u8; 8];
        strata_core::ids::fill_random(&mut nonce)?;
        let doomed = self.root.join(format!(
            "{REMOVING_PREFIX}{id}-{:016x}",
            u64::from_ne_bytes(nonce)
        ));
        std::fs::rename(&dir, &doomed).ctx("rename", &dir)?;
        fsync_dir(&self.root)?;
        remove_tree(&doomed)
    }

    /// Every complete layer with its parent (the first of its `lower` chain) and kind, for
    /// the driver's index.
    pub fn load(&self) -> Result<Vec<(LayerId, Option<LayerId>, LayerKind)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.root).ctx("list", &self.root)? {
            let entry = entry.ctx("list", &self.root)?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| LayerId::new(n).ok()) else {
                continue;
            };
            if !self.exists(&id) {
                continue;
            }
            let parent = self.lowers(&id)?.into_iter().next();
            out.push((id.clone(), parent, self.kind(&id)?));
        }
        Ok(out)
    }

    /// Deletes what a crash left half-made or half-removed.
    pub fn recover(&self) -> Result<()> {
        for entry in std::fs::read_dir(&self.root).ctx("list", &self.root)? {
            let entry = entry.ctx("list", &self.root)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(REMOVING_PREFIX) {
                tracing::info!(path = %entry.path().display(), "removing leftover of an interrupted create/remove");
                remove_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}
