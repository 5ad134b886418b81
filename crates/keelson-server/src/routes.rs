//! The route table: every route, who may call it, and the router built from it. The same table
//! produces the OpenAPI document and drives the authorisation-matrix test, so the documented
//! access and the enforced one cannot drift apart unnoticed.

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use serde_json::{Map, Value, json};

use crate::auth::Caller;
use crate::error::Answer;
use crate::metrics::Gauges;
use crate::state::AppState;
use crate::{agent_api, api, artifacts, hooks, sse};

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, no credentials.
    Open,
    /// A push webhook: the delivery's signature is the credential.
    Webhook,
    /// An agent registration token.
    Agent,
    /// Any signed-in user.
    User,
    /// At least this role on the route's project.
    Project(keelson_api::Role),
    /// A server administrator.
    ServerAdmin,
}

impl Access {
    /// How the route table documents it.
    pub fn describe(self) -> String {
        match self {
            Access::Open => "open".into(),
            Access::Webhook => "webhook signature".into(),
            Access::Agent => "agent token".into(),
            Access::User => "any user".into(),
            Access::Project(role) => format!("project {}", role.as_str()),
            Access::ServerAdmin => "server admin".into(),
        }
    }
}

/// One documented route.
#[derive(Clone, Copy, Debug)]
pub struct RouteDoc {
    /// HTTP method.
    pub method: &'static str,
    /// Path with `{param}`s.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What it does.
    pub summary: &'static str,
    /// Request body type, if any.
    pub request: Option<&'static str>,
    /// Success answer type (or `text`/`event-stream`).
    pub response: &'static str,
}

use keelson_api::Role::{Admin, Developer, Maintainer, Viewer};

macro_rules! route {
    ($method:literal, $path:literal, $access:expr, $summary:literal, $request:expr, $response:literal) => {
        RouteDoc {
            method: $method,
            path: $path,
            access: $access,
            summary: $summary,
            request: $request,
            response: $response,
        }
    };
}

