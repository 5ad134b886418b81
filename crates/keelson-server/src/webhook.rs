//! Push webhooks from GitHub, GitLab and Gitea/Forgejo: verifying a delivery and turning it into
//! a [`WebhookEvent`].
//!
//! Verification ([`verify`]) must succeed before [`parse_push`] is trusted:
//! - GitHub signs the raw body with HMAC-SHA256 and sends `X-Hub-Signature-256: sha256=<hex>`.
//! - Gitea and Forgejo send the same HMAC as bare hex in `X-Gitea-Signature` /
//!   `X-Forgejo-Signature` (Gogs-compatible `X-Gogs-Signature` too), and recent versions also send
//!   `X-Hub-Signature-256`. Every one of these headers present must verify, and at least one must
//!   be present.
//! - GitLab sends the configured secret itself in `X-Gitlab-Token`.
//!
//! Invariants: every comparison against the secret is constant-time (HMAC `verify_slice`, and a
//! digest comparison for GitLab's token); an empty secret verifies nothing; no error message or
//! `Debug` output contains the secret or the signature received. Body size is limited by the
//! caller (the HTTP layer).

use std::fmt;
use std::str::FromStr;

use axum::http::HeaderMap;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// A git forge that sends push webhooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (and GitHub Enterprise Server).
    GitHub,
    /// GitLab.
    GitLab,
    /// Gitea, Forgejo and Gogs-compatible servers.
    Gitea,
}

impl Provider {
    /// All providers, in a stable order.
    pub const ALL: [Provider; 3] = [Provider::GitHub, Provider::GitLab, Provider::Gitea];

    /// The provider's name in URLs and configuration: `github`, `gitlab` or `gitea`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Provider {
    type Err = WebhookError;

    /// Parses `github`, `gitlab`, `gitea` (case-insensitive); `forgejo` and `gogs` are accepted
    /// as Gitea.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "github" => Ok(Provider::GitHub),
            "gitlab" => Ok(Provider::GitLab),
            "gitea" | "forgejo" | "gogs" => Ok(Provider::Gitea),
            _ => Err(WebhookError::UnknownProvider(s.chars().take(64).collect())),
        }
    }
}

/// Why a webhook delivery was rejected. Messages never contain the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// The provider name is not one of `github`, `gitlab`, `gitea`.
    #[error("unknown webhook provider `{0}`; expected `github`, `gitlab` or `gitea`")]
    UnknownProvider(String),
    /// The configured secret is empty, so nothing can be verified.
    #[error("the webhook secret configured for this project is empty; refusing the delivery")]
    EmptySecret,
    /// No signature or token header was sent.
    #[error(
        "missing {expected} header: the delivery is unsigned (is a secret configured at the {provider} side?)"
    )]
    MissingSignature {
        /// The provider.
        provider: Provider,
        /// The header(s) that would have been accepted.
        expected: &'static str,
    },
    /// A signature header is not valid (not ASCII, wrong prefix, not hex, wrong length).
    #[error("malformed {header} header: {reason}")]
    MalformedSignature {
        /// The header.
        header: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A signature header does not match the HMAC of the body under the secret.
    #[error("{header} does not match the body: wrong secret, or the body was altered")]
    SignatureMismatch {
        /// The header that failed.
        header: &'static str,
    },
    /// GitLab's token header does not equal the secret.
    #[error("X-Gitlab-Token does not match the configured secret")]
    TokenMismatch,
    /// The header naming the event type is missing.
    #[error("missing {expected} header naming the event type")]
    MissingEventHeader {
        /// The header(s) that would have been accepted.
        expected: &'static str,
    },
    /// A header is not valid UTF-8/ASCII.
    #[error("header {header} is not valid text")]
    InvalidHeader {
        /// The header.
        header: &'static str,
    },
    /// The body is not valid JSON.
    #[error("webhook body is not valid JSON at line {line}, column {column}: {message}")]
    InvalidJson {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// serde_json's explanation.
        message: String,
    },
    /// A field the push event needs is missing or has the wrong type.
    #[error("push payload has no {field} (or it is not a {expected})")]
    MissingField {
        /// JSON path of the field, e.g. `ref`.
        field: &'static str,
        /// The JSON type expected.
        expected: &'static str,
    },
    /// A field has an invalid value.
    #[error("push payload field {field} is invalid: {reason}")]
    InvalidField {
        /// JSON path of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// What a verified delivery asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WebhookEvent {
    /// Commits were pushed to (or a ref was created or deleted at) a branch or tag.
    Push(PushEvent),
    /// The forge is checking the hook works (GitHub's `ping`).
    Ping,
    /// Any other event type; it starts nothing.
    Ignored {
        /// The event type as the forge named it.
        event: String,
    },
}

/// A push to one ref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushEvent {
    /// The full ref pushed, e.g. `refs/heads/main` or `refs/tags/v1.0`.
    pub git_ref: String,
    /// The commit the ref pointed at before (all zeros when the ref was created).
    pub before: String,
    /// The commit the ref points at now (all zeros when the ref was deleted).
    pub after: String,
    /// The ref was deleted (`after` is all zeros).
    pub deleted: bool,
    /// Clone and web URLs of the repository found in the payload, in payload order, without
    /// duplicates; match a project against them with [`PushEvent::matches_repository`].
    pub repository_urls: Vec<String>,
    /// Who pushed (a user name), when the payload says.
    pub pusher: Option<String>,
}

