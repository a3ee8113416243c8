//! Building trees and comparing them exactly.

pub mod ops;
pub mod snapshot;

pub use snapshot::{snapshot, Entry, Kind, Snapshot};
