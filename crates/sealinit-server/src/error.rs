//! The service's one error type and its one mapping to HTTP statuses:
//! `{"error":{"code","message"}}`. Messages come from the store's errors,
//! which name repositories, secrets and rules, never values.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sealinit_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// For 429: seconds until a retry may succeed.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is needed: Authorization: Bearer sit_...",
        )
    }

    pub fn forbidden(what: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", what)
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    pub fn unprocessable(what: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", what)
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is over the limit (a little over 1 MiB of values)",
        )
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server's log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        use StoreError as E;
        let message = e.to_string();
        let (status, code) = match &e {
            E::InvalidRepo(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::Payload(_) | E::ProductionCredential { .. } | E::SealedValueInvalid { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "unprocessable")
            }
            E::VersionConflict { .. } => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            E::StaleKeyId { .. } => (StatusCode::CONFLICT, "conflict"),
            E::NoSuchSecret { .. }
            | E::NoSuchRepo { .. }
            | E::NoSuchVersion { .. }
            | E::EmptyRepo { .. }
            | E::NoSuchToken { .. } => (StatusCode::NOT_FOUND, "not_found"),
            E::Database { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => {
                tracing::error!("store: {message}");
                return Self::internal();
            }
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
