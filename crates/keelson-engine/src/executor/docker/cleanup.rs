//! Removing what a session created (containers, network) and checking nothing is left.

use std::collections::HashMap;
use std::future::Future;

use bollard::Docker;
use bollard::errors::Error;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder,
};

use super::{DockerError, SESSION_LABEL};

/// Everything a session created, to remove at the end.
#[derive(Debug)]
pub(super) struct Resources {
    pub session_id: String,
    /// Container ids, in creation order (removed in reverse).
    pub containers: Vec<String>,
    pub network: Option<String>,
}

impl Resources {
    pub fn new(session_id: &str) -> Self {
        Resources {
            session_id: session_id.to_owned(),
            containers: Vec::new(),
            network: None,
        }
    }

    /// Force-removes the containers (with anonymous volumes) and the network, then checks that
    /// nothing labelled with the session remains. Tries every removal even if one fails.
    pub async fn remove(self, docker: &Docker, job: &str) -> Result<(), DockerError> {
        let mut first_error = None;
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        for id in self.containers.iter().rev() {
            if let Err(err) = docker.remove_container(id, Some(options.clone())).await
                && !is_not_found(&err)
            {
                first_error.get_or_insert(DockerError::api(format!("remove container {id}"), err));
            }
        }
        if let Some(network) = &self.network
            && let Err(err) = docker.remove_network(network).await
            && !is_not_found(&err)
        {
            first_error.get_or_insert(DockerError::api(format!("remove network {network}"), err));
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        let left = labelled(docker, &self.session_id).await?;
        if left.is_empty() {
            Ok(())
        } else {
            Err(DockerError::Leftovers {
                job: job.to_owned(),
                left: left.join(", "),
            })
        }
    }

    /// Starts [`Resources::remove`] without waiting for it (best effort, errors are dropped), on
    /// a new thread with its own runtime and its own engine connection, so that it also runs
    /// when the caller's runtime is shutting down (e.g. a panicking test). It is lost if the
    /// process exits first.
    pub fn remove_in_background(self, job: String) {
        std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(docker) = super::connect_engine().await else {
                    return;
                };
                let _ = self.remove(&docker, &job).await;
            });
        });
    }
}

/// What one session (a job's, or a host job's services) owns: removed by [`Cleanup::finish`], or
/// in the background ([`Resources::remove_in_background`]) when dropped without finishing.
#[derive(Debug)]
pub(super) struct Cleanup {
    docker: Docker,
    job: String,
    session_id: String,
    /// `None` once handed to `finish`.
    resources: Option<Resources>,
}

impl Cleanup {
    /// The engine connection this cleanup uses.
    pub(super) fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn new(docker: &Docker, job: &str, session_id: &str) -> Self {
        Cleanup {
            docker: docker.clone(),
            job: job.to_owned(),
            session_id: session_id.to_owned(),
            resources: Some(Resources::new(session_id)),
        }
    }

    /// The value of [`SESSION_LABEL`] on everything the session creates.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Where to record what is created (`None` once finished).
    pub fn resources(&mut self) -> Option<&mut Resources> {
        self.resources.as_mut()
    }

    /// Removes everything now and checks nothing is left (see [`Resources::remove`]); later
    /// calls, and the drop, do nothing.
    pub fn finish(&mut self) -> impl Future<Output = Result<(), DockerError>> + Send + 'static {
        let resources = self.resources.take();
        let docker = self.docker.clone();
        let job = self.job.clone();
        async move {
            match resources {
                Some(resources) => resources.remove(&docker, &job).await,
                None => Ok(()),
            }
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(resources) = self.resources.take() {
            resources.remove_in_background(self.job.clone());
        }
    }
}

/// Containers (also stopped ones), networks and volumes carrying `SESSION_LABEL=session_id`,
/// described for a message (`container <name>`, …).
pub(super) async fn labelled(
    docker: &Docker,
    session_id: &str,
) -> Result<Vec<String>, DockerError> {
    let filter = format!("{SESSION_LABEL}={session_id}");
    let filters = HashMap::from([("label", vec![filter.as_str()])]);
    let mut left = Vec::new();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| DockerError::api("list containers", e))?;
    for container in containers {
        let name = container
            .names
            .and_then(|names| names.into_iter().next())
            .or(container.id)
            .unwrap_or_default();
        left.push(format!("container {name}"));
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| DockerError::api("list networks", e))?;
    for network in networks {
        left.push(format!("network {}", network.name.unwrap_or_default()));
    }
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| DockerError::api("list volumes", e))?;
    for volume in volumes.volumes.unwrap_or_default() {
        left.push(format!("volume {}", volume.name));
    }
    Ok(left)
}

/// A 404 from the engine (already gone).
pub(super) fn is_not_found(err: &Error) -> bool {
    matches!(
        err,
        Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
