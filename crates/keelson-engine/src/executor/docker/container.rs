//! The job container and the job network: names, labels and the hardened container config.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, NetworkCreateRequest};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use super::cleanup::Resources;
use super::{
    CONTROL_IN_JOB, ContainerSpec, DEFAULT_CAPS, DockerError, JobInfo, KEEP_ALIVE, ROLE_LABEL,
    RUN_DIR_IN_JOB, SESSION_LABEL, WORKSPACE_IN_JOB, path_string,
};

/// Where the Docker socket is mounted in a job container that asked for it.
pub const DOCKER_SOCKET_IN_JOB: &str = "/var/run/docker.sock";

/// The job's labels plus the session label.
pub(super) fn labels(job_labels: &[(String, String)], session_id: &str) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = job_labels.iter().cloned().collect();
    labels.insert(SESSION_LABEL.to_owned(), session_id.to_owned());
    labels
}

/// `labels` plus [`ROLE_LABEL`]`=role`.
pub(super) fn with_role(labels: &HashMap<String, String>, role: &str) -> HashMap<String, String> {
    let mut labels = labels.clone();
    labels.insert(ROLE_LABEL.to_owned(), role.to_owned());
    labels
}

/// A job id as a Docker name part: `[a-zA-Z0-9_.-]` only, at most 40 characters.
pub(super) fn sanitize(job: &str) -> String {
    let cleaned: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let trimmed = cleaned.trim_matches(|c| c == '-' || c == '.' || c == '_');
    if trimmed.is_empty() {
        "job".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Creates the job's bridge network `prefix`; returns its name.
pub(super) async fn create_network(
    docker: &Docker,
    prefix: &str,
    labels: &HashMap<String, String>,
) -> Result<String, DockerError> {
    let request = NetworkCreateRequest {
        name: prefix.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    docker
        .create_network(request)
        .await
        .map_err(|e| DockerError::api(format!("create network {prefix}"), e))?;
    Ok(prefix.to_owned())
}

/// The hardening shared by job and service containers: no new privileges, all capabilities
/// dropped but [`DEFAULT_CAPS`] and `extra_caps`, `docker-init` as PID 1.
pub(super) fn hardened_host_config(extra_caps: &[String]) -> HostConfig {
    let mut caps: Vec<String> = DEFAULT_CAPS.iter().map(|c| (*c).to_owned()).collect();
    for cap in extra_caps {
        let cap = cap.trim().to_ascii_uppercase();
        let cap = cap.strip_prefix("CAP_").unwrap_or(&cap).to_owned();
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    HostConfig {
        init: Some(true),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: Some(caps),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        privileged: Some(false),
        ..Default::default()
    }
}

/// What the job container is made of.
pub(super) struct JobContainer<'a> {
    pub job: &'a JobInfo,
    pub spec: &'a ContainerSpec,
    pub name: String,
    /// `uid:gid`.
    pub user: &'a str,
    /// The job network, `None` for no network.
    pub network: Option<&'a str>,
    pub labels: &'a HashMap<String, String>,
    pub allow_privileged: bool,
}

impl JobContainer<'_> {
    /// The create request (also what tests inspect the effect of).
    pub fn body(&self) -> ContainerCreateBody {
        let spec = self.spec;
        let mut host = hardened_host_config(&spec.cap_add);
        let mut mounts = vec![
            bind(&path_string(&self.job.workspace), WORKSPACE_IN_JOB),
            bind(&path_string(&self.job.control_dir), CONTROL_IN_JOB),
        ];
        if spec.docker_socket && self.allow_privileged {
            mounts.push(bind(&host_docker_socket(), DOCKER_SOCKET_IN_JOB));
        }
        let mut tmpfs = HashMap::from([(
            RUN_DIR_IN_JOB.to_owned(),
            "rw,nosuid,nodev,noexec,size=1m,mode=1777".to_owned(),
        )]);
        if spec.read_only {
            tmpfs.insert("/tmp".to_owned(), "rw,nosuid,nodev,mode=1777".to_owned());
        }
        host.mounts = Some(mounts);
        host.tmpfs = Some(tmpfs);
        host.readonly_rootfs = Some(spec.read_only);
        host.privileged = Some(spec.privileged && self.allow_privileged);
        host.memory = spec.memory_bytes;
        host.memory_swap = spec.memory_bytes;
        host.nano_cpus = spec.cpus.map(|cpus| (cpus * 1e9).round() as i64);
        host.pids_limit = spec.pids_limit;
        host.network_mode = Some(self.network.unwrap_or("none").to_owned());
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            entrypoint: Some(vec!["sh".to_owned()]),
            cmd: Some(vec!["-c".to_owned(), KEEP_ALIVE.to_owned()]),
            user: Some(self.user.to_owned()),
            working_dir: Some(WORKSPACE_IN_JOB.to_owned()),
            labels: Some(with_role(self.labels, "job")),
            host_config: Some(host),
            ..Default::default()
        }
    }
}

/// Creates and starts the job container; returns its id (recorded in `resources` as soon as it
/// exists).
pub(super) async fn start_job_container(
    docker: &Docker,
    container: &JobContainer<'_>,
    resources: Option<&mut Resources>,
) -> Result<String, DockerError> {
    let options = CreateContainerOptionsBuilder::default()
        .name(&container.name)
        .build();
    let created = docker
        .create_container(Some(options), container.body())
        .await
        .map_err(|e| DockerError::api(format!("create job container {}", container.name), e))?;
    if let Some(resources) = resources {
        resources.containers.push(created.id.clone());
    }
    docker
        .start_container(&created.id, None)
        .await
        .map_err(|e| DockerError::api(format!("start job container {}", container.name), e))?;
    Ok(created.id)
}

fn bind(source: &str, target: &str) -> Mount {
    Mount {
        source: Some(source.to_owned()),
        target: Some(target.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Default::default()
    }
}

/// The engine's socket on its host: the path of a `unix://` `DOCKER_HOST`, else the default.
fn host_docker_socket() -> String {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| DOCKER_SOCKET_IN_JOB.to_owned())
}
