//! The real mount of a layer for the kit's reference counting: an overlay of its chain on
//! `<id>/merged`, or nothing for a base layer (its tree is its `diff`). Every call comes from
//! a blocking thread (the driver runs on the kit's blocking adapter), so the syscalls are made
//! in place.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use strata_core::driverkit::MountOps;
use strata_core::{Error, LayerId, Result};

use crate::layout::{LayerMeta, Layout};
use crate::mount::{self, MountApi, Mounter, OverlaySpec};

pub struct OverlayMounts {
    layout: Layout,
    pub mounter: Mounter,
}

impl OverlayMounts {
    pub fn new(layout: Layout, api: MountApi, options: Vec<(String, String)>) -> Self {
        let mounter = Mounter::new(layout.root().to_path_buf(), api, options);
        Self { layout, mounter }
    }
}

#[async_trait]
impl MountOps<LayerMeta> for OverlayMounts {
    type Handle = ();

    async fn mount(&self, id: &LayerId, meta: &LayerMeta) -> Result<(PathBuf, ())> {
        if meta.lower.is_empty() {
            return Ok((self.layout.diff(id), ()));
        }
        let merged = self.layout.merged(id);
        let mut lowers = Vec::with_capacity(meta.lower.len() + 1);
        let upper = if meta.read_only {
            lowers.push(Layout::relative_link(&meta.link));
            None
        } else {
            Some((format!("{id}/diff"), format!("{id}/work")))
        };
        lowers.extend(meta.lower.iter().cloned());
        match std::fs::create_dir(&merged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io("create", &merged, e)),
        }
        let spec = OverlaySpec {
            lowers,
            upper,
            target: merged.clone(),
        };
        if let Err(e) = self.mounter.mount(&spec) {
            let _ = std::fs::remove_dir(&merged);
            return Err(e);
        }
        Ok((merged, ()))
    }

    async fn unmount(&self, _: &LayerId, meta: &LayerMeta, path: &Path, _: &mut ()) -> Result<()> {
        if meta.lower.is_empty() {
            return Ok(());
        }
        mount::unmount(path)
    }
}
