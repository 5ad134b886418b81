//! The public REST API under `/api/v1`: projects, runs, pipeline jobs, logs, agents, tokens,
//! triggers, users, members and deployments. Every handler authenticates ([`Caller`]) and checks the role the
//! route table ([`crate::routes::ROUTES`]) documents.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use keelson_api::{
    AgentInfo, CreateAgentToken, CreateProject, CreateToken, CreateUser, CreatedToken,
    DeploymentInfo, LogLineInfo, ProjectInfo, Role, RunInfo, RunJobInfo, SetMember, StartRun,
    TokenInfo, TriggerInfo, TriggerSpec, UserInfo,
};
use keelson_store::{NewApiToken, Project, ProjectId, Run, RunId};
use serde::Deserialize;

use crate::auth::{Caller, hash_password, new_token, parse_role, token_hash};
use crate::convert::{deployment_info, log_info, project_info, run_info};
use crate::error::{Answer, Failure};
use crate::scheduler::{StartRequest, Started, start_run};
use crate::state::{AppState, LiveEvent};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Checks a project, user or token name: 1–64 letters, digits, `-`, `_` or `.`.
pub fn check_name(name: &str, what: &str) -> Answer<()> {
    check_name_up_to(name, what, 64)
}

/// Checks a name of at most `max` letters, digits, `-`, `_` or `.`, not starting with `.`.
pub fn check_name_up_to(name: &str, what: &str, max: usize) -> Answer<()> {
    let ok = !name.is_empty()
        && name.len() <= max
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Failure::invalid(format!(
            "{what} must be 1–{max} letters, digits, `-`, `_` or `.` (not starting with `.`)"
        )))
    }
}

/// The project named `name` if the caller has at least `min` on it (404 otherwise).
pub async fn project_for(
    state: &AppState,
    caller: &Caller,
    name: &str,
    min: Role,
) -> Answer<(Project, Role)> {
    let project = state
        .store()
        .project_by_name(name)
        .await?
        .ok_or_else(|| Failure::not_found(format!("no project named `{name}`")))?;
    let role = caller.require(state, &project, min).await?;
    Ok((project, role))
}

/// The run `id` and its project if the caller has at least `min` on the project.
pub async fn run_for(
    state: &AppState,
    caller: &Caller,
    id: i64,
    min: Role,
) -> Answer<(Run, Project)> {
    let run = state
        .store()
        .get_run(RunId(id))
        .await
        .map_err(|_| Failure::not_found(format!("no run {id}")))?;
    let project = state.store().get_project(run.project_id).await?;
    match caller.require(state, &project, min).await {
        Ok(_) => Ok((run, project)),
        // Do not reveal the run of a project the caller cannot see.
        Err(failure) if failure.code == "not_found" => {
            Err(Failure::not_found(format!("no run {id}")))
        }
        Err(failure) => Err(failure),
    }
}

/// `GET /api/v1/projects`: the projects the caller can see.
pub async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
) -> Answer<Json<Vec<ProjectInfo>>> {
    let mut visible = Vec::new();
    for project in state.store().list_projects().await? {
        if caller.role_on(&state, &project).await?.is_some() {
            visible.push(project_info(&project));
        }
    }
    Ok(Json(visible))
}

/// `POST /api/v1/projects` (server admins).
pub async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateProject>,
) -> Answer<(StatusCode, Json<ProjectInfo>)> {
    caller.require_server_admin()?;
    check_name(&body.name, "the project name")?;
    let repository = body.repository.trim();
    if repository.is_empty() || repository.starts_with('-') || repository.contains('\n') {
        return Err(Failure::invalid(
            "the repository must be a git URL or a local path",
        ));
    }
    let project = state
        .store()
        .create_project(&body.name, repository, state.now())
        .await?;
    tracing::info!(project = %project.name, by = %caller.user.name, "project created");
    Ok((StatusCode::CREATED, Json(project_info(&project))))
}

/// `GET /api/v1/projects/{project}`.
pub async fn get_project(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Json<ProjectInfo>> {
    let (project, _) = project_for(&state, &caller, &name, Role::Viewer).await?;
    Ok(Json(project_info(&project)))
}

/// Paging of run lists.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// At most this many (default 50, at most 500).
    pub limit: Option<u32>,
}

