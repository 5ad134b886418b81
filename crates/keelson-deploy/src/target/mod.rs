//! Deployment targets: where replicas of a service run (processes on this host, Docker
//! containers), and the supervisor that keeps each replica running ([`supervise`]).
//!
//! A *replica* is one instance of one version of a service. A [`Target`] starts a replica from a
//! [`ReplicaSpec`] and answers with a [`ReplicaRecord`]: everything needed to find the replica
//! again (status, stop, exec, logs) — also from another Keelson process after a controller
//! restart, because replicas outlive the process that started them.
//!
//! # Invariants
//!
//! - Secret values ([`ReplicaSpec::secret_env`]) reach the replica's environment only: they are
//!   never logged, never stored in a [`ReplicaRecord`], never part of a [`TargetError`].
//! - `${PORT}`, `${REPLICA}`, `${VERSION}` and `${ENVIRONMENT}` in environment values are expanded
//!   by Keelson ([`expand_env_value`]); no shell is involved anywhere. Other `${…}` text is left
//!   as written.
//! - Names that end up in paths and container names (environment, service, version) must be
//!   `[A-Za-z0-9_.-]+` and not start with `.`; anything else is refused with
//!   [`TargetError::InvalidSpec`].
//! - `stop` is idempotent: stopping a replica that is gone is not an error.

pub mod docker;
mod limits;
pub mod process;
pub mod supervise;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keelson_pipeline::deploy::{Resources, RunSpec, StopSpec, TargetKind};
use serde::{Deserialize, Serialize};

pub use self::docker::DockerTarget;
pub use self::process::ProcessTarget;
pub use self::supervise::{Phase, ReplicaState, Supervised};

/// A boxed, sendable future (the shape of [`Target`]'s methods).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What to run for one replica. Its `Debug` shows secret names, never their values.
#[derive(Clone)]
pub struct ReplicaSpec {
    pub service: String,
    pub environment: String,
    /// Revision label, e.g. `r3`.
    pub version: String,
    /// 0-based replica index.
    pub index: u32,
    pub run: RunSpec,
    /// For [`RunSpec::Command`]: the working directory, and what `command[0]` is relative to when
    /// it contains a `/` (a program name without `/` is looked up on `PATH`).
    pub release_dir: Option<PathBuf>,
    /// Environment; values may use `${PORT}`, `${REPLICA}`, `${VERSION}`, `${ENVIRONMENT}`.
    pub env: Vec<(String, String)>,
    /// Passed like `env` (after it, so a secret wins); values are never logged or recorded.
    pub secret_env: Vec<(String, String)>,
    /// The port the service listens on inside its container (docker target). The process
    /// target ignores it and picks a free loopback port.
    pub port: Option<u16>,
    pub resources: Resources,
    pub stop: StopSpec,
    /// Where the target keeps its files (`logs/<id>.log`, …). Created (mode 0700) if missing.
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for ReplicaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secret_names: Vec<(&str, &str)> = self
            .secret_env
            .iter()
            .map(|(name, _)| (name.as_str(), "***"))
            .collect();
        f.debug_struct("ReplicaSpec")
            .field("service", &self.service)
            .field("environment", &self.environment)
            .field("version", &self.version)
            .field("index", &self.index)
            .field("run", &self.run)
            .field("release_dir", &self.release_dir)
            .field("env", &self.env)
            .field("secret_env", &secret_names)
            .field("port", &self.port)
            .field("resources", &self.resources)
            .field("stop", &self.stop)
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl ReplicaSpec {
    /// `<environment>-<service>-<version>-<index>`: the replica's id, also its log file's name.
    pub fn replica_id(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.environment, self.service, self.version, self.index
        )
    }

