//! The fuse-overlay layer driver: Strata's own overlay filesystem in userspace (see
//! DESIGN.md).
//!
//! - [`fs`]: the filesystem. Kernel overlayfs's semantics and on-disk format (0/0 character
//!   device whiteouts, `trusted.overlay.opaque=y`), so layers move freely between this driver,
//!   overlay2 and kernel overlay. Served with `fuse3`'s raw inode API.
//! - [`mount`]: serving it in-process on a dedicated multi-threaded tokio runtime (as root,
//!   through /dev/fuse, `default_permissions,allow_other`).
//! - [`driver`]: the LayerDriver over overlay2's directory layout, with a native diff.
//! - `src/bin/strata-fuse-overlayfs.rs`: the same filesystem behind fuse-overlayfs's command
//!   line.
//!
//! Durability decision: copy-up IS durable when the triggering call returns (the copy is
//! fdatasynced in the work directory before it is renamed over the lower name), as kernel
//! overlayfs does and unlike fuse-overlayfs. A crash can therefore never leave an empty or
//! short copy hiding a lower file that the user only chmod-ed. On a reflink filesystem the
//! copy is a clone and the sync costs almost nothing; the driver option
//! `fuse-overlay.durable_copy_up=false` trades this for speed.
//!
//! Speed: long entry/attribute TTLs and negative entries (every change goes through us, so the
//! kernel's caches stay right; hard-linked lower files get no attribute caching), readdirplus,
//! FOPEN_KEEP_CACHE (page cache kept across opens), FLUSH disabled (ENOSYS), file handles that are the underlying fds (no table lookup on
//! read/write), name handling on the stack, directory fds cached per merged directory so a
//! lookup is one fstatat per layer, 1 MiB requests, requests handled in parallel. Not done:
//! FUSE no-open (reads need an fd per open here). The FUSE writeback cache is supported
//! (`OverlayConfig::writeback`, `-o writeback=1` on the binary) but off by default: the
//! kernel's dirty-page throttling of FUSE devices made bulk writes slower with it.

pub mod driver;
pub mod fs;
pub mod mount;

pub use driver::{init, FuseOverlayDriver, NAME};
pub use fs::{OverlayConfig, OverlayFs};
pub use mount::OverlayMount;
