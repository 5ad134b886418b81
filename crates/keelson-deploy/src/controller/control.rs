//! The controller's local control socket: `keelson deploy …` commands and pipeline deploy jobs
//! on the same host reach the running controller through `<state>/control.sock`.
//!
//! Protocol: one JSON request line, one JSON response line, per connection.
//!
//! Access: the socket is created 0600 inside the 0700 state directory, and every connection's
//! peer credentials are checked: only the controller's own user (or root) is served. A request
//! larger than 16 MiB or not valid JSON gets an error response, never a crash.
//!
//! Secrets: a `deploy` request may carry secret values (resolved by the requester); they cross
//! only this socket, and the `Debug` of a request shows their names, never the values.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::state::Deployment;
use super::{Controller, DeployRequest, SlotStatus};

const MAX_REQUEST: u64 = 16 * 1024 * 1024;
/// A connection must send its whole request within this long.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A command for the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum ControlRequest {
    Deploy {
        request: DeployRequest,
        /// Answer only when the deployment has finished.
        wait: bool,
    },
    Status {
        environment: Option<String>,
        service: Option<String>,
    },
    History {
        environment: String,
        service: String,
    },
    Promote {
        environment: String,
        service: String,
    },
    Pause {
        environment: String,
        service: String,
    },
    Resume {
        environment: String,
        service: String,
    },
    Abort {
        environment: String,
        service: String,
        who: String,
    },
    Approve {
        environment: String,
        service: String,
        who: String,
        wait: bool,
    },
    Rollback {
        environment: String,
        service: String,
        to: Option<u64>,
        who: String,
        wait: bool,
    },
    Logs {
        environment: String,
        service: String,
        version: Option<String>,
        tail: usize,
    },
    /// Which of these secret names the controller's own environment cannot resolve (a requester
    /// asks before deploying anything, for the secrets it did not find itself).
    UnsetSecrets { names: Vec<String> },
}

/// The controller's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum ControlResponse {
    Deployment { deployment: Box<Deployment> },
    Status { slots: Vec<SlotStatus> },
    History { deployments: Vec<Deployment> },
    Logs { replicas: Vec<super::ReplicaLog> },
    UnsetSecrets { names: Vec<String> },
    Done,
    Error { message: String },
}

/// Serves `controller` on `socket` until the task is dropped.
pub async fn serve(controller: Controller, socket: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    loop {
        let (stream, _) = listener.accept().await?;
        let allowed = stream
            .peer_cred()
            .map(|c| c.uid() == me || c.uid() == 0)
            .unwrap_or(false);
        let controller = controller.clone();
        tokio::spawn(async move {
            if !allowed {
                let _ = respond(
                    stream,
                    &ControlResponse::Error {
                        message: "permission denied: not the controller's user".into(),
                    },
                )
                .await;
                return;
            }
            handle(controller, stream).await;
        });
    }
}

async fn handle(controller: Controller, stream: UnixStream) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read = tokio::time::timeout(
        REQUEST_TIMEOUT,
        (&mut reader).take(MAX_REQUEST).read_line(&mut line),
    )
    .await;
    let stream = reader.into_inner();
    let response = match read {
        Err(_) => ControlResponse::Error {
            message: format!("no complete request within {REQUEST_TIMEOUT:?}"),
        },
        Ok(Err(e)) => ControlResponse::Error {
            message: format!("cannot read the request: {e}"),
        },
        Ok(Ok(_)) if !line.ends_with('\n') => ControlResponse::Error {
            message: "request too large or not terminated by a newline".into(),
        },
        Ok(Ok(_)) => match serde_json::from_str::<ControlRequest>(&line) {
            Err(e) => ControlResponse::Error {
                message: format!("bad request: {e}"),
            },
            Ok(request) => execute(&controller, request).await,
        },
    };
    let _ = respond(stream, &response).await;
}

async fn respond(mut stream: UnixStream, response: &ControlResponse) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).expect("response serialises");
    bytes.push(b'\n');
    stream.write_all(&bytes).await?;
    stream.shutdown().await
}

/// Runs one request against the controller.
pub async fn execute(controller: &Controller, request: ControlRequest) -> ControlResponse {
    let result: Result<ControlResponse, super::DeployError> = async {
        Ok(match request {
            ControlRequest::Deploy { request, wait } => {
                let (env, service) = (request.environment.clone(), request.service.clone());
                let d = controller.deploy(request).await?;
                deployment(controller, &env, &service, d, wait).await?
            }
            ControlRequest::Status {
                environment,
                service,
            } => ControlResponse::Status {
                slots: controller
                    .status(environment.as_deref(), service.as_deref())
                    .await,
            },
            ControlRequest::History {
                environment,
                service,
            } => ControlResponse::History {
                deployments: controller.history(&environment, &service)?,
            },
            ControlRequest::Promote {
                environment,
                service,
            } => {
                controller.promote(&environment, &service).await?;
                ControlResponse::Done
            }
            ControlRequest::Pause {
                environment,
                service,
            } => {
                controller.pause(&environment, &service).await?;
                ControlResponse::Done
            }
            ControlRequest::Resume {
                environment,
                service,
            } => {
                controller.resume(&environment, &service).await?;
                ControlResponse::Done
            }
            ControlRequest::Abort {
                environment,
                service,
                who,
            } => {
                controller.abort(&environment, &service, &who).await?;
                ControlResponse::Done
            }
            ControlRequest::Approve {
                environment,
                service,
                who,
                wait,
            } => {
                let d = controller.approve(&environment, &service, &who).await?;
                deployment(controller, &environment, &service, d, wait).await?
            }
            ControlRequest::Rollback {
                environment,
                service,
                to,
                who,
                wait,
            } => {
                let d = controller
                    .rollback(&environment, &service, to, &who)
                    .await?;
                deployment(controller, &environment, &service, d, wait).await?
            }
            ControlRequest::Logs {
                environment,
                service,
                version,
                tail,
            } => ControlResponse::Logs {
                replicas: controller
                    .logs(&environment, &service, version.as_deref(), tail)
                    .await?,
            },
            ControlRequest::UnsetSecrets { names } => ControlResponse::UnsetSecrets {
                names: controller.unset_secrets(&names),
            },
        })
    }
    .await;
    result.unwrap_or_else(|e| ControlResponse::Error {
        message: e.to_string(),
    })
}

