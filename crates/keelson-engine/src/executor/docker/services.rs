//! Service containers (`services:`) on the job network: starting them, waiting for them to be
//! healthy, and describing them to steps. For a host job ([`Reach::Localhost`]) their ports are
//! published on 127.0.0.1 and everything (TCP probes, the env) uses the host ports.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{
    ContainerInspectResponse, EndpointSettings, HealthStatusEnum, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
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

/// The address services publish their ports on for a host job.
pub(super) const LOCALHOST: &str = "127.0.0.1";
/// After a TCP connect through a published port, how long the connection must stay open (or
/// send data) to count: Docker's userland proxy accepts on the host port even when nothing
/// listens in the container yet, and then closes the connection at once.
const PROXY_SETTLE: Duration = Duration::from_millis(300);

/// Who uses the services, hence how they are reached.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reach<'a> {
    /// A job container on the same network: by name and container port. TCP probes run
    /// `nc -z` in the job container (as `user`).
    JobContainer { id: &'a str, user: &'a str },
    /// A job on the host: ports published on [`LOCALHOST`] (random host ports); TCP probes
    /// connect from this host to them.
    Localhost,
}

/// A started service.
#[derive(Debug)]
pub(super) struct RunningService {
    pub name: String,
    pub container_id: String,
    pub ports: Vec<u16>,
    /// For a host job: container port → host port on [`LOCALHOST`], read back once the
    /// container runs ([`wait_healthy`]); `None` for a container job.
    pub host_ports: Option<HashMap<u16, u16>>,
    /// Probe TCP from this host (the job image has no usable `nc`).
    tcp_from_host: bool,
}

/// Container ports published on [`LOCALHOST`] for a host job: the service's ports plus the port
/// of a TCP health check (so that it can be probed from the host; it is not in the env unless
/// listed in `ports`).
fn published_ports(service: &ServiceSpec) -> Vec<u16> {
    let mut ports = service.ports.clone();
    if let Some(HealthCheck::Tcp(port)) = service.health {
        ports.push(port);
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Creates and starts every service in `services` on `network` (see [`start`]), in order.
pub(super) async fn start_all(
    docker: &Docker,
    services: &[ServiceSpec],
    prefix: &str,
    network: &str,
    labels: &HashMap<String, String>,
    publish: bool,
    mut resources: Option<&mut Resources>,
) -> Result<Vec<RunningService>, DockerError> {
    let mut running = Vec::with_capacity(services.len());
    for service in services {
        let started = start(
            docker,
            service,
            prefix,
            network,
            labels,
            publish,
            resources.as_deref_mut(),
        )
        .await?;
        running.push(started);
    }
    Ok(running)
}

/// Creates and starts `service` on `network` with alias = its name; with `publish` (a host
/// job), its [`published_ports`] are bound to random ports on [`LOCALHOST`].
pub(super) async fn start(
    docker: &Docker,
    service: &ServiceSpec,
    prefix: &str,
    network: &str,
    labels: &HashMap<String, String>,
    publish: bool,
    resources: Option<&mut Resources>,
) -> Result<RunningService, DockerError> {
    let name = format!("{prefix}-svc-{}", sanitize(&service.name));
    let mut host = hardened_host_config(&[]);
    host.network_mode = Some(network.to_owned());
    let mut exposed_ports = None;
    if publish {
        let ports = published_ports(service);
        let binding = PortBinding {
            host_ip: Some(LOCALHOST.to_owned()),
            host_port: Some(String::new()),
        };
        host.port_bindings = Some(
            ports
                .iter()
                .map(|port| (port_key(*port), Some(vec![binding.clone()])))
                .collect(),
        );
        exposed_ports = Some(ports.iter().map(|port| port_key(*port)).collect());
    }
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
        exposed_ports,
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
        host_ports: publish.then(HashMap::new),
        tcp_from_host: false,
    })
}

/// Waits for each service in turn (see [`wait_healthy`]); `running` is in the order of
/// `services`.
pub(super) async fn wait_all_healthy(
    docker: &Docker,
    job: &str,
    services: &[ServiceSpec],
    running: &mut [RunningService],
    reach: Reach<'_>,
    timeout: Duration,
) -> Result<(), DockerError> {
    for (service, running) in services.iter().zip(running) {
        wait_healthy(docker, job, service, running, reach, timeout).await?;
    }
    Ok(())
}