/// `GET /api/v1/projects/{project}/runs`.
pub async fn list_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ListQuery>,
) -> Answer<Json<Vec<RunInfo>>> {
    let (project, _) = project_for(&state, &caller, &name, Role::Viewer).await?;
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let runs = state.store().list_runs(project.id, limit).await?;
    Ok(Json(
        runs.iter()
            .map(|run| run_info(run, &project.name, &[]))
            .collect(),
    ))
}

/// Default number of deployments a list returns.
const DEFAULT_DEPLOYMENT_LIMIT: u32 = 50;

/// The query of a deployment list, checked.
#[derive(Debug, PartialEq, Eq)]
pub struct DeploymentQuery {
    /// Only deployments to this environment.
    pub environment: Option<String>,
    /// At most this many (1 to [`keelson_store::MAX_DEPLOYMENT_LIST`]).
    pub limit: u32,
}

impl DeploymentQuery {
    /// Parses `environment=` and `limit=`; anything else, a repeated parameter, an environment
    /// that is not a deploy name or a limit out of range is `400` saying which.
    pub fn parse(pairs: &[(String, String)]) -> Answer<DeploymentQuery> {
        let mut query = DeploymentQuery {
            environment: None,
            limit: DEFAULT_DEPLOYMENT_LIMIT,
        };
        let mut seen_limit = false;
        let max = keelson_store::MAX_DEPLOYMENT_LIST;
        for (name, value) in pairs {
            match name.as_str() {
                "environment" => {
                    if query.environment.is_some() {
                        return Err(Failure::invalid("`environment` is given more than once"));
                    }
                    if !keelson_pipeline::deploy_load::is_deploy_name(value) {
                        return Err(Failure::invalid(format!(
                            "`environment` must be an environment name (lowercase letters, \
                             digits and `-`, at most {} characters)",
                            keelson_pipeline::deploy_load::MAX_NAME_LEN
                        )));
                    }
                    query.environment = Some(value.clone());
                }
                "limit" => {
                    if seen_limit {
                        return Err(Failure::invalid("`limit` is given more than once"));
                    }
                    seen_limit = true;
                    query.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|limit| (1..=max).contains(limit))
                        .ok_or_else(|| {
                            Failure::invalid(format!(
                                "`limit` must be a whole number from 1 to {max}"
                            ))
                        })?;
                }
                other => {
                    return Err(Failure::invalid(format!(
                        "unknown query parameter `{other}` (expected `environment` or `limit`)"
                    )));
                }
            }
        }
        Ok(query)
    }
}

