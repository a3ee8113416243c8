//! Container logs in Docker's json-file format: the writer the output pump feeds, and the
//! reader `logs` uses (tail, since/until, follow, timestamps), with Docker's rotation
//! (`max-size`, `max-file`) and a default bound (see `options`).

pub mod options;
pub mod reader;
pub mod writer;

pub use options::{LogConfig, LogOptions};
pub use reader::{read_logs, LogEntry, LogReadOptions};
pub use writer::JsonLogWriter;

/// Docker's name for a container's log file in its directory.
pub fn log_file_name(container_id: &str) -> String {
    format!("{container_id}-json.log")
}
