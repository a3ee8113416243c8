//! What a failed check says: what was checked, on which path, expected against got.

use std::fmt;

/// A failed conformance check. The message is meant for a driver author reading CI output:
/// it names the step, the path and what differed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
}

impl Failure {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Prefixes the message with the step that was running.
    pub fn during(self, step: &str) -> Self {
        Self::new(format!("{step}: {}", self.message))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<strata_core::Error> for Failure {
    fn from(e: strata_core::Error) -> Self {
        Failure::new(format!("unexpected driver error: {e} ({e:?})"))
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::new(format!("unexpected I/O error: {e}"))
    }
}

impl From<nix::Error> for Failure {
    fn from(e: nix::Error) -> Self {
        Failure::new(format!("unexpected system call error: {e}"))
    }
}

impl From<tokio::task::JoinError> for Failure {
    fn from(e: tokio::task::JoinError) -> Self {
        Failure::new(format!("a task of the case failed: {e}"))
    }
}

pub type CaseResult<T = ()> = Result<T, Failure>;

/// Adds the step that was running to any error.
pub trait Step<T> {
    fn step(self, what: &str) -> CaseResult<T>;
}

impl<T, E: Into<Failure>> Step<T> for Result<T, E> {
    fn step(self, what: &str) -> CaseResult<T> {
        self.map_err(|e| e.into().during(what))
    }
}

/// Fails with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::new(format!($($fmt)+)));
        }
    };
}

/// Fails unless both values are equal, showing both.
#[macro_export]
macro_rules! ensure_eq {
    ($got:expr, $expected:expr, $($fmt:tt)+) => {{
        let (got, expected) = (&$got, &$expected);
        if got != expected {
            return Err($crate::Failure::new(format!(
                "{}: expected {:?}, got {:?}",
                format!($($fmt)+),
                expected,
                got
            )));
        }
    }};
}
