//! The docker target: replicas are containers, created through the Docker Engine API (bollard,
//! with the API version negotiated as everywhere in Keelson).
//!
//! # Semantics
//!
//! - **Image.** Only [`RunSpec::Image`]; nothing is pulled (a missing image is
//!   [`TargetError::ImageMissing`]). `command` replaces the image's command; its entrypoint stays.
//! - **Container.** Named `keelson-<owner>-<environment>-<service>-<version>-<index>`, where
//!   `<owner>` is the first 12 hex digits of the SHA-256 of the replica's state directory, so two
//!   controllers with different data directories on one Docker Engine never take each other's
//!   containers (a leftover container of that name — this slot's own — is removed first), labelled `dev.keelson.deploy.{environment,service,version,
//!   index}`, with the spec's env and secrets (expanded) plus `PORT=<container port>`. Docker keeps
//!   a container's environment in its configuration, so secrets are visible to whoever can
//!   `docker inspect` it; Keelson itself never logs or records them.
//! - **Port.** The spec's container port is published on `127.0.0.1`, on the port to reuse or
//!   an ephemeral one read back after the start. Without a port the record's address is
//!   `127.0.0.1:0` (no address).
//! - **Hardening** as the engine's job containers: `docker-init` as PID 1, `CapDrop: ALL` then
//!   the engine's [`DEFAULT_CAPS`], `no-new-privileges`, never privileged; memory (without swap),
//!   `NanoCpus` and PIDs limits from the spec (enforced by the engine; said in `limits`).
//! - **Stop.** `StopSignal` and `StopTimeout` come from the stop spec; `stop` asks the engine to
//!   stop with that signal and grace, then removes the container. A container that is gone is
//!   stopped.
//! - **Status** from `inspect` (`Gone` on 404), **exec** by Docker exec (exit code 0 → `true`),
//!   **logs** by Docker logs (stdout and stderr).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use keelson_engine::executor::docker::{DEFAULT_CAPS, connect_engine};
use keelson_pipeline::deploy::{RunSpec, StopSpec, TargetKind};

use super::process::signal_number;
use super::{
    BoxFuture, ReplicaHandle, ReplicaRecord, ReplicaSpec, ReplicaStatus, Target, TargetError,
    redact,
};

/// Label prefix of deployed containers: `.environment`, `.service`, `.version`, `.index`.
pub const DEPLOY_LABEL_PREFIX: &str = "dev.keelson.deploy";

/// Runs replicas as Docker containers.
#[derive(Debug, Clone)]
pub struct DockerTarget {
    docker: Docker,
}

fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn is_not_modified(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

impl DockerTarget {
    /// Connects to the engine named by `DOCKER_HOST` (default: the local socket), negotiating
    /// the API version, and checks it answers.
    pub async fn connect() -> Result<Self, TargetError> {
        let hint = std::env::var("DOCKER_HOST")
            .map(|host| format!("DOCKER_HOST={host}"))
            .unwrap_or_else(|_| "the local socket; set DOCKER_HOST to change it".to_owned());
        let connect_error = |e: bollard::errors::Error| TargetError::Connect {
            hint: hint.clone(),
            message: e.to_string(),
        };
        let docker = connect_engine().await.map_err(connect_error)?;
        docker.ping().await.map_err(connect_error)?;
        Ok(DockerTarget { docker })
    }

    /// A target over an already connected (negotiated) client.
    pub fn with_client(docker: Docker) -> Self {
        DockerTarget { docker }
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn container_of<'r>(&self, record: &'r ReplicaRecord) -> Result<&'r str, TargetError> {
        match &record.handle {
            ReplicaHandle::Container { id, .. } => Ok(id),
            ReplicaHandle::Process { .. } => Err(TargetError::WrongHandle {
                id: record.id.clone(),
                target: TargetKind::Docker,
            }),
        }
    }

    async fn start_container(
        &self,
        spec: &ReplicaSpec,
        port: Option<u16>,
    ) -> Result<ReplicaRecord, TargetError> {
        let id = spec.validate()?;
        let secrets = spec.secret_values();
        let api = |what: String| {
            let id = id.clone();
            let secrets = secrets.clone();
            move |e: bollard::errors::Error| TargetError::Docker {
                id,
                what,
                message: redact(&e.to_string(), &secrets),
            }
        };
        let (image, command) = match &spec.run {
            RunSpec::Image { image, command } => (image, command),
            RunSpec::Command { .. } => {
                return Err(TargetError::Unsupported {
                    id,
                    target: TargetKind::Docker,
                    what: "a command without an image; use the process target".into(),
                });
            }
        };
        if signal_number(&spec.stop.signal).is_none() {
            return Err(TargetError::UnknownSignal {
                id,
                signal: spec.stop.signal.clone(),
            });
        }
        match self.docker.inspect_image(image).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => {
                return Err(TargetError::ImageMissing {
                    id,
                    image: image.clone(),
                });
            }
            Err(e) => return Err(api(format!("inspect image {image}"))(e)),
        }
        let name = container_name(&spec.state_dir, &id);
        // A leftover of an earlier run (crashed, or a controller that died mid-restart).
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(&name, Some(remove)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(api(format!("remove leftover container {name}"))(e)),
        }

        let env: Vec<String> = spec
            .environment_with(Vec::new(), spec.port)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let labels = HashMap::from([
            (
                format!("{DEPLOY_LABEL_PREFIX}.environment"),
                spec.environment.clone(),
            ),
            (
                format!("{DEPLOY_LABEL_PREFIX}.service"),
                spec.service.clone(),
            ),
            (
                format!("{DEPLOY_LABEL_PREFIX}.version"),
                spec.version.clone(),
            ),
            (
                format!("{DEPLOY_LABEL_PREFIX}.index"),
                spec.index.to_string(),
            ),
        ]);
        let mut host = HostConfig {
            init: Some(true),
            cap_drop: Some(vec!["ALL".to_owned()]),
            cap_add: Some(DEFAULT_CAPS.iter().map(|c| (*c).to_owned()).collect()),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            privileged: Some(false),
            ..Default::default()
        };
        let mut limits = Vec::new();
        if let Some(bytes) = spec.resources.memory_bytes {
            let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
            host.memory = Some(bytes);
            host.memory_swap = Some(bytes);
            limits.push(format!("memory {bytes} bytes without swap"));
        }
        if let Some(cpus) = spec.resources.cpus {
            host.nano_cpus = Some((cpus * 1e9).round() as i64);
            limits.push(format!("{cpus} CPUs (NanoCpus)"));
        }
        if let Some(pids) = spec.resources.pids {
            host.pids_limit = Some(i64::from(pids));
            limits.push(format!("{pids} PIDs"));
        }
        let mut exposed_ports = None;
        if let Some(container_port) = spec.port {
            let key = format!("{container_port}/tcp");
            let binding = PortBinding {
                host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                host_port: Some(port.map(|p| p.to_string()).unwrap_or_default()),
            };
            host.port_bindings = Some(HashMap::from([(key.clone(), Some(vec![binding]))]));
            exposed_ports = Some(vec![key]);
        }
        let grace_secs = spec.stop.grace.as_secs_f64().ceil() as i64;
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: command.clone(),
            env: Some(env),
            labels: Some(labels),
            exposed_ports,
            stop_signal: Some(docker_signal(&spec.stop.signal)),
            stop_timeout: Some(grace_secs),
            host_config: Some(host),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(options), body)
            .await
            .map_err(api(format!("create container {name}")))?;
        let record_of = |addr: SocketAddr| ReplicaRecord {
            id: id.clone(),
            addr,
            handle: ReplicaHandle::Container {
                id: created.id.clone(),
                name: name.clone(),
            },
            log_path: None,
            limits: (!limits.is_empty())
                .then(|| format!("enforced by the Docker Engine: {}", limits.join(", "))),
            workdir: None,
        };
        let started = async {
            self.docker
                .start_container(&created.id, None)
                .await
                .map_err(api(format!("start container {name}")))?;
            let mut host_port = 0;
            if let Some(container_port) = spec.port {
                let inspect = self
                    .docker
                    .inspect_container(&created.id, None)
                    .await
                    .map_err(api(format!("inspect container {name}")))?;
                host_port = inspect
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.ports.as_ref())
                    .and_then(|ports| ports.get(&format!("{container_port}/tcp")))
                    .and_then(|bindings| bindings.as_ref())
                    .and_then(|bindings| {
                        bindings
                            .iter()
                            .find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
                    })
                    .ok_or_else(|| TargetError::Docker {
                        id: id.clone(),
                        what: format!("reading the host port of container {name}"),
                        message: format!(
                            "the engine reports no host port for port {container_port} (did the \
                             container exit at once?)"
                        ),
                    })?;
            }
            Ok(record_of(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                host_port,
            ))))
        }
        .await;
        if started.is_err() {
            let remove = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            let _ = self
                .docker
                .remove_container(&created.id, Some(remove))
                .await;
        } else {
            tracing::info!(replica = %id, container = %name, "docker replica started");
        }
        started
    }

    async fn stop_container(
        &self,
        record: &ReplicaRecord,
        stop: &StopSpec,
    ) -> Result<(), TargetError> {
        let container = self.container_of(record)?;
        if signal_number(&stop.signal).is_none() {
            return Err(TargetError::UnknownSignal {
                id: record.id.clone(),
                signal: stop.signal.clone(),
            });
        }
        let api = |what: &str| {
            let id = record.id.clone();
            let what = format!("{what} {container}");
            move |e: bollard::errors::Error| TargetError::Docker {
                id,
                what,
                message: e.to_string(),
            }
        };
        let grace = i32::try_from(stop.grace.as_secs_f64().ceil() as i64).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default()
            .signal(&docker_signal(&stop.signal))
            .t(grace)
            .build();
        match self.docker.stop_container(container, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if is_not_modified(&e) => {}
            Err(e) => return Err(api("stop container")(e)),
        }
        let remove = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(container, Some(remove)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // Already being removed by another call.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(e) => Err(api("remove container")(e)),
        }
    }

    async fn exec_in(
        &self,
        record: &ReplicaRecord,
        command: &[String],
        timeout: Duration,
    ) -> Result<bool, TargetError> {
        let container = self.container_of(record)?;
        if command.is_empty() {
            return Err(TargetError::InvalidSpec {
                id: record.id.clone(),
                message: "the exec command is empty".into(),
            });
        }
        let api = |what: &str| {
            let id = record.id.clone();
            let what = what.to_owned();
            move |e: bollard::errors::Error| TargetError::Docker {
                id,
                what,
                message: e.to_string(),
            }
        };
        let run = async {
            let exec = self
                .docker
                .create_exec(
                    container,
                    CreateExecOptions {
                        cmd: Some(command.iter().map(String::as_str).collect()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(api("create exec"))?;
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(api("start exec"))?
            {
                while let Some(frame) = output.next().await {
                    frame.map_err(api("exec output"))?;
                }
            }
            loop {
                let inspect = self
                    .docker
                    .inspect_exec(&exec.id)
                    .await
                    .map_err(api("inspect exec"))?;
                if inspect.running != Some(true) {
                    return Ok(inspect.exit_code == Some(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(TargetError::ExecTimeout {
                id: record.id.clone(),
                command: command[0].clone(),
                timeout,
            }),
        }
    }
}

/// `TERM` → `SIGTERM` (what Docker's `StopSignal` expects).
fn docker_signal(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    }
}

impl Target for DockerTarget {
    fn kind(&self) -> TargetKind {
        TargetKind::Docker
    }

    fn start<'a>(
        &'a self,
        spec: &'a ReplicaSpec,
        port: Option<u16>,
    ) -> BoxFuture<'a, Result<ReplicaRecord, TargetError>> {
        Box::pin(self.start_container(spec, port))
    }

    fn status<'a>(
        &'a self,
        record: &'a ReplicaRecord,
    ) -> BoxFuture<'a, Result<ReplicaStatus, TargetError>> {
        Box::pin(async move {
            let container = self.container_of(record)?;
            match self.docker.inspect_container(container, None).await {
                Ok(inspect) => {
                    let state = inspect.state.unwrap_or_default();
                    if state.running == Some(true) {
                        Ok(ReplicaStatus::Running)
                    } else {
                        Ok(ReplicaStatus::Exited {
                            code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
                            signal: None,
                        })
                    }
                }
                Err(e) if is_not_found(&e) => Ok(ReplicaStatus::Gone),
                Err(e) => Err(TargetError::Docker {
                    id: record.id.clone(),
                    what: format!("inspect container {container}"),
                    message: e.to_string(),
                }),
            }
        })
    }

    fn stop<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        stop: &'a StopSpec,
    ) -> BoxFuture<'a, Result<(), TargetError>> {
        Box::pin(self.stop_container(record, stop))
    }

    fn exec<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        command: &'a [String],
        timeout: Duration,
    ) -> BoxFuture<'a, Result<bool, TargetError>> {
        Box::pin(self.exec_in(record, command, timeout))
    }

    fn logs<'a>(
        &'a self,
        record: &'a ReplicaRecord,
        tail: usize,
    ) -> BoxFuture<'a, Result<Vec<String>, TargetError>> {
        Box::pin(async move {
            let container = self.container_of(record)?;
            if tail == 0 {
                return Ok(Vec::new());
            }
            let options = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .tail(&tail.to_string())
                .build();
            let mut bytes = Vec::new();
            let mut stream = self.docker.logs(container, Some(options));
            while let Some(frame) = stream.next().await {
                match frame {
                    Ok(
                        LogOutput::StdOut { message }
                        | LogOutput::StdErr { message }
                        | LogOutput::Console { message },
                    ) => bytes.extend_from_slice(&message),
                    Ok(LogOutput::StdIn { .. }) => {}
                    Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                    Err(e) => {
                        return Err(TargetError::Docker {
                            id: record.id.clone(),
                            what: format!("logs of {container}"),
                            message: e.to_string(),
                        });
                    }
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let skip = lines.len().saturating_sub(tail);
            Ok(lines[skip..].to_vec())
        })
    }
}

