//! Service containers (`services:`) on the job network: starting them, waiting for them to be
//! healthy, and describing them to steps.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{EndpointSettings, HealthStatusEnum, NetworkingConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::cleanup::Resources;
use super::container::{hardened_host_config, sanitize, with_role};
use super::step::run_captured;
use super::{DockerError, HealthCheck, ServiceSpec};

/// Pause between health probes.
const PROBE_PAUSE: Duration = Duration::from_millis(250);
/// How many log lines a health failure quotes.
const LOG_LINES: &str = "20";
/// Exit code of [`TCP_PROBE`] when the job image has no `nc` with `-z`.
const NO_NC: i64 = 125;
/// Runs as `sh -c TCP_PROBE <host> <port>` in the job container.
const TCP_PROBE: &str = r#"command -v nc >/dev/null 2>&1 || exit 125; nc -h 2>&1 | grep -q -- '-z' || exit 125; nc -z -w 2 "$0" "$1" >/dev/null 2>&1"#;

/// A started service.
#[derive(Debug)]
pub(super) struct RunningService {
    pub name: String,
    pub container_id: String,
    pub ports: Vec<u16>,
    /// Probe TCP from this host (the job image has no usable `nc`).
    tcp_from_host: bool,
}

/// Creates and starts `service` on `network` with alias = its name.
pub(super) async fn start(
    docker: &Docker,
    service: &ServiceSpec,
    prefix: &str,
    network: &str,
    labels: &HashMap<String, String>,
    resources: Option<&mut Resources>,
) -> Result<RunningService, DockerError> {
    let name = format!("{prefix}-svc-{}", sanitize(&service.name));
    let mut host = hardened_host_config(&[]);
    host.network_mode = Some(network.to_owned());
    let endpoint = EndpointSettings {
        aliases: Some(vec![service.name.clone()]),
        ..Default::default()
    };
    let body = bollard::models::ContainerCreateBody {
        image: Some(service.image.clone()),
        env: Some(
            service
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
        ),
        cmd: service.command.clone(),
        labels: Some(with_role(labels, "service")),
        host_config: Some(host),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(network.to_owned(), endpoint)])),
        }),
        ..Default::default()
    };
    let options = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| DockerError::api(format!("create service container {name}"), e))?;
    if let Some(resources) = resources {
        resources.containers.push(created.id.clone());
    }
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| DockerError::api(format!("start service container {name}"), e))?;
    Ok(RunningService {
        name: service.name.clone(),
        container_id: created.id,
        ports: service.ports.clone(),
        tcp_from_host: false,
    })
}

/// Waits until `service` passes its health check, at most `timeout`.
pub(super) async fn wait_healthy(
    docker: &Docker,
    job: &str,
    service: &ServiceSpec,
    running: &mut RunningService,
    job_container: &str,
    user: &str,
    timeout: Duration,
) -> Result<(), DockerError> {
    let deadline = Instant::now() + timeout;
    let mut last_problem = String::from("no probe finished");
    loop {
        let inspect = docker
            .inspect_container(&running.container_id, None)
            .await
            .map_err(|e| DockerError::api(format!("inspect service {}", service.name), e))?;
        let state = inspect.state.unwrap_or_default();
        if state.running != Some(true) {
            let reason = format!("it exited (code {})", state.exit_code.unwrap_or(-1));
            return Err(unhealthy(docker, job, running, reason).await);
        }
        let healthy = match &service.health {
            None => true,
            Some(HealthCheck::Image) => match state.health.and_then(|h| h.status) {
                Some(HealthStatusEnum::HEALTHY) => true,
                Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => {
                    last_problem = "the image's HEALTHCHECK did not pass yet".to_owned();
                    false
                }
                _ => {
                    let reason = "health check `image` asked for, but the image has no HEALTHCHECK"
                        .to_owned();
                    return Err(unhealthy(docker, job, running, reason).await);
                }
            },
            Some(HealthCheck::Command(argv)) => {
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                match run_captured(docker, &running.container_id, None, &argv).await {
                    Ok((0, _)) => true,
                    Ok((code, _)) => {
                        last_problem = format!("`{}` exited with {code}", argv.join(" "));
                        false
                    }
                    Err(err) => {
                        last_problem = format!("`{}` could not run: {err}", argv.join(" "));
                        false
                    }
                }
            }
            Some(HealthCheck::Tcp(port)) => {
                let probe = probe_tcp(docker, running, job_container, user, *port).await;
                if let Err(problem) = &probe {
                    last_problem = problem.clone();
                }
                probe.is_ok()
            }
        };
        if healthy {
            return Ok(());
        }
        if Instant::now() + PROBE_PAUSE >= deadline {
            let reason = format!(
                "not healthy after {:.0?} (last probe: {last_problem})",
                timeout
            );
            return Err(unhealthy(docker, job, running, reason).await);
        }
        tokio::time::sleep(PROBE_PAUSE).await;
    }
}