async fn deployment(
    controller: &Controller,
    environment: &str,
    service: &str,
    started: Deployment,
    wait: bool,
) -> Result<ControlResponse, super::DeployError> {
    let d = if wait {
        controller
            .wait(environment, service, started.revision)
            .await?
    } else {
        started
    };
    Ok(ControlResponse::Deployment {
        deployment: Box::new(d),
    })
}

/// A client of the control socket.
#[derive(Debug, Clone)]
pub struct ControlClient {
    socket: PathBuf,
}

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no deploy controller is listening on {socket}: start one with `keelson deploy daemon` (or `keelson server`) ({source})"
    )]
    NotRunning {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("talking to the deploy controller on {socket}: {message}")]
    Protocol { socket: PathBuf, message: String },
    #[error("{0}")]
    Refused(String),
}

impl ControlClient {
    pub fn new(socket: PathBuf) -> ControlClient {
        ControlClient { socket }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; an error response becomes [`ControlError::Refused`].
    pub async fn call(&self, request: &ControlRequest) -> Result<ControlResponse, ControlError> {
        let protocol = |message: String| ControlError::Protocol {
            socket: self.socket.clone(),
            message,
        };
        let mut stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ControlError::NotRunning {
                    socket: self.socket.clone(),
                    source,
                })?;
        let mut bytes = serde_json::to_vec(request).expect("request serialises");
        bytes.push(b'\n');
        stream
            .write_all(&bytes)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let mut line = String::new();
        BufReader::new(stream)
            .read_line(&mut line)
            .await
            .map_err(|e| protocol(e.to_string()))?;
        if line.is_empty() {
            return Err(protocol("the controller closed the connection".into()));
        }
        match serde_json::from_str(&line).map_err(|e| protocol(format!("bad response: {e}")))? {
            ControlResponse::Error { message } => Err(ControlError::Refused(message)),
            response => Ok(response),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::{ControllerConfig, ProxyMode};

    async fn raw(socket: &Path, bytes: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        // Half-close: the request ends here, newline or not.
        stream.shutdown().await.unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        line
    }

    #[tokio::test]
    async fn hostile_requests_get_errors_and_valid_ones_answers() {
        let dir = tempfile::tempdir().unwrap();
        let controller = Controller::open(ControllerConfig::new(
            dir.path().join("deploy"),
            ProxyMode::InProcess,
        ))
        .await
        .unwrap();
        let socket = dir.path().join("deploy/control.sock");
        let server = tokio::spawn({
            let socket = socket.clone();
            async move { serve(controller, &socket).await }
        });
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let garbage = raw(&socket, b"{not json\n").await;
        assert!(garbage.contains("\"result\":\"error\""), "{garbage}");
        assert!(garbage.contains("bad request"), "{garbage}");
        let unterminated = raw(&socket, b"{\"op\":\"status\"}").await;
        assert!(unterminated.contains("not terminated"), "{unterminated}");

        let client = ControlClient::new(socket.clone());
        let status = client
            .call(&ControlRequest::Status {
                environment: None,
                service: None,
            })
            .await
            .unwrap();
        assert!(matches!(status, ControlResponse::Status { slots } if slots.is_empty()));
        let refused = client
            .call(&ControlRequest::Promote {
                environment: "production".into(),
                service: "web".into(),
            })
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("nothing to promote"),
            "{refused}"
        );
        server.abort();
        let gone = ControlClient::new(dir.path().join("nowhere.sock"))
            .call(&ControlRequest::Status {
                environment: None,
                service: None,
            })
            .await
            .unwrap_err();
        assert!(gone.to_string().contains("keelson deploy daemon"), "{gone}");
    }

    #[test]
    fn deploy_requests_carry_secret_values_but_never_debug_them() {
        let mut secrets = crate::controller::secrets::SecretValues::new();
        secrets.insert("api-key".into(), "v3ry-s3cret-value".into());
        let request = ControlRequest::Deploy {
            request: DeployRequest {
                environment: "staging".into(),
                service: "web".into(),
                config: keelson_pipeline::deploy::DeployConfig::default(),
                source: crate::controller::Source::Digest {
                    digest: "sha256:00".into(),
                },
                commit: None,
                branch: None,
                requested_by: "test".into(),
                strategy: None,
                secrets,
                secrets_from: None,
            },
            wait: true,
        };
        let debug = format!("{request:?}");
        assert!(debug.contains("api-key"), "{debug}");
        assert!(!debug.contains("v3ry-s3cret-value"), "{debug}");
        let wire = serde_json::to_string(&request).unwrap();
        let ControlRequest::Deploy { request, .. } = serde_json::from_str(&wire).unwrap() else {
            panic!("not a deploy request: {wire}");
        };
        assert_eq!(request.secrets.get("api-key"), Some("v3ry-s3cret-value"));
        // A request from before secrets were carried still parses.
        let old = wire.replace(r#""secrets":{"api-key":"v3ry-s3cret-value"},"#, "");
        assert_ne!(old, wire);
        let ControlRequest::Deploy { request, .. } = serde_json::from_str(&old).unwrap() else {
            panic!("not a deploy request: {old}");
        };
        assert!(request.secrets.is_empty());
    }
}
