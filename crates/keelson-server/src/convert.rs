//! Store values ↔ wire values.

use keelson_api::{
    DeploymentInfo, DeploymentRecord, DeploymentState, JobState, LogLineInfo, LogStream,
    ProjectInfo, RunInfo, RunJobInfo,
};
use keelson_store::{
    Deployment, JobId, NewDeployment, PipelineJob, Project, Run, Status, StoreError, StoredLogLine,
};

/// The wire state of a stored status.
pub fn state_of(status: Status) -> JobState {
    match status {
        Status::Queued => JobState::Queued,
        Status::Running => JobState::Running,
        Status::Succeeded => JobState::Succeeded,
        Status::Failed => JobState::Failed,
        Status::Cancelled => JobState::Cancelled,
        Status::Skipped => JobState::Skipped,
    }
}

/// The stored status of a wire state.
pub fn status_of(state: JobState) -> Status {
    match state {
        JobState::Queued => Status::Queued,
        JobState::Running => Status::Running,
        JobState::Succeeded => Status::Succeeded,
        JobState::Failed => Status::Failed,
        JobState::Cancelled => Status::Cancelled,
        JobState::Skipped => Status::Skipped,
    }
}

/// The stored stream of a wire stream.
pub fn store_stream(stream: LogStream) -> keelson_store::LogStream {
    match stream {
        LogStream::Stdout => keelson_store::LogStream::Stdout,
        LogStream::Stderr => keelson_store::LogStream::Stderr,
        LogStream::System => keelson_store::LogStream::System,
    }
}

/// The wire stream of a stored stream.
pub fn api_stream(stream: keelson_store::LogStream) -> LogStream {
    match stream {
        keelson_store::LogStream::Stdout => LogStream::Stdout,
        keelson_store::LogStream::Stderr => LogStream::Stderr,
        keelson_store::LogStream::System => LogStream::System,
    }
}

/// A project on the wire.
pub fn project_info(project: &Project) -> ProjectInfo {
    ProjectInfo {
        name: project.name.clone(),
        repository: project.repository.clone(),
        created_at: project.created_at,
    }
}

/// A run on the wire, with its pipeline jobs when given.
pub fn run_info(run: &Run, project: &str, jobs: &[PipelineJob]) -> RunInfo {
    RunInfo {
        id: run.id.0,
        project: project.to_string(),
        number: run.number,
        trigger: run.trigger.clone(),
        git_ref: run.git_ref.clone(),
        commit_sha: run.commit_sha.clone(),
        state: state_of(run.status),
        reason: run.status_reason.clone(),
        created_at: run.created_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        jobs: jobs
            .iter()
            .map(|job| RunJobInfo {
                name: job.name.clone(),
                needs: job.needs.clone(),
                state: state_of(job.status),
                reason: job.status_reason.clone(),
                started_at: job.started_at,
                finished_at: job.finished_at,
            })
            .collect(),
    }
}

/// A stored log line on the wire.
pub fn log_info(line: StoredLogLine) -> LogLineInfo {
    LogLineInfo {
        attempt: line.attempt,
        seq: line.seq,
        job: line.job,
        stream: api_stream(line.stream),
        text: line.text,
    }
}

/// The stored form of a deployment a pipeline job of `job_id`'s `attempt` reported.
/// [`StoreError::InvalidInput`] for a revision beyond the store's range.
pub fn new_deployment(
    job_id: JobId,
    attempt: i64,
    pipeline_job: &str,
    record: &DeploymentRecord,
) -> Result<NewDeployment, StoreError> {
    let revision = i64::try_from(record.revision).map_err(|_| {
        StoreError::InvalidInput(format!("revision {} is too large", record.revision))
    })?;
    Ok(NewDeployment {
        job_id,
        attempt,
        pipeline_job: pipeline_job.to_string(),
        environment: record.environment.clone(),
        service: record.service.clone(),
        revision,
        strategy: record.strategy.clone(),
        commit: record.commit.clone(),
        branch: record.branch.clone(),
        digest: record.digest.clone(),
        requested_by: record.requested_by.clone(),
        state: record.state.as_str().to_string(),
        reason: record.reason.clone(),
        started_at: record.started_at,
        finished_at: record.finished_at,
    })
}