/// `keelson-<owner>-<id>`: `<owner>` (12 hex digits of the SHA-256 of the state directory) keeps
/// the containers of controllers with different data directories apart on one engine.
fn container_name(state_dir: &Path, id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let digest = Sha256::digest(state_dir.as_os_str().as_encoded_bytes());
    let owner: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("keelson-{owner}-{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_names_differ_per_state_directory() {
        let a = container_name(
            Path::new("/data/a/deploy/slots/prod/web/replicas"),
            "prod-web-r1-0",
        );
        let b = container_name(
            Path::new("/data/b/deploy/slots/prod/web/replicas"),
            "prod-web-r1-0",
        );
        assert_ne!(a, b);
        assert!(
            a.starts_with("keelson-") && a.ends_with("-prod-web-r1-0"),
            "{a}"
        );
        assert_eq!(a.len(), "keelson-".len() + 12 + 1 + "prod-web-r1-0".len());
        assert_eq!(
            a,
            container_name(
                Path::new("/data/a/deploy/slots/prod/web/replicas"),
                "prod-web-r1-0"
            )
        );
    }

    #[test]
    fn docker_signal_names() {
        assert_eq!(docker_signal("TERM"), "SIGTERM");
        assert_eq!(docker_signal("sigusr1"), "SIGUSR1");
    }
}
