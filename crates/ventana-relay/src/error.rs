//! The relay's HTTP error: the client protocol's error object, `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ventana_core::protocol::{ErrorCode, ProtocolError};
use ventana_store::StoreError;

pub(crate) struct HttpError(pub(crate) StatusCode, pub(crate) ProtocolError);

impl HttpError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self(
            StatusCode::BAD_REQUEST,
            ProtocolError::new(ErrorCode::BadRequest, message),
        )
    }

    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self(
            StatusCode::UNAUTHORIZED,
            ProtocolError::new(ErrorCode::Unauthorized, message),
        )
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self(
            StatusCode::NOT_FOUND,
            ProtocolError::new(ErrorCode::UnknownAccount, message),
        )
    }

    /// No such thing (a template) for the operator.
    pub(crate) fn missing(message: impl Into<String>) -> Self {
        Self(
            StatusCode::NOT_FOUND,
            ProtocolError::new(ErrorCode::NotFound, message),
        )
    }

    pub(crate) fn too_many(message: impl Into<String>) -> Self {
        Self(
            StatusCode::TOO_MANY_REQUESTS,
            ProtocolError::new(ErrorCode::RateLimited, message),
        )
    }

    /// The account has as many of something as it may keep: retrying will not help until
    /// one goes (403, not 429).
    pub(crate) fn limit_reached(message: impl Into<String>) -> Self {
        Self(
            StatusCode::FORBIDDEN,
            ProtocolError::new(ErrorCode::LimitReached, message),
        )
    }

    pub(crate) fn conflict(message: impl Into<String>) -> Self {
        Self(
            StatusCode::CONFLICT,
            ProtocolError::new(ErrorCode::Conflict, message),
        )
    }
}

impl From<StoreError> for HttpError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(what) if what.kind == ventana_store::ConflictKind::Limit => {
                Self::limit_reached(what.detail)
            }
            StoreError::Conflict(what) => Self::conflict(what.detail),
            StoreError::Backend(what) => {
                tracing::error!(%what, "relay store failed");
                Self(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ProtocolError::new(ErrorCode::Internal, "internal error"),
                )
            }
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

/// The client protocol's envelope of a refusal made before any route runs (the node's HTTP
/// limits): `rate_limited` for 429, `internal` for 5xx, `bad_request` for the rest.
pub fn refusal_body(status: StatusCode, message: impl Into<String>) -> serde_json::Value {
    let code = if status == StatusCode::TOO_MANY_REQUESTS {
        ErrorCode::RateLimited
    } else if status.is_server_error() {
        ErrorCode::Internal
    } else {
        ErrorCode::BadRequest
    };
    serde_json::json!({ "error": ProtocolError::new(code, message) })
}

/// The bearer token of a request, if any.
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}
