//! The one error type of every route: a stable code, an HTTP status and a message that names no
//! internals. Store and I/O failures are logged with their detail and answered as `internal`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keelson_api::ApiError;

/// A failed request, as answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// For humans.
    pub message: String,
}

impl Failure {
    /// A failure with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: no valid credentials.
    pub fn unauthenticated(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 403: authenticated, not allowed.
    pub fn forbidden(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 400: the request itself is wrong.
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 409: conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Failure {
        Failure::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 409 `lease_lost`: the agent's attempt no longer holds the job.
    pub fn lease_lost() -> Failure {
        Failure::new(
            StatusCode::CONFLICT,
            "lease_lost",
            "this attempt no longer holds the job's lease",
        )
    }

    /// 500, with the detail logged and not answered.
    pub fn internal(detail: impl std::fmt::Display) -> Failure {
        tracing_detail(&detail);
        Failure::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the detail",
        )
    }
}

fn tracing_detail(detail: &dyn std::fmt::Display) {
    tracing::error!(error = %detail, "internal error");
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.to_string(),
            status: self.status.as_u16(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<keelson_store::StoreError> for Failure {
    fn from(error: keelson_store::StoreError) -> Failure {
        use keelson_store::StoreError as E;
        match error {
            E::NotFound { .. } => Failure::not_found(error.to_string()),
            E::Conflict { .. } => Failure::conflict(error.to_string()),
            E::InvalidInput(message) => Failure::invalid(message),
            E::LeaseLost { .. } => Failure::lease_lost(),
            E::LogGap { .. } => Failure::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "log_gap",
                error.to_string(),
            ),
            other => Failure::internal(other),
        }
    }
}

/// What every handler returns.
pub type Answer<T> = Result<T, Failure>;
