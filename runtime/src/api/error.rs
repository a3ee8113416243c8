//! API errors: Docker's `{"message": ...}` body with the status code Docker uses.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<strata_core::Error> for ApiError {
    fn from(e: strata_core::Error) -> Self {
        use strata_core::Error as E;
        let status = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::AlreadyExists(_) | E::Busy(_) => StatusCode::CONFLICT,
            E::InvalidInput(_) | E::Unsupported(_) => StatusCode::BAD_REQUEST,
            E::Io { .. } | E::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        // Docker's messages stand alone ("No such container: x", "Invalid container name
        // ..."); the core's kind prefixes and suffixes are for logs, not for the CLI's users.
        let message = match e {
            E::NotFound(m) if m.starts_with("No such") => m,
            E::InvalidInput(m) => m,
            other => other.to_string(),
        };
        Self::new(status, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, "{}", self.message);
        } else {
            tracing::debug!(status = %self.status, "{}", self.message);
        }
        (
            self.status,
            Json(strata_api_types::system::ErrorResponse {
                message: self.message,
            }),
        )
            .into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