impl PushEvent {
    /// The branch name when the ref is under `refs/heads/`.
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    /// The tag name when the ref is under `refs/tags/`.
    pub fn tag(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/tags/")
    }

    /// Whether `repository` (a project's configured URL) names the same repository as one of
    /// [`PushEvent::repository_urls`], comparing [`normalize_repository_url`] forms.
    pub fn matches_repository(&self, repository: &str) -> bool {
        let wanted = normalize_repository_url(repository);
        !wanted.is_empty()
            && self
                .repository_urls
                .iter()
                .any(|url| normalize_repository_url(url) == wanted)
    }
}

/// Reduces a repository URL to `host/path` for comparison: drops the scheme, credentials, port,
/// a trailing `/` and `.git`; turns scp-like `git@host:owner/repo` into `host/owner/repo`; and
/// lowercases it (forges treat owner and repository names case-insensitively).
pub fn normalize_repository_url(url: &str) -> String {
    let url = url.trim();
    let (rest, had_scheme) = match url.find("://") {
        Some(index) => (&url[index + 3..], true),
        None => (url, false),
    };
    let (authority, path) = match rest.find('/') {
        Some(index) => (&rest[..index], &rest[index..]),
        None => (rest, ""),
    };
    let (host, path) = if had_scheme {
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let host = host.split(':').next().unwrap_or(host);
        (host.to_owned(), path.to_owned())
    } else if let Some((user_host, scp_path)) = rest.split_once(':') {
        // scp-like syntax: [user@]host:path
        let host = user_host.rsplit('@').next().unwrap_or(user_host);
        (host.to_owned(), format!("/{scp_path}"))
    } else {
        (String::new(), rest.to_owned())
    };
    let mut path = path.trim_end_matches('/').to_owned();
    if let Some(stripped) = path.strip_suffix(".git") {
        path = stripped.to_owned();
    }
    let path = path.trim_start_matches('/');
    let joined = if host.is_empty() {
        path.to_owned()
    } else {
        format!("{host}/{path}")
    };
    joined.to_ascii_lowercase()
}

const GITHUB_SIGNATURE: &str = "X-Hub-Signature-256";
const GITEA_SIGNATURE: &str = "X-Gitea-Signature";
const FORGEJO_SIGNATURE: &str = "X-Forgejo-Signature";
const GOGS_SIGNATURE: &str = "X-Gogs-Signature";
const GITLAB_TOKEN: &str = "X-Gitlab-Token";

