//! Store values ↔ wire values.

use keelson_api::{JobState, LogLineInfo, LogStream, ProjectInfo, RunInfo, RunJobInfo};
use keelson_store::{PipelineJob, Project, Run, Status, StoredLogLine};

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
