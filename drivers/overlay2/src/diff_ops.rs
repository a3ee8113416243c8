//! changes / diff / diff_size / apply_diff: native (read the layer's upper directory) when the
//! probe allows it and the parent asked for is the layer's own, else core's naive walk over
//! mounts of the layer and its parent.

use std::io::Read;
use std::path::PathBuf;

use strata_core::archive::{self, WhiteoutMode};
use strata_core::driverkit::Held;
use strata_core::naive;
use strata_core::stream;
use strata_core::{Change, Error, LayerId, Result, TarStream};

use crate::driver::Overlay2;
use crate::native_diff;

/// The trees a diff reads: the layer's (its upper dir, or its mount) and its parent's mount.
struct DiffSources {
    native: bool,
    layer_root: PathBuf,
    layer: Option<Held>,
    parent: Option<Held>,
}

impl DiffSources {
    fn parent_root(&self) -> Option<&std::path::Path> {
        self.parent.as_ref().map(|g| g.path.as_path())
    }

    fn changes(&self) -> Result<Vec<Change>> {
        if self.native {
            native_diff::changes(&self.layer_root, self.parent_root())
        } else {
            archive::naive_changes(&self.layer_root, self.parent_root())
        }
    }

    /// Releases the mounts, on the blocking thread that did the work.
    fn release(self) {
        for held in self.layer.into_iter().chain(self.parent) {
            if let Err(e) = held.release_blocking() {
                tracing::warn!("releasing a diff's mount: {e}");
            }
        }
    }
}

impl Overlay2 {
    fn diff_sources(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<DiffSources> {
        let native = self.native_diff() && self.layers.parent(id)?.as_ref() == parent;
        let parent = parent
            .map(|p| self.layers.hold_blocking(p, &self.mounts))
            .transpose()?;
        if native {
            return Ok(DiffSources {
                native,
                layer_root: self.layout().diff(id),
                layer: None,
                parent,
            });
        }
        match self.layers.hold_blocking(id, &self.mounts) {
            Ok(layer) => Ok(DiffSources {
                native,
                layer_root: layer.path.clone(),
                layer: Some(layer),
                parent,
            }),
            Err(e) => {
                if let Some(p) = parent {
                    p.release_blocking()?;
                }
                Err(e)
            }
        }
    }

    pub(crate) fn diff_changes(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
    ) -> Result<Vec<Change>> {
        let sources = self.diff_sources(id, parent)?;
        let changes = sources.changes();
        sources.release();
        changes
    }

    pub(crate) fn changes_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64> {
        let sources = self.diff_sources(id, parent)?;
        let size = sources
            .changes()
            .and_then(|changes| archive::changes_size(&sources.layer_root, &changes));
        sources.release();
        size
    }

    /// Mounts what the diff reads now (so a missing layer fails here, not mid-stream) and
    /// streams the tar; the mounts are released when the stream ends or is dropped.
    pub(crate) fn diff_stream(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream> {
        let sources = self.diff_sources(id, parent)?;
        Ok(stream::blocking_chunk_stream(move |send| {
            let written = sources.changes().and_then(|changes| {
                archive::write_diff_chunks(
                    send,
                    &sources.layer_root,
                    &changes,
                    sources.parent_root(),
                )
            });
            sources.release();
            written
        }))
    }

    /// Unpacks a layer tar straight into the layer's upper directory, whiteouts as overlay
    /// markers. The parent named must be the layer's own.
    pub(crate) fn apply_tar(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: &mut dyn Read,
    ) -> Result<u64> {
        let recorded = self.layers.parent(id)?;
        if recorded.as_ref() != parent {
            return Err(Error::invalid(format!(
                "apply_diff onto layer {id} must name its parent {} (got {})",
                recorded.map_or("none".to_string(), |p| p.to_string()),
                parent.map_or("none".to_string(), |p| p.to_string()),
            )));
        }
        let dest = self.layout().diff(id);
        // The layer store hashes the stream for the diffID; hashing it here too would only
        // take CPU from the apply.
        let stats = archive::apply_layer_with(
            &dest,
            tar,
            &naive::driver_apply(WhiteoutMode::OverlayMarkers),
        )?;
        Ok(stats.content_bytes)
    }
}