    /// Checks the names used in paths and container names; returns the replica id.
    pub fn validate(&self) -> Result<String, TargetError> {
        let id = self.replica_id();
        for (what, value) in [
            ("environment", &self.environment),
            ("service", &self.service),
            ("version", &self.version),
        ] {
            if !is_safe_name(value) {
                return Err(TargetError::InvalidSpec {
                    id: id.clone(),
                    message: format!(
                        "{what} name `{}` may only contain A-Z a-z 0-9 _ . - and must not start \
                         with `.`",
                        value.escape_debug()
                    ),
                });
            }
        }
        for (name, _) in self.env.iter().chain(&self.secret_env) {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                return Err(TargetError::InvalidSpec {
                    id: id.clone(),
                    message: format!(
                        "environment variable name `{}` is empty or contains `=` or NUL",
                        name.escape_debug()
                    ),
                });
            }
        }
        for (name, value) in &self.env {
            if value.contains('\0') {
                return Err(TargetError::InvalidSpec {
                    id: id.clone(),
                    message: format!("environment variable `{name}` contains a NUL byte"),
                });
            }
        }
        for (name, value) in &self.secret_env {
            if value.contains('\0') {
                return Err(TargetError::InvalidSpec {
                    id: id.clone(),
                    message: format!("secret variable `{name}` contains a NUL byte"),
                });
            }
        }
        Ok(id)
    }

    /// The environment the replica sees, after `base`: `env` (expanded), `secret_env`
    /// (expanded), then `PORT=<port>` when `port` is set. Later entries win.
    pub(crate) fn environment_with(
        &self,
        base: Vec<(String, String)>,
        port: Option<u16>,
    ) -> Vec<(String, String)> {
        let mut out = base;
        let mut set = |name: &str, value: String| {
            out.retain(|(n, _)| n != name);
            out.push((name.to_owned(), value));
        };
        for (name, value) in self.env.iter().chain(&self.secret_env) {
            set(name, expand_env_value(value, port, self));
        }
        if let Some(port) = port {
            set("PORT", port.to_string());
        }
        out
    }

    /// The secret values, for redacting messages that might echo them.
    pub(crate) fn secret_values(&self) -> Vec<&str> {
        self.secret_env
            .iter()
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .collect()
    }
}

/// `[A-Za-z0-9_.-]+`, not starting with `.`.
fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Expands `${PORT}` (empty when there is no port), `${REPLICA}`, `${VERSION}` and
/// `${ENVIRONMENT}` in `value`; any other text, including other `${NAME}`s, is kept as written.
pub fn expand_env_value(value: &str, port: Option<u16>, spec: &ReplicaSpec) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let name = &after[..end];
        let replacement = match name {
            "PORT" => Some(port.map(|p| p.to_string()).unwrap_or_default()),
            "REPLICA" => Some(spec.index.to_string()),
            "VERSION" => Some(spec.version.clone()),
            "ENVIRONMENT" => Some(spec.environment.clone()),
            _ => None,
        };
        match replacement {
            Some(text) => out.push_str(&text),
            None => out.push_str(&rest[start..start + 2 + end + 1]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// Replaces every secret value in `message` with `***`.
pub(crate) fn redact(message: &str, secrets: &[&str]) -> String {
    let mut out = message.to_owned();
    for secret in secrets {
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// What a controller persists about a replica; enough to find (adopt) it after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaRecord {
    /// `<environment>-<service>-<version>-<index>`.
    pub id: String,
    /// Where the proxy reaches it (`127.0.0.1:<port>`). Port 0: the replica has no address
    /// (a docker replica without a `port`).
    pub addr: SocketAddr,
    pub handle: ReplicaHandle,
    /// The replica's output (process target).
    pub log_path: Option<PathBuf>,
    /// How resource limits were applied, or why not (`None`: no limits were asked for).
    pub limits: Option<String>,
    /// Working directory of the replica (process target): where exec probes run.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
}

/// How a target finds its replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaHandle {
    /// A process on this host, leader of its own session and process group (`pgid == pid`).
    Process {
        pid: i32,
        /// Field 22 of `/proc/<pid>/stat` (clock ticks after boot): tells a reused pid apart.
        start_time: u64,
        pgid: i32,
        /// Cgroup directories Keelson made for the replica's limits (removed at stop).
        #[serde(default)]
        cgroups: Vec<PathBuf>,
    },
    /// A Docker container.
    Container { id: String, name: String },
}

/// What a target says about a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaStatus {
    Running,
    /// It ended; code and signal when the target knows them (a process adopted from another
    /// controller reports neither).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// No such replica (any more): the process is gone or its pid was reused, the container
    /// was removed.
    Gone,
}

impl std::fmt::Display for ReplicaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReplicaStatus::Running => f.write_str("running"),
            ReplicaStatus::Exited {
                code: Some(code), ..
            } => write!(f, "exited with code {code}"),
            ReplicaStatus::Exited {
                signal: Some(signal),
                ..
            } => write!(f, "killed by signal {signal}"),
            ReplicaStatus::Exited { .. } => f.write_str("exited"),
            ReplicaStatus::Gone => f.write_str("gone"),
        }
    }
}