/// `GET /api/v1/projects/{project}/deployments`: newest first.
pub async fn list_deployments(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Answer<Json<Vec<DeploymentInfo>>> {
    let (project, _) = project_for(&state, &caller, &name, Role::Viewer).await?;
    let query = DeploymentQuery::parse(&pairs)?;
    let deployments = state
        .store()
        .list_deployments(project.id, query.environment.as_deref(), query.limit)
        .await?;
    let infos = deployments
        .into_iter()
        .map(|deployment| deployment_info(deployment, &project.name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(infos))
}

/// `POST /api/v1/projects/{project}/runs`: start a run by hand (developers).
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<StartRun>,
) -> Answer<(StatusCode, Json<RunInfo>)> {
    let (project, _) = project_for(&state, &caller, &name, Role::Developer).await?;
    if let Some(git_ref) = &body.git_ref
        && (git_ref.starts_with('-') || git_ref.is_empty())
    {
        return Err(Failure::invalid(
            "the ref must not be empty or start with `-`",
        ));
    }
    for key in body.inputs.keys() {
        if !keelson_pipeline::load::is_identifier(key) {
            return Err(Failure::invalid(format!(
                "input `{key}` is not a valid name"
            )));
        }
    }
    let started = start_run(
        &state,
        &project,
        StartRequest {
            trigger: "manual".into(),
            git_ref: body.git_ref,
            commit_sha: None,
            vars: body.inputs,
        },
    )
    .await?;
    match started {
        Started::Run(run) => {
            tracing::info!(project = %project.name, run = run.number, by = %caller.user.name, "run started");
            let jobs = state.store().list_pipeline_jobs(run.id).await?;
            Ok((
                StatusCode::CREATED,
                Json(run_info(&run, &project.name, &jobs)),
            ))
        }
        Started::Filtered { git_ref } => Err(Failure::conflict(format!(
            "the pipeline's `on:` filter does not take {git_ref}"
        ))),
    }
}

/// `GET /api/v1/runs/{run}`.
pub async fn get_run(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<Json<RunInfo>> {
    let (run, project) = run_for(&state, &caller, id, Role::Viewer).await?;
    let jobs = state.store().list_pipeline_jobs(run.id).await?;
    Ok(Json(run_info(&run, &project.name, &jobs)))
}

/// `GET /api/v1/runs/{run}/jobs`: the pipeline jobs (the DAG).
pub async fn run_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<Json<Vec<RunJobInfo>>> {
    let (run, project) = run_for(&state, &caller, id, Role::Viewer).await?;
    let jobs = state.store().list_pipeline_jobs(run.id).await?;
    Ok(Json(run_info(&run, &project.name, &jobs).jobs))
}

/// `POST /api/v1/runs/{run}/cancel` (developers).
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<Json<RunInfo>> {
    let (run, project) = run_for(&state, &caller, id, Role::Developer).await?;
    let now = state.now();
    if !run.status.is_terminal() {
        let reason = format!("cancelled by {}", caller.user.name);
        let outcomes = state.store().cancel_run(run.id, &reason, now).await?;
        for (job_id, outcome) in outcomes {
            if outcome == keelson_store::CancelOutcome::CancelledWhileQueued {
                let job = state.store().get_job(job_id).await?;
                crate::lifecycle::job_ended(&state, job_id, job.attempt).await?;
            }
        }
        tracing::info!(project = %project.name, run = run.number, by = %caller.user.name, "run cancel requested");
        state.publish(LiveEvent::RunChanged { run_id: run.id.0 });
    }
    let run = state.store().get_run(run.id).await?;
    let jobs = state.store().list_pipeline_jobs(run.id).await?;
    Ok(Json(run_info(&run, &project.name, &jobs)))
}

/// `POST /api/v1/runs/{run}/rerun` (developers): a new run of the same commit and inputs.
pub async fn rerun(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<(StatusCode, Json<RunInfo>)> {
    let (run, project) = run_for(&state, &caller, id, Role::Developer).await?;
    let Some(commit) = run.commit_sha.clone() else {
        return Err(Failure::conflict("the run has no commit to build again"));
    };
    let started = start_run(
        &state,
        &project,
        StartRequest {
            trigger: "rerun".into(),
            git_ref: Some(run.git_ref.clone().unwrap_or_else(|| commit.clone())),
            commit_sha: Some(commit),
            vars: run.vars.iter().cloned().collect(),
        },
    )
    .await?;
    let Started::Run(new_run) = started else {
        return Err(Failure::internal("a re-run was filtered"));
    };
    let jobs = state.store().list_pipeline_jobs(new_run.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(run_info(&new_run, &project.name, &jobs)),
    ))
}

/// Log query: which pipeline job, which attempt, from where.
#[derive(Debug, Deserialize)]
pub struct LogQuery {
    /// Only lines of this pipeline job.
    pub job: Option<String>,
    /// Only this attempt (default: all).
    pub attempt: Option<i64>,
    /// Lines after this sequence number (of the given attempt).
    pub after: Option<i64>,
    /// At most this many lines (default 10,000, at most 100,000).
    pub limit: Option<u32>,
}

/// The stored log lines of `run` matching `query`.
pub async fn read_run_log(
    state: &AppState,
    run: &Run,
    query: &LogQuery,
) -> Answer<Vec<LogLineInfo>> {
    let limit = query.limit.unwrap_or(10_000).clamp(1, 100_000);
    let mut out = Vec::new();
    for job in state.store().list_jobs(run.id).await? {
        let lines = state
            .store()
            .read_log(
                job.id,
                query.attempt,
                query.after.map_or(1, |after| after + 1),
                limit,
                state.blobs(),
            )
            .await?;
        out.extend(
            lines
                .into_iter()
                .filter(|line| query.job.is_none() || line.job == query.job)
                .map(log_info),
        );
    }
    out.truncate(limit as usize);
    Ok(out)
}

/// `GET /api/v1/runs/{run}/logs`.
pub async fn logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
    Query(query): Query<LogQuery>,
) -> Answer<Json<Vec<LogLineInfo>>> {
    let (run, _) = run_for(&state, &caller, id, Role::Viewer).await?;
    Ok(Json(read_run_log(&state, &run, &query).await?))
}

/// `GET /api/v1/agents` (any signed-in user).
pub async fn agents(
    State(state): State<AppState>,
    _caller: Caller,
) -> Answer<Json<Vec<AgentInfo>>> {
    let now = state.now();
    let ttl = state.tuning().lease_ttl.as_millis() as i64;
    Ok(Json(
        state
            .store()
            .list_agents()
            .await?
            .into_iter()
            .map(|agent| AgentInfo {
                connected: now - agent.last_seen <= ttl.max(35_000),
                name: agent.name,
                labels: agent.labels,
                version: agent.version,
                last_seen: agent.last_seen,
            })
            .collect(),
    ))
}

/// The answer to creating an agent token.
#[derive(Debug, serde::Serialize)]
pub struct CreatedAgentToken {
    /// Its id.
    pub id: i64,
    /// Its label.
    pub name: String,
    /// The secret, shown once.
    pub token: String,
}

/// `POST /api/v1/agent-tokens` (server admins).
pub async fn create_agent_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateAgentToken>,
) -> Answer<(StatusCode, Json<CreatedAgentToken>)> {
    caller.require_server_admin()?;
    check_name(&body.name, "the token name")?;
    let token = new_token("ka_");
    let stored = state
        .store()
        .create_agent_token(&body.name, &token_hash(&token), state.now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedAgentToken {
            id: stored.id.0,
            name: stored.name,
            token,
        }),
    ))
}