/// Checks that a delivery comes from someone who knows `secret`. See the module documentation for
/// the headers each provider uses.
pub fn verify(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    if secret.is_empty() {
        return Err(WebhookError::EmptySecret);
    }
    match provider {
        Provider::GitHub => {
            let value =
                header_text(headers, GITHUB_SIGNATURE)?.ok_or(WebhookError::MissingSignature {
                    provider,
                    expected: GITHUB_SIGNATURE,
                })?;
            verify_hmac(GITHUB_SIGNATURE, value, Some("sha256="), body, secret)
        }
        Provider::Gitea => {
            let candidates: [(&'static str, Option<&'static str>); 4] = [
                (GITEA_SIGNATURE, None),
                (FORGEJO_SIGNATURE, None),
                (GOGS_SIGNATURE, None),
                (GITHUB_SIGNATURE, Some("sha256=")),
            ];
            let mut verified_any = false;
            for (header, prefix) in candidates {
                if let Some(value) = header_text(headers, header)? {
                    verify_hmac(header, value, prefix, body, secret)?;
                    verified_any = true;
                }
            }
            if verified_any {
                Ok(())
            } else {
                Err(WebhookError::MissingSignature {
                    provider,
                    expected: "X-Gitea-Signature, X-Forgejo-Signature or X-Hub-Signature-256",
                })
            }
        }
        Provider::GitLab => {
            let token =
                header_text(headers, GITLAB_TOKEN)?.ok_or(WebhookError::MissingSignature {
                    provider,
                    expected: GITLAB_TOKEN,
                })?;
            if constant_time_equal(token.as_bytes(), secret) {
                Ok(())
            } else {
                Err(WebhookError::TokenMismatch)
            }
        }
    }
}

fn verify_hmac(
    header: &'static str,
    value: &str,
    prefix: Option<&'static str>,
    body: &[u8],
    secret: &[u8],
) -> Result<(), WebhookError> {
    let value = value.trim();
    let hex_digits = match prefix {
        Some(prefix) => value
            .strip_prefix(prefix)
            .ok_or(WebhookError::MalformedSignature {
                header,
                reason: "expected `sha256=` followed by 64 hex digits",
            })?,
        None => value,
    };
    if hex_digits.len() != 64 {
        return Err(WebhookError::MalformedSignature {
            header,
            reason: "expected 64 hex digits (an HMAC-SHA256)",
        });
    }
    let expected = hex::decode(hex_digits).map_err(|_| WebhookError::MalformedSignature {
        header,
        reason: "not hexadecimal",
    })?;
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::SignatureMismatch { header })
}

/// Compares two byte strings in time independent of where they differ: both are hashed with
/// SHA-256 first, so their lengths leak nothing either, and the digests are compared with an
/// accumulating XOR.
fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    let left = Sha256::digest(left);
    let right = Sha256::digest(right);
    let difference = left
        .iter()
        .zip(right.iter())
        .fold(0u8, |accumulator, (a, b)| accumulator | (a ^ b));
    std::hint::black_box(difference) == 0
}

fn header_text<'a>(
    headers: &'a HeaderMap,
    header: &'static str,
) -> Result<Option<&'a str>, WebhookError> {
    match headers.get(header) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| WebhookError::InvalidHeader { header }),
    }
}

