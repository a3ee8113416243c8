//! The Strata driver conformance suite: what every layer driver and volume driver must do,
//! built-in or plugin, as a library, a test target and a binary.
//!
//! # Running it
//!
//! Every (driver, case) pair is its own test named `DRIVER::CASE`, DRIVER as
//! `--storage-driver` spells it (`vfs::create_base`, `btrfs::quota`), volume drivers likewise
//! (`local::tmpfs_volume`):
//!
//! ```text
//! cargo nextest run -p strata-conformance -E 'test(/^vfs::/)'     # one driver
//! cargo nextest run -p strata-conformance -E 'test(=vfs::concurrent)'
//! cargo test -p strata-conformance --test conformance -- vfs::      # without nextest
//! cargo run -p strata-conformance -- --driver vfs                  # the table of results
//! cargo run -p strata-conformance -- --graphdriver-plugin /run/strata/plugins/x.sock
//! cargo run -p strata-conformance -- --volume-plugin /run/strata/plugins/y.sock
//! ```
//!
//! Plugins run the same cases through core's protocol clients ([`plugin`]); the test target
//! also serves vfs and the example loopvol driver in process (`plugin-vfs::`,
//! `plugin-loopvol::`), so the client and the server are proven with every case.
//!
//! The suite mounts, makes device nodes and chowns: run it as root. A case a driver cannot
//! support (by its `capabilities()`, e.g. `quota`) is listed as an ignored test and reported
//! NOT APPLICABLE with the reason; it is never counted as passed. A driver that fails to open
//! fails every case.
//!
//! # Adding a driver
//!
//! One line in [`builtin`] (see its docs). Each case gets a fresh environment
//! ([`env::Environment`]: a temporary directory, or a loop-mounted filesystem such as btrfs or
//! xfs with project quotas) and a fresh driver opened on it; `restart_recovery` opens a second
//! driver on the same root. Every mount a case makes is released after it, pass or fail, and
//! the environment unmounts whatever is left below it when dropped.
//!
//! # Writing a case
//!
//! A case is data ([`Case`]: a name, a [`Requirement`], an async fn taking a [`Ctx`]). Cases
//! compare full tree snapshots ([`tree::Snapshot`]: type, mode with setuid/sticky, owner, size,
//! content digest, link target, device number, xattrs, hard link sets) of a layer against a
//! plain reference directory that went through the same operations.

pub mod builtin;
pub mod case;
mod cases;
pub mod ctx;
pub mod env;
pub mod failure;
pub mod plugin;
pub mod rawtar;
pub mod report;
pub mod snapshots;
pub mod tree;
pub mod volume_suite;

pub use case::{probe_capabilities, run_layer_case, Case, Outcome, Requirement};
pub use cases::layer_cases;
pub use ctx::Ctx;
pub use env::{
    DriverFactory, Environment, LayerFactory, LoopFs, VolumeDriverFactory, VolumeFactory,
};
pub use failure::{CaseResult, Failure};
pub use volume_suite::{run_volume_case, volume_cases, VolumeCase, VolumeCtx, VolumeRequirement};