/// `DELETE /api/v1/agent-tokens/{id}` (server admins).
pub async fn revoke_agent_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<StatusCode> {
    caller.require_server_admin()?;
    if state
        .store()
        .revoke_agent_token(keelson_store::AgentTokenId(id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failure::not_found(format!("no agent token {id}")))
    }
}

fn token_info(
    state_projects: &[(ProjectId, String)],
    token: &keelson_store::ApiToken,
) -> TokenInfo {
    TokenInfo {
        id: token.id.0,
        name: token.name.clone(),
        project: token.project_id.and_then(|id| {
            state_projects
                .iter()
                .find(|(pid, _)| *pid == id)
                .map(|(_, name)| name.clone())
        }),
        max_role: token.max_role.as_deref().and_then(parse_role),
        created_at: token.created_at,
        expires_at: token.expires_at.unwrap_or(i64::MAX),
    }
}

async fn project_names(state: &AppState) -> Answer<Vec<(ProjectId, String)>> {
    Ok(state
        .store()
        .list_projects()
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect())
}

/// `GET /api/v1/tokens`: the caller's tokens.
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Answer<Json<Vec<TokenInfo>>> {
    let names = project_names(&state).await?;
    Ok(Json(
        state
            .store()
            .list_api_tokens(caller.user.id)
            .await?
            .iter()
            .map(|token| token_info(&names, token))
            .collect(),
    ))
}

/// `POST /api/v1/tokens`: a new token for the caller, never wider than the calling credential.
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateToken>,
) -> Answer<(StatusCode, Json<CreatedToken>)> {
    check_name(&body.name, "the token name")?;
    let lifetime = body.expires_in_secs.unwrap_or(30 * 24 * 3600);
    if lifetime == 0 || lifetime > 366 * 24 * 3600 {
        return Err(Failure::invalid(
            "expires_in_secs must be between 1 and one year",
        ));
    }
    // A token may not widen what the calling token allows.
    let (parent_project, parent_role) = match &caller.credential {
        crate::auth::Credential::Token(token) => (
            token.project_id,
            token.max_role.as_deref().and_then(parse_role),
        ),
        crate::auth::Credential::Session { .. } => (None, None),
    };
    let project_id = match &body.project {
        Some(name) => {
            let (project, _) = project_for(&state, &caller, name, Role::Viewer).await?;
            Some(project.id)
        }
        None => parent_project,
    };
    if parent_project.is_some() && project_id != parent_project {
        return Err(Failure::forbidden(
            "a project token cannot create tokens for other projects",
        ));
    }
    let max_role = match (body.max_role, parent_role) {
        (Some(wanted), Some(cap)) if wanted > cap => {
            return Err(Failure::forbidden(
                "a token cannot grant more than the token creating it",
            ));
        }
        (Some(wanted), _) => Some(wanted),
        (None, cap) => cap,
    };
    let token = new_token("kt_");
    let now = state.now();
    let stored = state
        .store()
        .create_api_token(
            &NewApiToken {
                user_id: caller.user.id,
                name: body.name.clone(),
                token_hash: token_hash(&token),
                project_id,
                max_role: max_role.map(|role| role.as_str().to_string()),
                expires_at: Some(now + (lifetime as i64) * 1000),
            },
            now,
        )
        .await?;
    let names = project_names(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: token_info(&names, &stored),
        }),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revoke one of the caller's tokens.