/// A stored deployment on the wire. [`StoreError::Corrupt`] for a row the store's checks
/// should have kept out (an unknown state, a negative revision).
pub fn deployment_info(
    deployment: Deployment,
    project: &str,
) -> Result<DeploymentInfo, StoreError> {
    let state = DeploymentState::parse(&deployment.state).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "deployment {} has an unknown state `{}`",
            deployment.id, deployment.state
        ))
    })?;
    let revision = u64::try_from(deployment.revision).map_err(|_| {
        StoreError::Corrupt(format!(
            "deployment {} has a negative revision {}",
            deployment.id, deployment.revision
        ))
    })?;
    Ok(DeploymentInfo {
        id: deployment.id.0,
        project: project.to_string(),
        run_id: deployment.run_id.0,
        run_number: deployment.run_number,
        job: deployment.pipeline_job,
        attempt: deployment.attempt,
        deployment: DeploymentRecord {
            environment: deployment.environment,
            service: deployment.service,
            revision,
            strategy: deployment.strategy,
            commit: deployment.commit,
            branch: deployment.branch,
            digest: deployment.digest,
            requested_by: deployment.requested_by,
            state,
            reason: deployment.reason,
            started_at: deployment.started_at,
            finished_at: deployment.finished_at,
        },
        recorded_at: deployment.recorded_at,
    })
}

#[cfg(test)]
mod tests {
    use keelson_store::{DEPLOYMENT_STATES, DeploymentId, ProjectId, RunId};

    use super::*;

    /// The API's states and the store's are the same list, spelled the same.
    #[test]
    fn deployment_states_match_the_store() {
        let api: Vec<&str> = DeploymentState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(api, DEPLOYMENT_STATES.to_vec());
        for state in DeploymentState::ALL {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str());
        }
    }

    #[test]
    fn a_deployment_round_trips_from_the_wire_to_the_store_and_back() {
        let record = DeploymentRecord {
            environment: "production".into(),
            service: "web".into(),
            revision: 7,
            strategy: "canary".into(),
            commit: Some("abc123".into()),
            branch: Some("main".into()),
            digest: "sha256:00ff".into(),
            requested_by: "shop run #3".into(),
            state: DeploymentState::RolledBack,
            reason: Some("error rate 0.2 > 0.05".into()),
            started_at: 1_000,
            finished_at: Some(9_000),
        };
        let new = new_deployment(JobId(4), 2, "deploy-production", &record).unwrap();
        let stored = Deployment {
            id: DeploymentId(11),
            project_id: ProjectId(1),
            run_id: RunId(5),
            run_number: 3,
            job_id: new.job_id,
            attempt: new.attempt,
            pipeline_job: new.pipeline_job.clone(),
            environment: new.environment.clone(),
            service: new.service.clone(),
            revision: new.revision,
            strategy: new.strategy.clone(),
            commit: new.commit.clone(),
            branch: new.branch.clone(),
            digest: new.digest.clone(),
            requested_by: new.requested_by.clone(),
            state: new.state.clone(),
            reason: new.reason.clone(),
            started_at: new.started_at,
            finished_at: new.finished_at,
            recorded_at: 9_500,
        };
        let info = deployment_info(stored.clone(), "shop").unwrap();
        assert_eq!(info.deployment, record);
        assert_eq!(
            (info.id, info.run_id, info.run_number, info.attempt),
            (11, 5, 3, 2)
        );
        assert_eq!(info.job, "deploy-production");
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["state"], "rolled-back");
        assert_eq!(json["environment"], "production", "the record is flattened");

        let huge = DeploymentRecord {
            revision: u64::MAX,
            ..record
        };
        assert!(matches!(
            new_deployment(JobId(4), 2, "deploy", &huge),
            Err(StoreError::InvalidInput(_))
        ));
        let corrupt = Deployment {
            state: "exploded".into(),
            ..stored
        };
        assert!(matches!(
            deployment_info(corrupt, "shop"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