/// Waits until `service` passes its health check, at most `timeout`. For a host job, first reads
/// back the host ports its ports were published on.
pub(super) async fn wait_healthy(
    docker: &Docker,
    job: &str,
    service: &ServiceSpec,
    running: &mut RunningService,
    reach: Reach<'_>,
    timeout: Duration,
) -> Result<(), DockerError> {
    let deadline = Instant::now() + timeout;
    let mut last_problem = String::from("no probe finished");
    loop {
        let mut inspect = docker
            .inspect_container(&running.container_id, None)
            .await
            .map_err(|e| DockerError::api(format!("inspect service {}", service.name), e))?;
        let state = inspect.state.take().unwrap_or_default();
        if state.running != Some(true) {
            let reason = format!("it exited (code {})", state.exit_code.unwrap_or(-1));
            return Err(unhealthy(docker, job, running, reason).await);
        }
        if running.host_ports.as_ref().is_some_and(HashMap::is_empty) {
            match read_host_ports(&inspect, &published_ports(service)) {
                Ok(ports) => running.host_ports = Some(ports),
                Err(reason) => return Err(unhealthy(docker, job, running, reason).await),
            }
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
                let probe = match reach {
                    Reach::JobContainer { id, user } => {
                        probe_tcp(docker, running, id, user, *port).await
                    }
                    Reach::Localhost => probe_published(running, *port).await,
                };
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

/// Container port → host port on [`LOCALHOST`] for each of `ports`, from a running container.
fn read_host_ports(
    inspect: &ContainerInspectResponse,
    ports: &[u16],
) -> Result<HashMap<u16, u16>, String> {
    let map = inspect
        .network_settings
        .as_ref()
        .and_then(|settings| settings.ports.as_ref());
    let mut host_ports = HashMap::new();
    for port in ports {
        let host_port = map
            .and_then(|map| map.get(&port_key(*port)))
            .and_then(Option::as_ref)
            .and_then(|bindings| {
                bindings
                    .iter()
                    .filter(|b| b.host_ip.as_deref().is_none_or(|ip| ip == LOCALHOST))
                    .find_map(|b| b.host_port.as_deref()?.parse::<u16>().ok())
            })
            .ok_or_else(|| format!("the engine reports no host port for its port {port}"))?;
        host_ports.insert(*port, host_port);
    }
    Ok(host_ports)
}

/// One TCP probe of a host job's service: a connect from this host to the port published on
/// [`LOCALHOST`], which must then stay open (or send data) for [`PROXY_SETTLE`].
async fn probe_published(running: &RunningService, port: u16) -> Result<(), String> {
    let host_port = running
        .host_ports
        .as_ref()
        .and_then(|ports| ports.get(&port))
        .ok_or_else(|| format!("port {port} is not published"))?;
    let target = format!("{LOCALHOST}:{host_port}");
    let mut stream = match tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&target),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Err(format!("connect to {target} (port {port}): {err}")),
        Err(_) => return Err(format!("connect to {target} (port {port}) timed out")),
    };
    let mut byte = [0_u8; 1];
    match tokio::time::timeout(PROXY_SETTLE, stream.read(&mut byte)).await {
        // Still open and silent, or talking: something accepted it in the container.
        Err(_) | Ok(Ok(1..)) => Ok(()),
        Ok(Ok(0)) => Err(format!(
            "{target} (port {port}) closed the connection at once (nothing listening yet)"
        )),
        Ok(Err(err)) => Err(format!("{target} (port {port}): {err}")),
    }
}

/// The last [`LOG_LINES`] lines a container wrote (stdout and stderr), or "" if none.
async fn tail_logs(docker: &Docker, container_id: &str) -> String {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(LOG_LINES)
        .build();
    let mut logs = Vec::new();
    let mut stream = docker.logs(container_id, Some(options));
    while let Some(Ok(frame)) = stream.next().await {
        match frame {
            LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::Console { message } => logs.extend_from_slice(&message),
            LogOutput::StdIn { .. } => {}
        }
    }
    String::from_utf8_lossy(&logs).trim_end().to_owned()
}

/// Each service's name and last log lines (for a failed job's log).
pub(super) async fn recent_logs(
    docker: &Docker,
    services: &[RunningService],
) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for service in services {
        all.push((
            service.name.clone(),
            tail_logs(docker, &service.container_id).await,
        ));
    }
    all
}

/// A [`DockerError::ServiceUnhealthy`] with the service's last log lines.
async fn unhealthy(
    docker: &Docker,
    job: &str,
    running: &RunningService,
    reason: String,
) -> DockerError {
    let logs = tail_logs(docker, &running.container_id).await;
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

/// `KEELSON_SERVICE_<NAME>_HOST`, `_PORT` (first port) and `_PORT_<port>` for each service: the
/// name and the container ports, or for a host job [`LOCALHOST`] and the host ports.
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
        let host = match &service.host_ports {
            Some(_) => LOCALHOST.to_owned(),
            None => service.name.clone(),
        };
        // The port a step connects to: the host port for a host job.
        let reached = |port: &u16| match &service.host_ports {
            Some(host_ports) => host_ports.get(port).copied(),
            None => Some(*port),
        };
        env.push((format!("KEELSON_SERVICE_{key}_HOST"), host));
        if let Some(first) = service.ports.first().and_then(reached) {
            env.push((format!("KEELSON_SERVICE_{key}_PORT"), first.to_string()));
        }
        for port in &service.ports {
            if let Some(reached) = reached(port) {
                env.push((
                    format!("KEELSON_SERVICE_{key}_PORT_{port}"),
                    reached.to_string(),
                ));
            }
        }
    }
    env
}