/// One TCP probe: `nc -z` from the job container, or a connect from this host to the service's
/// address when the job image has no `nc` with `-z`.
async fn probe_tcp(
    docker: &Docker,
    running: &mut RunningService,
    job_container: &str,
    user: &str,
    port: u16,
) -> Result<(), String> {
    if !running.tcp_from_host {
        let port_arg = port.to_string();
        let cmd = [
            "sh",
            "-c",
            TCP_PROBE,
            running.name.as_str(),
            port_arg.as_str(),
        ];
        match run_captured(docker, job_container, Some(user), &cmd).await {
            Ok((0, _)) => return Ok(()),
            Ok((NO_NC, _)) => running.tcp_from_host = true,
            Ok((code, _)) => {
                return Err(format!(
                    "`nc -z {} {port}` from the job container exited with {code}",
                    running.name
                ));
            }
            Err(err) => return Err(format!("TCP probe from the job container: {err}")),
        }
    }
    let inspect = docker
        .inspect_container(&running.container_id, None)
        .await
        .map_err(|e| e.to_string())?;
    let address = inspect
        .network_settings
        .and_then(|s| s.networks)
        .and_then(|networks| {
            networks
                .into_values()
                .filter_map(|endpoint| endpoint.ip_address)
                .find(|ip| !ip.is_empty())
        })
        .ok_or_else(|| "the service has no address on the job network".to_owned())?;
    let target = format!("{address}:{port}");
    match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&target),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(format!("connect to {target} from the host: {err}")),
        Err(_) => Err(format!("connect to {target} from the host timed out")),
    }
}

/// A [`DockerError::ServiceUnhealthy`] with the service's last log lines.
async fn unhealthy(
    docker: &Docker,
    job: &str,
    running: &RunningService,
    reason: String,
) -> DockerError {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(LOG_LINES)
        .build();
    let mut logs = Vec::new();
    let mut stream = docker.logs(&running.container_id, Some(options));
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => logs.extend_from_slice(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    let logs = String::from_utf8_lossy(&logs).trim_end().to_owned();
    DockerError::ServiceUnhealthy {
        job: job.to_owned(),
        service: running.name.clone(),
        reason,
        logs: if logs.is_empty() {
            "(no output)".to_owned()
        } else {
            logs
        },
    }
}

/// `KEELSON_SERVICE_<NAME>_HOST`, `_PORT` (first port) and `_PORT_<port>` for each service.
pub(super) fn session_env(services: &[RunningService]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for service in services {
        let key: String = service
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        env.push((format!("KEELSON_SERVICE_{key}_HOST"), service.name.clone()));
        if let Some(first) = service.ports.first() {
            env.push((format!("KEELSON_SERVICE_{key}_PORT"), first.to_string()));
        }
        for port in &service.ports {
            env.push((
                format!("KEELSON_SERVICE_{key}_PORT_{port}"),
                port.to_string(),
            ));
        }
    }
    env
}
