//! Errors, worded as Docker's daemon words them (the CLI prints them as they are).

use strata_core::store::Digest;

pub type Result<T> = std::result::Result<T, DistError>;

#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error("invalid reference format: {0}")]
    InvalidReference(String),
    /// An error the registry answered with (`{"errors":[{"code","message"}]}`), or only a
    /// status. `code` is the registry's code (`MANIFEST_UNKNOWN`), empty if it sent none.
    #[error("{}", registry_message(code, message))]
    Registry {
        status: u16,
        code: String,
        message: String,
    },
    /// Authentication failed or was needed: `Head "URL": no basic auth credentials`.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{what} {expected} failed verification: its content has digest {got}")]
    DigestMismatch {
        what: &'static str,
        expected: Digest,
        got: Digest,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{method} {url:?}: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Core(#[from] strata_core::Error),
}

impl DistError {
    /// The registry's error code, if it sent one.
    pub fn registry_code(&self) -> Option<&str> {
        match self {
            DistError::Registry { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }

    pub fn is_unauthorized(&self) -> bool {
        matches!(self, DistError::Unauthorized(_))
            || matches!(self, DistError::Registry { status: 401, .. })
    }
}

/// `manifest unknown: manifest unknown`: the code in lowercase words, then the message, as
/// Docker's errcode package prints it.
fn registry_message(code: &str, message: &str) -> String {
    if code.is_empty() {
        return message.to_string();
    }
    let words = code.to_ascii_lowercase().replace('_', " ");
    if message.is_empty() {
        words
    } else {
        format!("{words}: {message}")
    }
}

/// The body registries answer errors with.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub errors: Vec<ErrorEntry>,
}

#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct ErrorEntry {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}

/// An error from a non-success answer: the first registry error in the body, or the status.
pub(crate) fn from_response(status: reqwest::StatusCode, body: &[u8]) -> DistError {
    let parsed: ErrorBody = serde_json::from_slice(body).unwrap_or_default();
    match parsed.errors.into_iter().next() {
        Some(e) => DistError::Registry {
            status: status.as_u16(),
            code: e.code,
            message: e.message,
        },
        None => DistError::Registry {
            status: status.as_u16(),
            code: String::new(),
            message: format!(
                "unexpected status from the registry: {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_read_as_dockers() {
        let body =
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#;
        let e = from_response(reqwest::StatusCode::NOT_FOUND, body);
        assert_eq!(e.to_string(), "manifest unknown: manifest unknown");
        assert_eq!(e.registry_code(), Some("MANIFEST_UNKNOWN"));
        let e = from_response(reqwest::StatusCode::BAD_GATEWAY, b"<html>");
        assert_eq!(
            e.to_string(),
            "unexpected status from the registry: 502 Bad Gateway"
        );
    }
}
