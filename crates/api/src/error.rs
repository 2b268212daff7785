//! One place that turns kinds of failure into Docker's status codes and `{"message": …}` bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// What kind of failure an engine error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidArgument,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    NotImplemented,
    Unavailable,
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: Kind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: Kind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into() }
    }

    /// For endpoints berth does not serve yet: a clear answer instead of a wrong one.
    pub fn not_implemented(what: &str) -> ApiError {
        ApiError::new(Kind::NotImplemented, format!("{what} is not implemented yet in berth"))
    }
}

pub fn status(kind: Kind) -> StatusCode {
    match kind {
        Kind::InvalidArgument => StatusCode::BAD_REQUEST,
        Kind::Unauthorized => StatusCode::UNAUTHORIZED,
        Kind::Forbidden => StatusCode::FORBIDDEN,
        Kind::NotFound => StatusCode::NOT_FOUND,
        Kind::Conflict => StatusCode::CONFLICT,
        Kind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        Kind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (status(self.kind), axum::Json(berth_models::messages::ErrorResponse { message: self.message })).into_response()
    }
}
