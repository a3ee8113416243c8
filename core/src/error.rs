//! The one error type of strata-core. Each variant is something a caller can act on.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named thing does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Something with that name or id exists already.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The thing is in use (mounted, has children, referenced) and cannot be changed now.
    #[error("{0}")]
    Busy(String),
    /// The caller gave something malformed or unsafe (bad id, hostile archive entry, bad option).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The driver or the host cannot do this; the text says why.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// An I/O error on a named path.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A failure that is none of the above (a plugin's reply, a broken invariant on disk).
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(op: &'static str, path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Error::NotFound(what.into())
    }

    pub fn invalid(what: impl Into<String>) -> Self {
        Error::InvalidInput(what.into())
    }

    pub fn busy(what: impl Into<String>) -> Self {
        Error::Busy(what.into())
    }

    pub fn unsupported(what: impl Into<String>) -> Self {
        Error::Unsupported(what.into())
    }

    /// The OS error number behind this error, if there is one (EDQUOT, ENOSPC, ...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Attaches an operation and a path to `std::io::Result`s.
pub trait IoContext<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, e))
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn ctx(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::io(op, path, std::io::Error::from(e)))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Error::Other(format!("background task failed: {e}"))
    }
}
