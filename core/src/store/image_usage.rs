//! What an image's own files cost on disk (its config and its metadata directory; its layers
//! are the layer store's, see [`LayerStore::on_disk`]).
//!
//! [`LayerStore::on_disk`]: super::LayerStore::on_disk

use super::digest::Digest;
use super::images::ImageStore;
use crate::error::Result;
use crate::fsutil::usage::tree_usage;

impl ImageStore {
    /// Allocated bytes of the images' own config files, by image (measured off the async
    /// executor; the metadata directory can change, so nothing is kept).
    pub async fn config_bytes(&self, ids: Vec<Digest>) -> Result<Vec<(Digest, u64)>> {
        let paths: Vec<_> = ids
            .into_iter()
            .map(|id| (self.content_path(&id), self.metadata_dir(&id), id))
            .collect();
        tokio::task::spawn_blocking(move || {
            paths
                .into_iter()
                .map(|(content, meta, id)| {
                    let bytes = tree_usage(&content).map_or(0, |u| u.bytes)
                        + tree_usage(&meta).map_or(0, |u| u.bytes);
                    (id, bytes)
                })
                .collect()
        })
        .await
        .map_err(Into::into)
    }
}
