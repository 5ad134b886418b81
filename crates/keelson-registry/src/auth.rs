//! Token authentication: HTTP Basic (`keelson:<token>`, what `docker login` sends) or
//! `Bearer <token>`, compared in constant time. Writes always need the token; reads need it
//! unless `anonymous_read` is set; `GET /v2/` needs it so Docker learns the Basic challenge.

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use sha2::Digest as _;

use crate::AppState;
use crate::error::ApiError;

/// The user name `docker login -u` must use.
pub const BASIC_USER: &str = "keelson";

/// Equality whose timing does not depend on where the inputs differ (or on their lengths:
/// both sides are hashed to fixed-size values first).
pub(crate) fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    let left = sha2::Sha256::digest(left);
    let right = sha2::Sha256::digest(right);
    left.iter()
        .zip(right.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

enum Credentials {
    None,
    Valid,
    Invalid,
}

fn credentials(request: &Request, token: &str) -> Credentials {
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Invalid;
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let presented = if scheme.eq_ignore_ascii_case("basic") {
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(rest.trim()) else {
            return Credentials::Invalid;
        };
        let Ok(decoded) = String::from_utf8(decoded) else {
            return Credentials::Invalid;
        };
        let Some((user, password)) = decoded.split_once(':') else {
            return Credentials::Invalid;
        };
        if user != BASIC_USER {
            return Credentials::Invalid;
        }
        password.to_owned()
    } else if scheme.eq_ignore_ascii_case("bearer") {
        rest.trim().to_owned()
    } else {
        return Credentials::Invalid;
    };
    if constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Credentials::Valid
    } else {
        Credentials::Invalid
    }
}

/// Middleware enforcing the access rules above.
pub(crate) async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let is_read = matches!(*request.method(), Method::GET | Method::HEAD);
    let is_base = matches!(request.uri().path(), "/v2/" | "/v2");
    let allowed = match credentials(&request, &state.config.write_token) {
        Credentials::Valid => true,
        Credentials::Invalid => false,
        Credentials::None => is_read && !is_base && state.config.anonymous_read,
    };
    if allowed {
        return next.run(request).await;
    }
    let mut response = ApiError::unauthorized().into_response();
    if request.uri().path().starts_with("/v2") {
        response.headers_mut().insert(
            "docker-distribution-api-version",
            axum::http::HeaderValue::from_static("registry/2.0"),
        );
    }
    response
}