pub async fn delete_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<StatusCode> {
    if state
        .store()
        .delete_api_token(caller.user.id, keelson_store::ApiTokenId(id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failure::not_found(format!("no token {id}")))
    }
}

/// `GET /api/v1/me`.
pub async fn me(caller: Caller) -> Json<UserInfo> {
    Json(UserInfo {
        name: caller.user.name.clone(),
        server_admin: caller.user.server_admin,
    })
}

/// `POST /api/v1/users` (server admins).
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    Json(body): Json<CreateUser>,
) -> Answer<(StatusCode, Json<UserInfo>)> {
    caller.require_server_admin()?;
    check_name(&body.name, "the user name")?;
    if body.password.chars().count() < 12 || body.password.len() > 1024 {
        return Err(Failure::invalid(
            "the password must have 12 to 1024 characters",
        ));
    }
    let hash = hash_password(&body.password)?;
    let user = state
        .store()
        .create_user(&body.name, Some(&hash), body.server_admin, state.now())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(UserInfo {
            name: user.name,
            server_admin: user.server_admin,
        }),
    ))
}

/// `GET /api/v1/users` (server admins).
pub async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
) -> Answer<Json<Vec<UserInfo>>> {
    caller.require_server_admin()?;
    Ok(Json(
        state
            .store()
            .list_users()
            .await?
            .into_iter()
            .map(|user| UserInfo {
                name: user.name,
                server_admin: user.server_admin,
            })
            .collect(),
    ))
}

/// A member on the wire.
#[derive(Debug, serde::Serialize)]
pub struct MemberInfo {
    /// The user.
    pub user: String,
    /// The role.
    pub role: Role,
}

