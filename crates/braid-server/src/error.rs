//! One error type for every handler: maps store and domain errors to HTTP
//! statuses and stable codes, and hides internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use braid_core::ErrorKind;

use braid_app::wire::{ErrorBody, ErrorView};

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
            eprintln!("braid-server: internal error: {e}");
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
