//! The crate's errors: [`ApiError`], one type for every handler, which maps
//! store and domain errors to HTTP statuses and stable codes and hides
//! internals; and [`Error`], why the server, file sync or MCP could not
//! start or refused what it was given.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use braid_core::ErrorKind;

use braid_app::wire::{ErrorBody, ErrorView};

/// Why something outside a request failed: a config value, a token, a
/// room, a file watch, the MCP transport.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config value broke a rule, at `file:line`.
    #[error("{file}:{line}: {message}")]
    Config {
        file: String,
        line: usize,
        message: String,
    },
    /// Input broke a rule (a token too short, a room that does not exist).
    #[error("{0}")]
    Invalid(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("watching {}", .dir.display())]
    Watch {
        dir: std::path::PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("serving MCP on stdio")]
    Mcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Store(#[from] braid_store::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid",
            message: message.into(),
        }
    }

    pub fn internal() -> Self {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
        }
    }
}

impl From<braid_store::Error> for ApiError {
    fn from(e: braid_store::Error) -> Self {
        if e.is_internal() {
            // The detail goes to the server's log, never to the client.
            tracing::error!(error = %braid_core::error::chain(&e), "braid-server: internal error");
            return ApiError::internal();
        }
        let (status, code) = match e.kind() {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
        };
        ApiError {
            status,
            code,
            message: e.to_string(),
        }
    }
}

impl From<braid_core::Error> for ApiError {
    fn from(e: braid_core::Error) -> Self {
        braid_store::Error::Domain(e).into()
    }
}

impl From<braid_app::review::Error> for ApiError {
    fn from(e: braid_app::review::Error) -> Self {
        use braid_app::review::Error as R;
        match e {
            R::Store(e) => e.into(),
            R::Git(g) => {
                // git's message names paths of this machine: logged, not sent.
                tracing::error!(error = %braid_core::error::chain(&g), "braid-server: git failed");
                ApiError::internal()
            }
            other => {
                let (status, code) = match other.kind() {
                    Some(ErrorKind::NotFound) => (StatusCode::NOT_FOUND, "not_found"),
                    Some(ErrorKind::Conflict) => (StatusCode::CONFLICT, "conflict"),
                    _ => (StatusCode::BAD_REQUEST, "invalid"),
                };
                ApiError {
                    status,
                    code,
                    message: other.to_string(),
                }
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorView {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}