/// An error of a target. Messages name the replica and never contain secret values.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("replica {id}: invalid spec: {message}")]
    InvalidSpec { id: String, message: String },
    #[error("replica {id}: the {target:?} target cannot run {what}")]
    Unsupported {
        id: String,
        target: TargetKind,
        what: String,
    },
    #[error("replica {id}: cannot start `{program}`: {source}")]
    Spawn {
        id: String,
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replica {id}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replica {id}: record does not belong to the {target:?} target")]
    WrongHandle { id: String, target: TargetKind },
    #[error("cannot reach the Docker Engine ({hint}): {message}")]
    Connect { hint: String, message: String },
    #[error(
        "replica {id}: image `{image}` not found locally; build or load it first (Keelson pulls nothing)"
    )]
    ImageMissing { id: String, image: String },
    #[error("replica {id}: Docker Engine call failed ({what}): {message}")]
    Docker {
        id: String,
        what: String,
        message: String,
    },
    #[error("replica {id}: `{command}` did not finish within {timeout:?}")]
    ExecTimeout {
        id: String,
        command: String,
        timeout: Duration,
    },
    #[error(
        "replica {id}: unknown stop signal `{signal}` (use TERM, INT, QUIT, HUP, USR1, USR2 or KILL)"
    )]
    UnknownSignal { id: String, signal: String },
}

/// Where replicas run. Implementations: [`ProcessTarget`], [`DockerTarget`].
pub trait Target: Send + Sync {
    /// Which kind of target this is.
    fn kind(&self) -> TargetKind;

    /// Starts a replica. `port`: the host port to reuse (a restart keeps its address); `None`
    /// picks a free one.
    fn start<'a>(
        &'a self,
        spec: &'a ReplicaSpec,
        port: Option<u16>,
    ) -> BoxFuture<'a, Result<ReplicaRecord, TargetError>>;

    /// Whether the replica runs.
    fn status<'a>(
        &'a self,
        record: &'a ReplicaRecord,
    ) -> BoxFuture<'a, Result<ReplicaStatus, TargetError>>;

    /// Sends `stop.signal`, waits up to `stop.grace`, then kills; releases what the replica held
    /// (cgroups, the container). Idempotent: a replica that is gone is stopped.
    fn stop<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        stop: &'a StopSpec,
    ) -> BoxFuture<'a, Result<(), TargetError>>;

    /// Runs `command` beside the replica (process: in its working directory with `PORT` set;
    /// docker: inside its container). `Ok(true)` when it exits 0.
    fn exec<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        command: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, TargetError>>;

    /// The last `tail` lines of the replica's output.
    fn logs<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        tail: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, TargetError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ReplicaSpec {
        ReplicaSpec {
            service: "web".into(),
            environment: "prod".into(),
            version: "r3".into(),
            index: 2,
            run: RunSpec::Command {
                command: vec!["true".into()],
                artifact: None,
            },
            release_dir: None,
            env: vec![],
            secret_env: vec![],
            port: None,
            resources: Resources::default(),
            stop: StopSpec::default(),
            state_dir: PathBuf::from("/tmp"),
        }
    }

    #[test]
    fn expands_known_placeholders_only() {
        let s = spec();
        assert_eq!(
            expand_env_value(
                "http://127.0.0.1:${PORT}/${ENVIRONMENT}/${VERSION}/${REPLICA}",
                Some(8080),
                &s
            ),
            "http://127.0.0.1:8080/prod/r3/2"
        );
        assert_eq!(
            expand_env_value("${HOME}x${PORT", Some(1), &s),
            "${HOME}x${PORT"
        );
        assert_eq!(expand_env_value("a${PORT}b", None, &s), "ab");
        assert_eq!(expand_env_value("$PORT ${}", Some(1), &s), "$PORT ${}");
    }

    #[test]
    fn later_entries_win_and_port_is_last() {
        let mut s = spec();
        s.env = vec![("A".into(), "1".into()), ("PORT".into(), "9".into())];
        s.secret_env = vec![("A".into(), "secret".into())];
        let env = s.environment_with(vec![("A".into(), "0".into())], Some(5));
        assert_eq!(
            env,
            vec![
                ("A".to_owned(), "secret".to_owned()),
                ("PORT".to_owned(), "5".to_owned())
            ]
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        let mut s = spec();
        assert_eq!(s.validate().unwrap(), "prod-web-r3-2");
        s.version = "../x".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("version name"), "{err}");
        let mut s = spec();
        s.env = vec![("A=B".into(), "1".into())];
        assert!(s.validate().is_err());
    }

    #[test]
    fn debug_hides_secret_values() {
        let mut s = spec();
        s.secret_env = vec![("TOKEN".into(), "hunter2".into())];
        let shown = format!("{s:?}");
        assert!(
            shown.contains("TOKEN") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn redact_hides_secret_values() {
        assert_eq!(redact("token hunter2 here", &["hunter2"]), "token *** here");
    }
}
