//! Errors of the snapshotter and how containerd sees them: gRPC codes that containerd's proxy
//! turns back into its `errdefs` (its unpacker relies on AlreadyExists and NotFound).

use containerd_snapshots::tonic::{Code, Status};

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("snapshot {0:?} not found")]
    NotFound(String),
    #[error("snapshot {0:?} already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("driver: {0}")]
    Driver(#[from] strata_core::Error),
    /// Boxed: redb's error is large and every result here carries this type.
    #[error("metadata store: {0}")]
    Store(Box<redb::Error>),
    #[error("metadata record {key:?}: {source}")]
    Record {
        key: String,
        source: serde_json::Error,
    },
    #[error("blocking task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

pub type Result<T> = std::result::Result<T, SnapError>;

impl From<SnapError> for Status {
    fn from(e: SnapError) -> Status {
        let code = match &e {
            SnapError::NotFound(_) => Code::NotFound,
            SnapError::AlreadyExists(_) => Code::AlreadyExists,
            SnapError::FailedPrecondition(_) => Code::FailedPrecondition,
            SnapError::InvalidArgument(_) => Code::InvalidArgument,
            SnapError::Driver(d) => match d {
                strata_core::Error::NotFound(_) => Code::NotFound,
                strata_core::Error::AlreadyExists(_) => Code::AlreadyExists,
                strata_core::Error::Busy(_) => Code::FailedPrecondition,
                strata_core::Error::InvalidInput(_) => Code::InvalidArgument,
                strata_core::Error::Unsupported(_) => Code::Unimplemented,
                _ => Code::Internal,
            },
            _ => Code::Internal,
        };
        Status::new(code, e.to_string())
    }
}

/// Any redb error into ours: redb has one error type per step (open, begin, table, commit).
pub trait StoreResult<T> {
    fn store(self) -> Result<T>;
}

impl<T, E: Into<redb::Error>> StoreResult<T> for std::result::Result<T, E> {
    fn store(self) -> Result<T> {
        self.map_err(|e| SnapError::Store(Box::new(e.into())))
    }
}