/// The event type header of a delivery, for logging and metrics, without parsing the body.
pub fn event_type(provider: Provider, headers: &HeaderMap) -> Result<String, WebhookError> {
    let (names, expected): (&[&'static str], &'static str) = match provider {
        Provider::GitHub => (&["X-GitHub-Event"], "X-GitHub-Event"),
        Provider::GitLab => (&["X-Gitlab-Event"], "X-Gitlab-Event"),
        Provider::Gitea => (
            &[
                "X-Gitea-Event",
                "X-Forgejo-Event",
                "X-Gogs-Event",
                "X-GitHub-Event",
            ],
            "X-Gitea-Event or X-Forgejo-Event",
        ),
    };
    for name in names {
        if let Some(value) = header_text(headers, name)? {
            return Ok(value.trim().to_owned());
        }
    }
    Err(WebhookError::MissingEventHeader { expected })
}

/// Turns a (verified) delivery into an event. Push events are validated: the ref must be a full
/// `refs/...` name and `before`/`after` 40 or 64 hex digits.
pub fn parse_push(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    let event = event_type(provider, headers)?;
    let is_push = match provider {
        Provider::GitHub => {
            if event == "ping" {
                return Ok(WebhookEvent::Ping);
            }
            event == "push"
        }
        Provider::GitLab => event == "Push Hook" || event == "Tag Push Hook",
        Provider::Gitea => event == "push",
    };
    if !is_push {
        return Ok(WebhookEvent::Ignored { event });
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|error| WebhookError::InvalidJson {
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        })?;
    if !payload.is_object() {
        return Err(WebhookError::InvalidField {
            field: "(body)",
            reason: "expected a JSON object".to_owned(),
        });
    }

    let git_ref = required_string(&payload, "ref", "ref")?;
    if !git_ref.starts_with("refs/") || git_ref.len() <= "refs/".len() {
        return Err(WebhookError::InvalidField {
            field: "ref",
            reason: "expected a full ref such as `refs/heads/main`".to_owned(),
        });
    }
    if git_ref.chars().any(|c| c.is_control() || c == ' ') {
        return Err(WebhookError::InvalidField {
            field: "ref",
            reason: "contains spaces or control characters".to_owned(),
        });
    }
    let before = required_string(&payload, "before", "before")?.to_ascii_lowercase();
    let after = required_string(&payload, "after", "after")?.to_ascii_lowercase();
    check_object_id("before", &before)?;
    check_object_id("after", &after)?;
    let all_zeros = after.bytes().all(|b| b == b'0');
    let flagged_deleted = payload
        .get("deleted")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let deleted = all_zeros || flagged_deleted;

    let (url_fields, pusher_paths): (&[(&str, &str)], &[&[&str]]) = match provider {
        Provider::GitHub => (
            &[
                ("repository", "clone_url"),
                ("repository", "ssh_url"),
                ("repository", "git_url"),
                ("repository", "html_url"),
                ("repository", "url"),
                ("repository", "svn_url"),
            ],
            &[&["pusher", "name"], &["sender", "login"]],
        ),
        Provider::GitLab => (
            &[
                ("project", "git_http_url"),
                ("project", "git_ssh_url"),
                ("project", "web_url"),
                ("project", "http_url"),
                ("project", "ssh_url"),
                ("project", "url"),
                ("repository", "git_http_url"),
                ("repository", "git_ssh_url"),
                ("repository", "homepage"),
                ("repository", "url"),
            ],
            &[&["user_username"], &["user_name"]],
        ),
        Provider::Gitea => (
            &[
                ("repository", "clone_url"),
                ("repository", "ssh_url"),
                ("repository", "html_url"),
            ],
            &[
                &["pusher", "login"],
                &["pusher", "username"],
                &["sender", "login"],
            ],
        ),
    };
    let mut repository_urls: Vec<String> = Vec::new();
    for (object, field) in url_fields {
        if let Some(url) = payload
            .get(object)
            .and_then(|value| value.get(field))
            .and_then(Value::as_str)
        {
            let url = url.trim();
            if !url.is_empty() && !repository_urls.iter().any(|known| known == url) {
                repository_urls.push(url.to_owned());
            }
        }
    }
    if repository_urls.is_empty() {
        return Err(WebhookError::MissingField {
            field: "repository URL",
            expected: "string",
        });
    }
    let pusher = pusher_paths.iter().find_map(|path| {
        let mut value = &payload;
        for key in *path {
            value = value.get(key)?;
        }
        let name = value.as_str()?.trim();
        (!name.is_empty()).then(|| name.to_owned())
    });

    Ok(WebhookEvent::Push(PushEvent {
        git_ref,
        before,
        after,
        deleted,
        repository_urls,
        pusher,
    }))
}

fn required_string(
    payload: &Value,
    key: &str,
    field: &'static str,
) -> Result<String, WebhookError> {
    payload
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(WebhookError::MissingField {
            field,
            expected: "string",
        })
}

fn check_object_id(field: &'static str, value: &str) -> Result<(), WebhookError> {
    if (value.len() == 40 || value.len() == 64) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(WebhookError::InvalidField {
            field,
            reason: format!(
                "expected a commit id of 40 or 64 hex digits, got {} characters",
                value.chars().count()
            ),
        })
    }
}
