//! Image operation tests, run on every driver in [`DRIVERS`] with Docker's own archives from
//! `/work/shared/fixtures` (override with `STRATA_FIXTURES`).

mod archives;
mod load_save;
mod ops;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use strata_core::layer::LayerDriver;
use strata_core::registry::{DriverConfig, DriverInit};
use strata_core::store::{Digest, ImageStore, LayerStore};
use strata_core::StorageOpts;

use super::load::{LoadOptions, LoadProgress};

/// How a driver's root is provided.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Root {
    /// A directory on the test machine's filesystem.
    TempDir,
    /// A fresh loop-mounted btrfs.
    LoopBtrfs,
}

/// The drivers every image test runs on. Add a driver here when it lands.
fn drivers() -> Vec<(&'static str, DriverInit, Root)> {
    vec![
        ("vfs", Arc::new(strata_vfs::init), Root::TempDir),
        ("overlay2", Arc::new(strata_overlay2::init), Root::TempDir),
        (
            "overlay2-naive",
            Arc::new(strata_overlay2::init_naive),
            Root::TempDir,
        ),
        ("btrfs", Arc::new(strata_btrfs::init), Root::LoopBtrfs),
        (
            "fuse-overlay",
            Arc::new(strata_fuse_overlay::init),
            Root::TempDir,
        ),
    ]
}

fn fixtures() -> PathBuf {
    std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/fixtures"))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

fn fixture_id(name: &str) -> Digest {
    Digest::parse(std::str::from_utf8(&fixture(name)).unwrap().trim()).unwrap()
}

/// A data root with a driver and both stores; the driver is cleaned up on drop, then its
/// filesystem (if it has its own) goes.
struct Harness {
    name: &'static str,
    driver: Arc<dyn LayerDriver>,
    images: ImageStore,
    driver_root: PathBuf,
    tmp: tempfile::TempDir,
    _loop_fs: Option<strata_btrfs::testing::LoopBtrfs>,
}

impl Harness {
    async fn new(name: &'static str, init: &DriverInit, root: Root) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let loop_fs = (root == Root::LoopBtrfs).then(|| {
            strata_btrfs::testing::LoopBtrfs::new().expect("a loop btrfs (root, btrfs-progs)")
        });
        let driver_root = match &loop_fs {
            Some(fs) => fs.path().join(name),
            None => tmp.path().join(name),
        };
        let driver = init(DriverConfig {
            root: driver_root.clone(),
            options: StorageOpts::default(),
        })
        .await
        .unwrap_or_else(|e| panic!("driver {name}: {e}"));
        let image_root = tmp.path().join("image").join(name);
        let layers = LayerStore::open(&image_root, driver.clone()).await.unwrap();
        let images = ImageStore::open(&image_root, layers).await.unwrap();
        Self {
            name,
            driver,
            images,
            driver_root,
            tmp,
            _loop_fs: loop_fs,
        }
    }

    fn layers(&self) -> &LayerStore {
        self.images.layers()
    }

    fn load_options(&self) -> (LoadOptions, Arc<Mutex<Vec<LoadProgress>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let opts = LoadOptions {
            spool_dir: self.tmp.path().join("tmp"),
            progress: Some(Arc::new(move |p| s.lock().unwrap().push(p))),
        };
        (opts, seen)
    }

    async fn load(&self, archive: Vec<u8>) -> strata_core::Result<Vec<super::LoadedImage>> {
        let (opts, _) = self.load_options();
        super::load(&self.images, strata_core::stream::from_bytes(archive), opts).await
    }

    /// Every path two levels deep under the driver's root: a layer the driver keeps shows up.
    fn driver_entries(&self) -> BTreeSet<PathBuf> {
        let mut out = BTreeSet::new();
        list_depth(&self.driver_root, 2, &mut out);
        out
    }

    fn layerdb_entries(&self) -> Vec<String> {
        let dir = self
            .tmp
            .path()
            .join("image")
            .join(self.name)
            .join("layerdb/sha256");
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// Reads a file from an image's full tree (None if absent).
    async fn read_in_image(&self, id: &Digest, path: &str) -> Option<Vec<u8>> {
        let top = self.images.get(id).unwrap().top_layer().unwrap();
        let root = self.layers().mount_layer(&top).await.unwrap();
        let data = std::fs::read(root.path().join(path.trim_start_matches('/'))).ok();
        root.release().await.unwrap();
        data
    }

    async fn exists_in_image(&self, id: &Digest, path: &str) -> bool {
        let top = self.images.get(id).unwrap().top_layer().unwrap();
        let root = self.layers().mount_layer(&top).await.unwrap();
        let exists =
            std::fs::symlink_metadata(root.path().join(path.trim_start_matches('/'))).is_ok();
        root.release().await.unwrap();
        exists
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let driver = self.driver.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let _ = std::thread::spawn(move || handle.block_on(driver.cleanup())).join();
        }
    }
}

fn list_depth(dir: &Path, depth: usize, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        out.insert(p.clone());
        if depth > 1 && e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            list_depth(&p, depth - 1, out);
        }
    }
}