/// Every API route.
pub const ROUTES: &[RouteDoc] = &[
    route!(
        "GET",
        "/health",
        Access::Open,
        "Liveness: 200 while the server runs.",
        None,
        "text"
    ),
    route!(
        "GET",
        "/metrics",
        Access::Open,
        "The server's metrics in Prometheus format.",
        None,
        "text"
    ),
    route!(
        "GET",
        "/api/v1/openapi.json",
        Access::User,
        "This document.",
        None,
        "object"
    ),
    route!(
        "GET",
        "/api/v1/me",
        Access::User,
        "The calling user.",
        None,
        "UserInfo"
    ),
    route!(
        "GET",
        "/api/v1/projects",
        Access::User,
        "Projects the caller can see.",
        None,
        "ProjectInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/projects",
        Access::ServerAdmin,
        "Create a project.",
        Some("CreateProject"),
        "ProjectInfo"
    ),
    route!(
        "GET",
        "/api/v1/projects/{project}",
        Access::Project(Viewer),
        "One project.",
        None,
        "ProjectInfo"
    ),
    route!(
        "GET",
        "/api/v1/projects/{project}/runs",
        Access::Project(Viewer),
        "A project's runs, newest first.",
        None,
        "RunInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/projects/{project}/runs",
        Access::Project(Developer),
        "Start a run (manual trigger with inputs).",
        Some("StartRun"),
        "RunInfo"
    ),
    route!(
        "GET",
        "/api/v1/projects/{project}/deployments",
        Access::Project(Viewer),
        "A project's deployments, newest first (`environment`, `limit`).",
        None,
        "DeploymentInfo[]"
    ),
    route!(
        "GET",
        "/api/v1/projects/{project}/triggers",
        Access::Project(Viewer),
        "A project's triggers (secrets omitted).",
        None,
        "TriggerInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/projects/{project}/triggers",
        Access::Project(Maintainer),
        "Add a webhook, poll or cron trigger.",
        Some("TriggerSpec"),
        "TriggerInfo"
    ),
    route!(
        "DELETE",
        "/api/v1/projects/{project}/triggers/{id}",
        Access::Project(Maintainer),
        "Remove a trigger.",
        None,
        "empty"
    ),
    route!(
        "GET",
        "/api/v1/projects/{project}/members",
        Access::Project(Viewer),
        "A project's members.",
        None,
        "MemberInfo[]"
    ),
    route!(
        "PUT",
        "/api/v1/projects/{project}/members/{user}",
        Access::Project(Admin),
        "Give a user a role on the project.",
        Some("SetMember"),
        "empty"
    ),
    route!(
        "DELETE",
        "/api/v1/projects/{project}/members/{user}",
        Access::Project(Admin),
        "Remove a user from the project.",
        None,
        "empty"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}",
        Access::Project(Viewer),
        "One run with its pipeline jobs.",
        None,
        "RunInfo"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}/jobs",
        Access::Project(Viewer),
        "A run's pipeline jobs (the DAG).",
        None,
        "RunJobInfo[]"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}/logs",
        Access::Project(Viewer),
        "A run's log lines (`job`, `attempt`, `after`, `limit`).",
        None,
        "LogLineInfo[]"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}/events",
        Access::Project(Viewer),
        "Live run state and log lines (Server-Sent Events): `run` (the run, with its jobs), \
         `log` (each line once, in order), and `end` after the run's final state was sent; on a \
         finished run, its state and log, then `end`.",
        None,
        "event-stream"
    ),
    route!(
        "POST",
        "/api/v1/runs/{run}/cancel",
        Access::Project(Developer),
        "Cancel a run.",
        None,
        "RunInfo"
    ),
    route!(
        "POST",
        "/api/v1/runs/{run}/rerun",
        Access::Project(Developer),
        "Run the same commit and inputs again.",
        None,
        "RunInfo"
    ),
    route!(
        "GET",
        "/api/v1/agents",
        Access::User,
        "Registered agents.",
        None,
        "AgentInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/agent-tokens",
        Access::ServerAdmin,
        "Create an agent registration token (shown once).",
        Some("CreateAgentToken"),
        "CreatedAgentToken"
    ),
    route!(
        "DELETE",
        "/api/v1/agent-tokens/{id}",
        Access::ServerAdmin,
        "Revoke an agent registration token.",
        None,
        "empty"
    ),
    route!(
        "GET",
        "/api/v1/tokens",
        Access::User,
        "The caller's API tokens.",
        None,
        "TokenInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/tokens",
        Access::User,
        "Create an API token (shown once; never wider than the caller's).",
        Some("CreateToken"),
        "CreatedToken"
    ),
    route!(
        "DELETE",
        "/api/v1/tokens/{id}",
        Access::User,
        "Revoke one of the caller's tokens.",
        None,
        "empty"
    ),
    route!(
        "GET",
        "/api/v1/users",
        Access::ServerAdmin,
        "Users.",
        None,
        "UserInfo[]"
    ),
    route!(
        "POST",
        "/api/v1/users",
        Access::ServerAdmin,
        "Create a user (password hashed with argon2id).",
        Some("CreateUser"),
        "UserInfo"
    ),
    route!(
        "POST",
        "/api/v1/agent/register",
        Access::Agent,
        "Agent: announce name and labels.",
        Some("RegisterAgent"),
        "AgentRegistered"
    ),
    route!(
        "POST",
        "/api/v1/agent/lease",
        Access::Agent,
        "Agent: long-poll for a job (200 Lease or 204).",
        Some("LeaseRequest"),
        "Lease"
    ),
    route!(
        "POST",
        "/api/v1/agent/jobs/{job}/heartbeat",
        Access::Agent,
        "Agent: extend the lease; learn of cancellation.",
        Some("Heartbeat"),
        "HeartbeatReply"
    ),
    route!(
        "POST",
        "/api/v1/agent/jobs/{job}/logs",
        Access::Agent,
        "Agent: append log lines (acknowledged, idempotent).",
        Some("LogBatch"),
        "LogAck"
    ),
    route!(
        "POST",
        "/api/v1/agent/jobs/{job}/progress",
        Access::Agent,
        "Agent: pipeline-job state changes.",
        Some("Progress"),
        "empty"
    ),
    route!(
        "POST",
        "/api/v1/agent/jobs/{job}/deployments",
        Access::Agent,
        "Agent: deployments a deploy job made (idempotent).",
        Some("DeploymentReport"),
        "empty"
    ),
    route!(
        "POST",
        "/api/v1/agent/jobs/{job}/complete",
        Access::Agent,
        "Agent: the job ended.",
        Some("Completion"),
        "empty"
    ),
    route!(
        "POST",
        "/hooks/{provider}/{project}",
        Access::Webhook,
        "Push webhook from GitHub, GitLab or Gitea/Forgejo.",
        Some("provider payload"),
        "object"
    ),
    route!(
        "PUT",
        "/api/v1/agent/jobs/{job}/artifacts",
        Access::Agent,
        "Agent: upload one artifact file (raw body; `attempt`, `job`, `path`, `sha256`, `mode`).",
        Some("file bytes"),
        "ArtifactInfo"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}/artifacts",
        Access::Project(Viewer),
        "A run's artifact files.",
        None,
        "ArtifactInfo[]"
    ),
    route!(
        "GET",
        "/api/v1/runs/{run}/artifacts/{id}",
        Access::Project(Viewer),
        "Download one artifact file.",
        None,
        "bytes"
    ),
];

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Answer<impl IntoResponse> {
    let now = state.now();
    let counts = state.store().job_counts().await?;
    let ttl = state.tuning().lease_ttl.as_millis() as i64;
    let agents = state.store().list_agents().await?;
    let gauges = Gauges {
        queued: counts
            .iter()
            .find(|(status, _)| *status == keelson_store::Status::Queued)
            .map_or(0, |(_, n)| *n),
        jobs_by_state: counts
            .iter()
            .map(|(status, n)| (status.as_str().to_string(), *n))
            .collect(),
        agents_connected: agents
            .iter()
            .filter(|agent| now - agent.last_seen <= ttl.max(35_000))
            .count() as i64,
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(&gauges),
    ))
}

