//! Who is calling, and what they may do.
//!
//! Invariants:
//! - Secrets are stored only as hashes: API, agent and session tokens as SHA-256 (they are 256-bit
//!   random values, so a fast hash is enough), passwords as argon2id.
//! - A caller's role on a project is the user's own (server admins are `admin` everywhere),
//!   capped by the token's `max_role`, and nothing outside the token's project.
//! - A project the caller has no role on answers `404`, as if it did not exist; a role too low
//!   answers `403`.
//! - Cookie-authenticated requests that change state must carry the session's CSRF token
//!   (`X-CSRF-Token` header or `_csrf` form field); bearer-token requests need none.
//! - Agent registration tokens and user tokens are separate tables: neither opens the other's
//!   routes.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, header};
use base64::Engine as _;
use hmac::{KeyInit, Mac};
use keelson_api::Role;
use keelson_store::{ApiToken, Project, User};
use sha2::{Digest, Sha256};

use crate::error::{Answer, Failure};
use crate::state::AppState;

/// Name of the browser session cookie.
pub const SESSION_COOKIE: &str = "keelson_session";
/// Header carrying the CSRF token on cookie-authenticated API calls.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// A new random token: `prefix` + 43 URL-safe base64 characters (256 bits).
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source works");
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An argon2id hash of `password` in PHC string form.
pub fn hash_password(password: &str) -> Result<String, Failure> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(Failure::internal)
}

/// Whether `password` matches the stored argon2id `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    use argon2::password_hash::phc::PasswordHash;
    let Ok(parsed) = PasswordHash::new(hash) else {
        return false;
    };
    argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// The CSRF token of a session: an HMAC of the session token under the server's key, so it
/// needs no storage and cannot be guessed without the session cookie.
pub fn csrf_token(key: &[u8], session_token: &str) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"csrf:");
    mac.update(session_token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Failure> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Failure::unauthenticated("malformed Authorization header"))?;
    let token = value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Failure::unauthenticated("Authorization must be `Bearer <token>`"))?;
    Ok(Some(token.trim()))
}

/// How the caller authenticated.
#[derive(Clone, Debug)]
pub enum Credential {
    /// An API token (its stored description).
    Token(ApiToken),
    /// A browser session; the plain CSRF token expected on state-changing requests.
    Session {
        /// The CSRF token for this session.
        csrf: String,
    },
}

/// An authenticated user.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user: User,
    /// How they authenticated.
    pub credential: Credential,
}

impl Caller {
    /// The token's restrictions: (project id, highest role).
    fn limits(&self) -> (Option<keelson_store::ProjectId>, Option<Role>) {
        match &self.credential {
            Credential::Token(token) => (
                token.project_id,
                token.max_role.as_deref().and_then(parse_role),
            ),
            Credential::Session { .. } => (None, None),
        }
    }

    /// Whether the caller may administer the server (users, agents tokens, projects).
    pub fn is_server_admin(&self) -> bool {
        let (project, max_role) = self.limits();
        self.user.server_admin && project.is_none() && max_role.is_none_or(|r| r == Role::Admin)
    }

    /// The caller's effective role on `project`, if any.
    pub async fn role_on(&self, state: &AppState, project: &Project) -> Answer<Option<Role>> {
        let (token_project, max_role) = self.limits();
        if token_project.is_some_and(|id| id != project.id) {
            return Ok(None);
        }
        let own = if self.user.server_admin {
            Some(Role::Admin)
        } else {
            state
                .store()
                .member_role(project.id, self.user.id)
                .await?
                .as_deref()
                .and_then(parse_role)
        };
        Ok(match (own, max_role) {
            (Some(own), Some(cap)) => Some(own.min(cap)),
            (own, None) => own,
            (None, Some(_)) => None,
        })
    }

    /// Fails unless the caller has at least `min` on `project` (404 without any role).
    pub async fn require(&self, state: &AppState, project: &Project, min: Role) -> Answer<Role> {
        match self.role_on(state, project).await? {
            None => Err(Failure::not_found(format!(
                "no project named `{}`",
                project.name
            ))),
            Some(role) if role < min => Err(Failure::forbidden(format!(
                "this needs the {} role on `{}`; you have {}",
                min.as_str(),
                project.name,
                role.as_str()
            ))),
            Some(role) => Ok(role),
        }
    }

