//! The diff any mount-only driver gets for free (moby's NaiveDiffDriver): mount the layer and
//! its parent, walk and compare both trees ([`archive::naive_changes`]), write the tar from the
//! layer's tree ([`archive::write_diff`]) and apply tars with [`archive::apply_layer`].
//!
//! A driver hands over a [`MountedPair`]; its `release` (e.g. unmount both) runs exactly once
//! when the work using the mounts is over, also on error and also when a diff stream is
//! dropped half read.

use std::path::PathBuf;

use crate::archive::{self, ApplyConfig, ApplyStats, WhiteoutMode};
use crate::error::Result;
use crate::layer::{Change, TarStream};
use crate::stream;

/// A mounted layer and its mounted parent; `release` runs once when the work using them ends
/// (on drop), e.g. to unmount both. It may be called on a blocking thread.
pub struct MountedPair {
    pub layer: PathBuf,
    pub parent: Option<PathBuf>,
    pub release: Option<Box<dyn FnOnce() + Send>>,
}

impl MountedPair {
    /// A pair with nothing to release.
    pub fn new(layer: PathBuf, parent: Option<PathBuf>) -> Self {
        Self {
            layer,
            parent,
            release: None,
        }
    }

    /// Sets what to run when the work is over.
    pub fn on_release(mut self, release: impl FnOnce() + Send + 'static) -> Self {
        self.release = Some(Box::new(release));
        self
    }
}

impl Drop for MountedPair {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

impl std::fmt::Debug for MountedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountedPair")
            .field("layer", &self.layer)
            .field("parent", &self.parent)
            .field("release", &self.release.is_some())
            .finish()
    }
}

/// What differs between the layer and its parent (everything is added without a parent).
pub async fn changes(pair: MountedPair) -> Result<Vec<Change>> {
    tokio::task::spawn_blocking(move || {
        let out = archive::naive_changes(&pair.layer, pair.parent.as_deref());
        drop(pair);
        out
    })
    .await?
}

/// Bytes of file content the diff carries (equals what applying it reports).
pub async fn diff_size(pair: MountedPair) -> Result<u64> {
    tokio::task::spawn_blocking(move || {
        let out = archive::naive_changes(&pair.layer, pair.parent.as_deref())
            .and_then(|changes| archive::changes_size(&pair.layer, &changes));
        drop(pair);
        out
    })
    .await?
}

/// The layer's changes as an uncompressed OCI layer tar, streamed while it is written. The
/// pair is released when the tar is complete (or failed, or the reader went away).
pub fn diff(pair: MountedPair) -> TarStream {
    stream::blocking_chunk_stream(move |send| {
        let changes = archive::naive_changes(&pair.layer, pair.parent.as_deref())?;
        let written =
            archive::write_diff_chunks(send, &pair.layer, &changes, pair.parent.as_deref());
        drop(pair);
        written
    })
}

/// Applies a layer tar (plain, gzip or zstd) into `dest`, for a driver's `apply_diff`. The
/// diffID is not computed (`ApplyStats::diff_id` is empty): the layer store hashes the stream
/// itself, for every driver.
pub async fn apply(dest: PathBuf, tar: TarStream, mode: WhiteoutMode) -> Result<ApplyStats> {
    stream::with_blocking_reader(tar, move |input| {
        archive::apply_layer_with(&dest, input, &driver_apply(mode))
    })
    .await
}

/// How a driver applies a diff: the given whiteout mode, xattrs exact, no diffID (see
/// [`apply`]).
pub fn driver_apply(whiteouts: WhiteoutMode) -> ApplyConfig {
    ApplyConfig {
        whiteouts,
        best_effort_xattrs: false,
        diff_id: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn counted(layer: PathBuf, parent: Option<PathBuf>, n: &Arc<AtomicUsize>) -> MountedPair {
        let n = n.clone();
        MountedPair::new(layer, parent).on_release(move || {
            n.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test]
    async fn diff_then_apply_reproduces_the_layer_and_releases_once_each() {
        let t = tempfile::tempdir().unwrap();
        let (parent, layer, copy) = (t.path().join("p"), t.path().join("l"), t.path().join("c"));
        for d in [&parent, &layer, &copy] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(parent.join("gone"), b"old").unwrap();
        std::fs::write(parent.join("kept"), b"kept").unwrap();
        // Layer = parent's content, then changed.
        let base = stream::read_all(diff(MountedPair::new(parent.clone(), None)))
            .await
            .unwrap();
        apply(
            layer.clone(),
            stream::from_bytes(base.clone()),
            WhiteoutMode::Delete,
        )
        .await
        .unwrap();
        std::fs::remove_file(layer.join("gone")).unwrap();
        std::fs::write(layer.join("new"), b"12345").unwrap();

        let released = Arc::new(AtomicUsize::new(0));
        let list = changes(counted(layer.clone(), Some(parent.clone()), &released))
            .await
            .unwrap();
        let paths: Vec<_> = list
            .iter()
            .map(|c| c.path.to_str().unwrap().to_owned())
            .collect();
        assert!(paths.contains(&"/gone".to_owned()) && paths.contains(&"/new".to_owned()));
        let size = diff_size(counted(layer.clone(), Some(parent.clone()), &released))
            .await
            .unwrap();
        assert_eq!(size, 5);
        let tar = stream::read_all(diff(counted(
            layer.clone(),
            Some(parent.clone()),
            &released,
        )))
        .await
        .unwrap();
        assert_eq!(released.load(Ordering::SeqCst), 3);

        apply(copy.clone(), stream::from_bytes(base), WhiteoutMode::Delete)
            .await
            .unwrap();
        let stats = apply(copy.clone(), stream::from_bytes(tar), WhiteoutMode::Delete)
            .await
            .unwrap();
        assert_eq!(stats.content_bytes, size);
        assert!(!copy.join("gone").exists());
        assert_eq!(std::fs::read(copy.join("new")).unwrap(), b"12345");
        assert_eq!(std::fs::read(copy.join("kept")).unwrap(), b"kept");
    }

    #[tokio::test]
    async fn failures_still_release_and_reach_the_reader() {
        let released = Arc::new(AtomicUsize::new(0));
        let missing = PathBuf::from("/nonexistent/strata-naive-test");
        let err = stream::read_all(diff(counted(missing.clone(), None, &released)))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("strata-naive-test"), "{err}");
        assert!(changes(counted(missing, None, &released)).await.is_err());
        assert_eq!(released.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn dropping_a_diff_stream_early_releases() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("big"), vec![1u8; 8 << 20]).unwrap();
        let released = Arc::new(AtomicUsize::new(0));
        let mut s = diff(counted(t.path().to_path_buf(), None, &released));
        let mut first = [0u8; 512];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut first)
            .await
            .unwrap();
        drop(s);
        for _ in 0..200 {
            if released.load(Ordering::SeqCst) == 1 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("release did not run after the stream was dropped");
    }
}