/// The OpenAPI 3.1 document of [`ROUTES`].
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|part| part.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let security = match route.access {
            Access::Open | Access::Webhook => json!([]),
            _ => json!([{"bearer": []}, {"session": []}]),
        };
        let mut operation = json!({
            "summary": route.summary,
            "description": format!("Access: {}.", route.access.describe()),
            "parameters": parameters,
            "security": security,
            "responses": {
                "2XX": {"description": route.response},
                "default": {"description": "Error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}
            }
        });
        if let Some(request) = route.request {
            operation["requestBody"] = if request == "file bytes" {
                json!({"description": request, "required": true, "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}})
            } else {
                json!({"description": request, "required": true, "content": {"application/json": {"schema": {"type": "object", "title": request}}}})
            };
        }
        entry[route.method.to_ascii_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Keelson API", "version": "v1"},
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": crate::auth::SESSION_COOKIE}
            },
            "schemas": {
                "ApiError": {
                    "type": "object",
                    "required": ["code", "status", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "status": {"type": "integer"},
                        "message": {"type": "string"}
                    }
                }
            }
        }
    })
}

async fn openapi(_caller: Caller) -> axum::Json<Value> {
    axum::Json(openapi_document())
}

async fn not_found() -> crate::error::Failure {
    crate::error::Failure::not_found("no such route")
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/me", get(api::me))
        .route(
            "/api/v1/projects",
            get(api::list_projects).post(api::create_project),
        )
        .route("/api/v1/projects/{project}", get(api::get_project))
        .route(
            "/api/v1/projects/{project}/runs",
            get(api::list_runs).post(api::start),
        )
        .route(
            "/api/v1/projects/{project}/deployments",
            get(api::list_deployments),
        )
        .route(
            "/api/v1/projects/{project}/triggers",
            get(api::list_triggers).post(api::create_trigger),
        )
        .route(
            "/api/v1/projects/{project}/triggers/{id}",
            delete(api::delete_trigger),
        )
        .route("/api/v1/projects/{project}/members", get(api::list_members))
        .route(
            "/api/v1/projects/{project}/members/{user}",
            put(api::set_member).delete(api::remove_member),
        )
        .route("/api/v1/runs/{run}", get(api::get_run))
        .route("/api/v1/runs/{run}/jobs", get(api::run_jobs))
        .route("/api/v1/runs/{run}/logs", get(api::logs))
        .route("/api/v1/runs/{run}/events", get(sse::run_events))
        .route("/api/v1/runs/{run}/cancel", post(api::cancel))
        .route("/api/v1/runs/{run}/rerun", post(api::rerun))
        .route("/api/v1/agents", get(api::agents))
        .route("/api/v1/agent-tokens", post(api::create_agent_token))
        .route("/api/v1/agent-tokens/{id}", delete(api::revoke_agent_token))
        .route(
            "/api/v1/tokens",
            get(api::list_tokens).post(api::create_token),
        )
        .route("/api/v1/tokens/{id}", delete(api::delete_token))
        .route("/api/v1/users", get(api::list_users).post(api::create_user))
        .route("/api/v1/agent/register", post(agent_api::register))
        .route("/api/v1/agent/lease", post(agent_api::lease))
        .route(
            "/api/v1/agent/jobs/{job}/heartbeat",
            post(agent_api::heartbeat),
        )
        // Log batches are up to 1 MiB of text; JSON escaping can double it.
        .route(
            "/api/v1/agent/jobs/{job}/logs",
            post(agent_api::logs).layer(DefaultBodyLimit::max(8 << 20)),
        )
        .route(
            "/api/v1/agent/jobs/{job}/progress",
            post(agent_api::progress),
        )
        .route(
            "/api/v1/agent/jobs/{job}/deployments",
            post(agent_api::deployments),
        )
        .route(
            "/api/v1/agent/jobs/{job}/complete",
            post(agent_api::complete),
        )
        // Artifact bodies are streamed to disk by the handler, which enforces its own limit.
        .route("/api/v1/agent/jobs/{job}/artifacts", put(artifacts::upload))
        .route("/api/v1/runs/{run}/artifacts", get(artifacts::list))
        .route(
            "/api/v1/runs/{run}/artifacts/{id}",
            get(artifacts::download),
        )
        .route(
            "/hooks/{provider}/{project}",
            post(hooks::deliver).layer(DefaultBodyLimit::max(16 << 20)),
        )
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found);
    api.merge(crate::ui::router()).with_state(state)
}