/// `GET /api/v1/projects/{project}/members` (viewers).
pub async fn list_members(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Json<Vec<MemberInfo>>> {
    let (project, _) = project_for(&state, &caller, &name, Role::Viewer).await?;
    Ok(Json(
        state
            .store()
            .list_members(project.id)
            .await?
            .into_iter()
            .filter_map(|(user, role)| {
                parse_role(&role).map(|role| MemberInfo {
                    user: user.name,
                    role,
                })
            })
            .collect(),
    ))
}

/// `PUT /api/v1/projects/{project}/members/{user}` (project admins).
pub async fn set_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
    Json(body): Json<SetMember>,
) -> Answer<StatusCode> {
    let (project, _) = project_for(&state, &caller, &name, Role::Admin).await?;
    let user = state
        .store()
        .user_by_name(&user)
        .await?
        .ok_or_else(|| Failure::not_found(format!("no user named `{user}`")))?;
    state
        .store()
        .set_member(project.id, user.id, body.role.as_str())
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/v1/projects/{project}/members/{user}` (project admins).
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, user)): Path<(String, String)>,
) -> Answer<StatusCode> {
    let (project, _) = project_for(&state, &caller, &name, Role::Admin).await?;
    let user = state
        .store()
        .user_by_name(&user)
        .await?
        .ok_or_else(|| Failure::not_found(format!("no user named `{user}`")))?;
    state.store().remove_member(project.id, user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn trigger_info(project: &str, trigger: &keelson_store::Trigger) -> Answer<TriggerInfo> {
    let spec: TriggerSpec = serde_json::from_str(&trigger.config_json)
        .map_err(|error| Failure::internal(format!("stored trigger {}: {error}", trigger.id)))?;
    Ok(TriggerInfo {
        id: trigger.id.0,
        project: project.to_string(),
        spec,
        created_at: trigger.created_at,
    })
}

/// `GET /api/v1/projects/{project}/triggers` (viewers).
pub async fn list_triggers(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Answer<Json<Vec<TriggerInfo>>> {
    let (project, _) = project_for(&state, &caller, &name, Role::Viewer).await?;
    let triggers = state.store().list_triggers(project.id).await?;
    Ok(Json(
        triggers
            .iter()
            .map(|t| trigger_info(&project.name, t))
            .collect::<Answer<_>>()?,
    ))
}

/// `POST /api/v1/projects/{project}/triggers` (maintainers).
pub async fn create_trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Json(spec): Json<TriggerSpec>,
) -> Answer<(StatusCode, Json<TriggerInfo>)> {
    let (project, _) = project_for(&state, &caller, &name, Role::Maintainer).await?;
    let (public, sealed) = match spec {
        TriggerSpec::Webhook { provider, secret } => {
            provider
                .parse::<crate::webhook::Provider>()
                .map_err(|_| Failure::invalid("provider must be github, gitlab or gitea"))?;
            let Some(secret) = secret.filter(|s| s.len() >= 16) else {
                return Err(Failure::invalid(
                    "a webhook trigger needs a `secret` of at least 16 characters",
                ));
            };
            (
                TriggerSpec::Webhook {
                    provider,
                    secret: None,
                },
                Some(state.secrets().seal(secret.as_bytes())),
            )
        }
        TriggerSpec::Poll {
            branches,
            interval_secs,
        } => {
            if interval_secs < 5 {
                return Err(Failure::invalid("interval_secs must be at least 5"));
            }
            if branches.is_empty() || branches.iter().any(|b| b.is_empty() || b.starts_with('-')) {
                return Err(Failure::invalid("branches must name at least one branch"));
            }
            (
                TriggerSpec::Poll {
                    branches,
                    interval_secs,
                },
                None,
            )
        }
        TriggerSpec::Cron {
            schedule,
            timezone,
            git_ref,
        } => {
            crate::cron::Schedule::parse(&schedule, timezone.as_deref())
                .map_err(|error| Failure::invalid(error.to_string()))?;
            (
                TriggerSpec::Cron {
                    schedule,
                    timezone,
                    git_ref,
                },
                None,
            )
        }
    };
    let kind = match &public {
        TriggerSpec::Webhook { .. } => "webhook",
        TriggerSpec::Poll { .. } => "poll",
        TriggerSpec::Cron { .. } => "cron",
    };
    let config = serde_json::to_string(&public).map_err(Failure::internal)?;
    let trigger = state
        .store()
        .create_trigger(project.id, kind, &config, sealed.as_deref(), state.now())
        .await?;
    if kind == "poll" {
        // The heads seen now are the baseline: what is already there is not built.
        if let Err(failure) = crate::triggers::poll_baseline(&state, &trigger).await {
            state.store().delete_trigger(project.id, trigger.id).await?;
            return Err(failure);
        }
    }
    Ok((
        StatusCode::CREATED,
        Json(trigger_info(&project.name, &trigger)?),
    ))
}

/// `DELETE /api/v1/projects/{project}/triggers/{id}` (maintainers).
pub async fn delete_trigger(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, i64)>,
) -> Answer<StatusCode> {
    let (project, _) = project_for(&state, &caller, &name, Role::Maintainer).await?;
    if state
        .store()
        .delete_trigger(project.id, keelson_store::TriggerId(id))
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Failure::not_found(format!("no trigger {id}")))
    }
}

/// The default lifetime of the bootstrap token.
pub const BOOTSTRAP_TOKEN_DAYS: i64 = 7;

/// Milliseconds in a day.
pub const fn days(n: i64) -> i64 {
    n * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Answer<DeploymentQuery> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        DeploymentQuery::parse(&pairs)
    }

    fn refused(query: &[(&str, &str)], says: &str) {
        let failure = parse(query).expect_err("refused");
        assert_eq!(failure.status, StatusCode::BAD_REQUEST, "{query:?}");
        assert_eq!(failure.code, "invalid_request");
        assert!(
            failure.message.contains(says),
            "{query:?}: `{}` should say `{says}`",
            failure.message
        );
    }

    #[test]
    fn deployment_queries_are_checked() {
        assert_eq!(
            parse(&[]).unwrap(),
            DeploymentQuery {
                environment: None,
                limit: DEFAULT_DEPLOYMENT_LIMIT
            }
        );
        assert_eq!(
            parse(&[("environment", "production"), ("limit", "1000")]).unwrap(),
            DeploymentQuery {
                environment: Some("production".into()),
                limit: 1000
            }
        );
        refused(&[("limit", "0")], "from 1 to 1000");
        refused(&[("limit", "1001")], "from 1 to 1000");
        refused(&[("limit", "-3")], "whole number");
        refused(&[("limit", "ten")], "whole number");
        refused(&[("limit", "5"), ("limit", "6")], "more than once");
        refused(&[("environment", "")], "environment name");
        refused(&[("environment", "Prod")], "environment name");
        refused(&[("environment", "a b")], "environment name");
        refused(
            &[("environment", "x'; DROP TABLE deployments")],
            "environment name",
        );
        refused(
            &[("environment", "a"), ("environment", "b")],
            "more than once",
        );
        refused(&[("env", "staging")], "unknown query parameter `env`");
    }
}
