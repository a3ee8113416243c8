//! The layer driver contract. It maps one to one onto Docker's graphdriver plugin protocol:
//! Create/CreateReadWrite = `create` with a [`LayerKind`], Get/Put = `mount`/`unmount`,
//! Exists, Remove, Status, GetMetadata = `metadata`, Cleanup, Diff, Changes, ApplyDiff,
//! DiffSize, Capabilities. `usage` is ours (Docker walks the tree; we ask the driver).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncRead;

use crate::error::Result;
use crate::ids::LayerId;
use crate::options::StorageOpts;

/// An uncompressed (for `diff`) or possibly compressed (for `apply_diff`) layer tar stream.
pub type TarStream = Pin<Box<dyn AsyncRead + Send + 'static>>;

/// Whether a layer may be written through its mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// An image layer: written only by `apply_diff`, mounted read-only.
    ReadOnly,
    /// A container layer (or a layer being built): its mount is writable.
    ReadWrite,
}

/// What `create` is asked for beyond the id and parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateOpts {
    pub kind: LayerKind,
    /// SELinux label passed through to the mount, as Docker's MountLabel (empty: none).
    pub mount_label: String,
    /// Driver storage options such as `size=10G`.
    pub storage_opts: StorageOpts,
}

impl CreateOpts {
    pub fn read_only() -> Self {
        Self {
            kind: LayerKind::ReadOnly,
            mount_label: String::new(),
            storage_opts: StorageOpts::default(),
        }
    }

    pub fn read_write() -> Self {
        Self {
            kind: LayerKind::ReadWrite,
            ..Self::read_only()
        }
    }

    pub fn with_storage_opts(mut self, opts: StorageOpts) -> Self {
        self.storage_opts = opts;
        self
    }
}

/// One entry of a change list. Kind numbers follow Docker's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ChangeKind {
    Modify = 0,
    Add = 1,
    Delete = 2,
}

impl ChangeKind {
    pub fn wire(self) -> u8 {
        self as u8
    }

    pub fn from_wire(n: u64) -> Option<Self> {
        match n {
            0 => Some(ChangeKind::Modify),
            1 => Some(ChangeKind::Add),
            2 => Some(ChangeKind::Delete),
            _ => None,
        }
    }
}

/// A path that differs between a layer and its parent. `path` is absolute inside the layer
/// (`/etc/passwd`) and kept as raw bytes so non-UTF-8 names survive.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    pub path: PathBuf,
    pub kind: ChangeKind,
}

/// What one layer alone costs on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes allocated (st_blocks * 512), each inode counted once.
    pub bytes: u64,
    /// Inodes this layer adds, each counted once.
    pub inodes: u64,
}

/// What a driver can do and what it needs; the conformance suite gates cases on these, never
/// on driver names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// `changes`/`diff` read the driver's own record of the layer instead of walking both trees.
    pub native_diff: bool,
    /// The `size=` storage option is honoured on read-write layers.
    pub quota: bool,
    /// Two diffs of the same layer give the same bytes. Not Docker's ReproducesExactDiffs, which
    /// promises the applied tar back byte for byte: the plugin server always answers that no.
    pub reproducible_diff: bool,
    /// The driver needs to run as root (mounts, ioctls).
    pub requires_root: bool,
    /// Backing filesystems the driver's root must be on; empty means any.
    pub backing_filesystems: Vec<String>,
    /// A child layer shares its parent's data (overlay, btrfs snapshots) instead of holding a
    /// full copy (vfs): `usage` of a fresh child is then near zero, not its parent's size.
    #[serde(default)]
    pub layers_share_parent: bool,
}

/// A mount described for a caller that mounts for itself (containerd's snapshotter clients):
/// what `mount -t FS_TYPE -o OPTIONS SOURCE TARGET` does, in containerd's `Mount` terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub fs_type: String,
    pub source: String,
    pub options: Vec<String>,
}

/// The contract of a layer (graph) driver. Async and object safe: used as `Arc<dyn LayerDriver>`.
///
/// Rules every implementation keeps (the conformance suite checks them):
/// - ids are validated [`LayerId`]s; a driver never sees an unsafe name;
/// - `create` gives the new layer its parent's content (copy-on-write where it can) and is
///   atomic: after a crash the layer exists whole or not at all;
/// - `mount` is reference counted: every call returns the same path until the matching number
///   of `unmount`s, and only the last really unmounts;
/// - `remove` refuses with `Busy` while the layer is mounted or has children;
/// - `apply_diff` returns the bytes of file content applied and that equals `diff_size`.
#[async_trait]
pub trait LayerDriver: Send + Sync + 'static {
    /// The name `--storage-driver` uses (`vfs`, `overlay2`, ...).
    fn name(&self) -> &str;

    fn capabilities(&self) -> Capabilities;

    /// Creates `id` with `parent`'s content (or empty).
    async fn create(&self, id: &LayerId, parent: Option<&LayerId>, opts: &CreateOpts)
        -> Result<()>;

    /// Deletes the layer. `Busy` while mounted or while a child exists.
    async fn remove(&self, id: &LayerId) -> Result<()>;

    async fn exists(&self, id: &LayerId) -> Result<bool>;

    /// Makes the layer's full tree (its parents' content included) visible at a path.
    async fn mount(&self, id: &LayerId, mount_label: &str) -> Result<PathBuf>;

    /// Releases one `mount`.
    async fn unmount(&self, id: &LayerId) -> Result<()>;

    /// The layer's full tree as a mount the caller performs itself (read-only when
    /// `read_only`), so the driver mounts nothing and counts no reference. `None`, the default:
    /// the tree is reachable only through [`Self::mount`], which callers then bind-mount.
    async fn mount_spec(&self, id: &LayerId, read_only: bool) -> Result<Option<MountSpec>> {
        let _ = (id, read_only);
        Ok(None)
    }

    /// What differs between `id` and `parent` (None: everything in `id` is an addition).
    async fn changes(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<Vec<Change>>;

    /// The layer's changes against `parent` as an uncompressed OCI layer tar.
    async fn diff(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<TarStream>;

    /// Applies a layer tar (plain, gzip or zstd) onto `id`, whose parent is `parent`. Returns the
    /// bytes of file content written.
    async fn apply_diff(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        tar: TarStream,
    ) -> Result<u64>;

    /// The bytes of file content that `diff` would carry.
    async fn diff_size(&self, id: &LayerId, parent: Option<&LayerId>) -> Result<u64>;

    /// What this layer alone costs on disk (its parent excluded).
    async fn usage(&self, id: &LayerId) -> Result<Usage>;

    /// Key/value lines shown by `info` under the storage driver.
    async fn status(&self) -> Result<Vec<(String, String)>>;

    /// Driver data shown by `inspect` as GraphDriver.Data (paths such as MergedDir, UpperDir).
    async fn metadata(&self, id: &LayerId) -> Result<BTreeMap<String, String>>;

    /// Unmounts everything this driver mounted. Called at daemon shutdown.
    async fn cleanup(&self) -> Result<()>;
}