    /// Fails unless the caller administers the server.
    pub fn require_server_admin(&self) -> Answer<()> {
        if self.is_server_admin() {
            Ok(())
        } else {
            Err(Failure::forbidden("this needs a server administrator"))
        }
    }

    /// For form posts from the web UI: the submitted CSRF token must match the session's.
    pub fn check_csrf_form(&self, submitted: &str) -> Answer<()> {
        match &self.credential {
            Credential::Session { csrf }
                if constant_time_eq(csrf.as_bytes(), submitted.as_bytes()) =>
            {
                Ok(())
            }
            Credential::Session { .. } => Err(Failure::forbidden("missing or wrong CSRF token")),
            Credential::Token(_) => Ok(()),
        }
    }

    /// The session's CSRF token (for rendering forms), if this is a browser session.
    pub fn csrf(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf } => Some(csrf),
            Credential::Token(_) => None,
        }
    }
}

/// Parses a stored role name.
pub fn parse_role(name: &str) -> Option<Role> {
    Role::ALL.into_iter().find(|role| role.as_str() == name)
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Resolves the caller of a request (bearer token first, then the session cookie).
pub async fn authenticate(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
) -> Answer<Caller> {
    let now = state.now();
    if let Some(token) = bearer(headers)? {
        let Some((stored, user)) = state.store().api_token_by_hash(&token_hash(token)).await?
        else {
            state.metrics().auth_failure("unknown_token");
            return Err(Failure::unauthenticated("unknown or revoked token"));
        };
        if stored.expires_at.is_some_and(|at| at <= now) {
            state.metrics().auth_failure("expired_token");
            return Err(Failure::unauthenticated("the token has expired"));
        }
        // Last use is kept to the minute: a write per request would serialise reads on SQLite.
        if stored.last_used_at.is_none_or(|at| now - at > 60_000) {
            state.store().touch_api_token(stored.id, now).await?;
        }
        return Ok(Caller {
            user,
            credential: Credential::Token(stored),
        });
    }
    if let Some(session) = cookie(headers, SESSION_COOKIE) {
        let Some((stored, user)) = state.store().session_by_hash(&token_hash(session)).await?
        else {
            return Err(Failure::unauthenticated(
                "the session has ended; log in again",
            ));
        };
        if stored.expires_at <= now {
            return Err(Failure::unauthenticated(
                "the session has expired; log in again",
            ));
        }
        let csrf = csrf_token(state.csrf_key(), session);
        // The API accepts cookie sessions only with the CSRF header; forms check `_csrf`.
        if !is_safe(method)
            && let Some(sent) = headers.get(CSRF_HEADER)
            && !constant_time_eq(sent.as_bytes(), csrf.as_bytes())
        {
            return Err(Failure::forbidden("missing or wrong CSRF token"));
        }
        return Ok(Caller {
            user,
            credential: Credential::Session { csrf },
        });
    }
    Err(Failure::unauthenticated(
        "this needs a token (`Authorization: Bearer …`) or a login session",
    ))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Answer<Caller> {
        let caller = authenticate(state, &parts.method, &parts.headers).await?;
        // API routes (JSON) require the CSRF header for cookie sessions on unsafe methods; the
        // web UI's form routes check the `_csrf` field themselves.
        if matches!(caller.credential, Credential::Session { .. })
            && !is_safe(&parts.method)
            && parts.uri.path().starts_with(keelson_api::API_PREFIX)
            && parts.headers.get(CSRF_HEADER).is_none()
        {
            return Err(Failure::forbidden("missing or wrong CSRF token"));
        }
        Ok(caller)
    }
}

/// An authenticated agent (by its registration token).
#[derive(Clone, Debug)]
pub struct AgentCaller {
    /// The registration token's id.
    pub token_id: i64,
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Answer<AgentCaller> {
        let Some(token) = bearer(&parts.headers)? else {
            return Err(Failure::unauthenticated(
                "agents authenticate with `Authorization: Bearer <registration token>`",
            ));
        };
        match state
            .store()
            .agent_token_by_hash(&token_hash(token))
            .await?
        {
            Some(stored) if !stored.revoked => Ok(AgentCaller {
                token_id: stored.id.0,
            }),
            _ => {
                state.metrics().auth_failure("unknown_agent_token");
                Err(Failure::unauthenticated("unknown or revoked agent token"))
            }
        }
    }
}
