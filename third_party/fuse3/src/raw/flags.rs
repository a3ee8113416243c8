//! request flags.

pub use crate::raw::abi::FUSE_IOCTL_32BIT;
pub use crate::raw::abi::FUSE_IOCTL_COMPAT;
pub use crate::raw::abi::FUSE_IOCTL_DIR;
pub use crate::raw::abi::FUSE_IOCTL_MAX_IOV;
pub use crate::raw::abi::FUSE_IOCTL_RETRY;
pub use crate::raw::abi::FUSE_IOCTL_UNRESTRICTED;
pub use crate::raw::abi::FUSE_POLL_SCHEDULE_NOTIFY;
pub use crate::raw::abi::FUSE_READ_LOCKOWNER;
pub use crate::raw::abi::FUSE_WRITE_CACHE;
pub use crate::raw::abi::FUSE_WRITE_LOCKOWNER;
/// strata patch
pub use crate::raw::abi::FUSE_WRITE_KILL_SUIDGID;

/// strata patch: open reply flag; reads, writes and mmap go to the backing file named by the
/// reply's `backing_id` inside the kernel.
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;
