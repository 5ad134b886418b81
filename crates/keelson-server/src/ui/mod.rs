//! The web UI: server-rendered pages (askama templates in `templates/`, one stylesheet and one
//! small script in `static/`, both embedded in the binary).
//!
//! Pages: `/login`, `/` (projects), `/projects/{name}` (runs, "Run now", the latest deployment
//! of each environment and service), `/projects/{name}/deployments` (deployment history, optional
//! `?environment=`), `/runs/{id}` (header, job DAG, log with ANSI colours, live updates, re-run /
//! cancel), `/agents`. Form posts:
//! `/login`, `/logout`, `/projects/{name}/run`, `/runs/{id}/cancel`, `/runs/{id}/rerun`.
//!
//! Invariants:
//! - Every page but `/login` and `/static/*` needs a caller (session cookie or bearer token);
//!   without one a page redirects to `/login`. Roles are checked exactly as by the API: the form
//!   posts call the API's handlers ([`crate::api`]) with the same caller, and the pages use the
//!   API's project lookup ([`crate::api::project_for`]) and query parsing (e.g.
//!   [`crate::api::DeploymentQuery`]), so a page answers the same 404 / 400 as its API route.
//! - Every form post that changes state carries the session's CSRF token (`_csrf`), checked with
//!   [`Caller::check_csrf_form`] before anything happens; posts whose `Origin` names another host
//!   are refused too. The login form has no session yet: it relies on the `Origin` check and on
//!   the session cookie being `SameSite=Strict`.
//! - Every interpolated value is HTML-escaped (askama's default); log lines go through
//!   [`ansi::to_html`], which escapes them itself. The pages' `Content-Security-Policy` allows
//!   scripts, styles and connections only from the server itself.
//! - Failed logins all answer the same message after the same minimal delay, and an unknown
//!   user costs the same password check as a known one.
//! - The session cookie is `HttpOnly; SameSite=Strict; Path=/` and `Secure`, except for a
//!   request over plain HTTP (no `X-Forwarded-Proto: https`) to a loopback host, where a browser
//!   would not send a `Secure` cookie back.

pub mod ansi;
pub mod dag;
pub mod view;

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use askama::Template;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use keelson_api::{AgentInfo, Role, StartRun};
use serde::Deserialize;

use crate::api::{DeploymentQuery, LogQuery, read_run_log, run_for};
use crate::auth::{self, Caller, SESSION_COOKIE, csrf_token, new_token, token_hash};
use crate::convert::{deployment_info, run_info};
use crate::error::{Answer, Failure};
use crate::state::AppState;
use view::{DeploymentView, JobView, LineView, RunView, iso_utc};

/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Every failed login answers no sooner than this after the password check.
pub const FAILED_LOGIN_DELAY: Duration = Duration::from_millis(300);
/// The most log lines the run page renders (the API pages through the rest).
pub const MAX_PAGE_LOG_LINES: u32 = 10_000;
/// The most deployments the deployments page lists (newest first).
pub const MAX_PAGE_DEPLOYMENTS: u32 = 200;

const STYLESHEET: &str = include_str!("../../static/ui.css");
const RUN_SCRIPT: &str = include_str!("../../static/run.js");
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The UI's routes (merged into the application by [`crate::routes::router`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(projects_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/projects/{project}", get(project_page))
        .route("/projects/{project}/run", post(run_now))
        .route("/projects/{project}/deployments", get(deployments_page))
        .route("/runs/{run}", get(run_page))
        .route("/runs/{run}/cancel", post(cancel))
        .route("/runs/{run}/rerun", post(rerun))
        .route("/agents", get(agents_page))
        .layer(axum::middleware::map_response(page_headers))
        .route("/static/ui.css", get(stylesheet))
        .route("/static/run.js", get(run_script))
}

async fn page_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn stylesheet() -> Response {
    asset("text/css; charset=utf-8", STYLESHEET)
}

async fn run_script() -> Response {
    asset("text/javascript; charset=utf-8", RUN_SCRIPT)
}

// ----- errors and callers -----

/// A failed page request, answered as an HTML page with the failure's status and message.
#[derive(Debug)]
pub struct PageError(pub Failure);

impl From<Failure> for PageError {
    fn from(failure: Failure) -> PageError {
        PageError(failure)
    }
}

impl From<keelson_store::StoreError> for PageError {
    fn from(error: keelson_store::StoreError) -> PageError {
        PageError(error.into())
    }
}

impl From<askama::Error> for PageError {
    fn from(error: askama::Error) -> PageError {
        PageError(Failure::internal(format!("rendering a page: {error}")))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorTemplate {
    layout: Layout,
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let PageError(failure) = self;
        let page = ErrorTemplate {
            layout: Layout::anonymous("Error"),
            status: failure.status.as_u16(),
            reason: failure
                .status
                .canonical_reason()
                .unwrap_or("Error")
                .to_string(),
            message: failure.message.clone(),
        };
        match page.render() {
            Ok(html) => (failure.status, Html(html)).into_response(),
            Err(_) => failure.into_response(),
        }
    }
}

type Page<T = Response> = Result<T, PageError>;

/// The caller of a page: like [`Caller`], but a request without valid credentials is redirected
/// to the login page (coming back to the page after logging in) instead of answered 401.
pub struct PageCaller(pub Caller);

impl FromRequestParts<AppState> for PageCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<PageCaller, Response> {
        match auth::authenticate(state, &parts.method, &parts.headers).await {
            Ok(caller) => Ok(PageCaller(caller)),
            Err(failure) if failure.status == StatusCode::UNAUTHORIZED => {
                let back = (parts.method == axum::http::Method::GET).then_some(&parts.uri);
                Err(Redirect::to(&login_address(back)).into_response())
            }
            Err(failure) => Err(PageError(failure).into_response()),
        }
    }
}

fn login_address(back: Option<&Uri>) -> String {
    match back.and_then(Uri::path_and_query) {
        Some(target) if target.as_str() != "/" => {
            format!("/login?next={}", percent_encode(target.as_str()))
        }
        _ => "/login".to_string(),
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Where to go after logging in: a local path only (never another site), else `/`.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && next.len() <= 1024
                && !next.chars().any(|c| c.is_control() || c == '\\') =>
        {
            next.to_string()
        }
        _ => "/".to_string(),
    }
}

/// Refuses a form post whose `Origin` header names a different host than the request's.
fn check_origin(headers: &HeaderMap) -> Answer<()> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|host| host.to_str().ok())
        .unwrap_or_default();
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    if origin_host.is_some_and(|origin_host| origin_host.eq_ignore_ascii_case(host)) {
        Ok(())
    } else {
        Err(Failure::forbidden("this form was posted from another site"))
    }
}

/// The frame of every page: title, who is logged in, the CSRF token for the logout form.
pub struct Layout {
    title: String,
    user: Option<String>,
    csrf: String,
}

impl Layout {
    fn anonymous(title: &str) -> Layout {
        Layout {
            title: title.to_string(),
            user: None,
            csrf: String::new(),
        }
    }

    fn for_caller(title: impl Into<String>, caller: &Caller) -> Layout {
        Layout {
            title: title.into(),
            user: Some(caller.user.name.clone()),
            csrf: caller.csrf().unwrap_or_default().to_string(),
        }
    }
}

/// A form post carrying only the CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    /// The session's CSRF token.
    #[serde(rename = "_csrf", default)]
    pub csrf: String,
}

fn form<T>(form: Result<Form<T>, FormRejection>) -> Answer<T> {
    form.map(|Form(value)| value)
        .map_err(|rejection| Failure::invalid(format!("malformed form: {}", rejection.body_text())))
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

// ----- login and logout -----

#[derive(Template)]
#[template(path = "login.html")]
struct LoginTemplate {
    layout: Layout,
    next: String,
    name: String,
    error: Option<String>,
    insecure_transport: bool,
}

/// `?next=` of the login page.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Where to go after logging in (a local path).
    pub next: Option<String>,
}

/// The login form's fields.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// The user name.
    #[serde(default)]
    pub name: String,
    /// The password.
    #[serde(default)]
    pub password: String,
    /// Where to go afterwards.
    #[serde(default)]
    pub next: Option<String>,
}

/// Whether the request reached us over TLS (as told by a reverse proxy's `X-Forwarded-Proto`;
/// the server itself speaks plain HTTP).
fn over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Whether the `Host` the browser used is a loopback name or address.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the session cookie gets `Secure` (see the module invariants).
fn secure_cookie(headers: &HeaderMap) -> bool {
    over_https(headers) || !loopback_host(headers)
}

fn session_cookie(value: &str, max_age_secs: u64, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_secs}{}",
        if secure { "; Secure" } else { "" }
    )
}

async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<LoginQuery>,
) -> Page {
    let next = safe_next(query.next.as_deref());
    if auth::authenticate(&state, &axum::http::Method::GET, &headers)
        .await
        .is_ok()
    {
        return Ok(see_other(&next));
    }
    let page = LoginTemplate {
        layout: Layout::anonymous("Log in"),
        next,
        name: String::new(),
        error: None,
        insecure_transport: !over_https(&headers) && !loopback_host(&headers),
    };
    Ok(Html(page.render()?).into_response())
}

/// A password hash to check against when the user does not exist, so both cost the same.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        auth::hash_password(&new_token("decoy_")).unwrap_or_else(|_| String::from("$argon2id$"))
    })
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    submitted: Result<Form<LoginForm>, FormRejection>,
) -> Page {
    check_origin(&headers)?;
    let submitted = form(submitted)?;
    let next = safe_next(submitted.next.as_deref());
    let user = if submitted.name.is_empty() || submitted.name.len() > 64 {
        None
    } else {
        state.store().user_by_name(&submitted.name).await?
    };
    let stored_hash = user.as_ref().and_then(|user| user.password_hash.clone());
    let password = submitted.password;
    let password_ok = password.len() <= 1024
        && tokio::task::spawn_blocking(move || {
            let hash = stored_hash.as_deref().unwrap_or_else(|| decoy_hash());
            auth::verify_password(&password, hash)
        })
        .await
        .unwrap_or(false);
    let user = match user {
        Some(user) if password_ok && user.password_hash.is_some() => user,
        _ => {
            state.metrics().auth_failure("login");
            tokio::time::sleep(FAILED_LOGIN_DELAY).await;
            let page = LoginTemplate {
                layout: Layout::anonymous("Log in"),
                next,
                name: submitted.name,
                error: Some("Wrong user name or password.".to_string()),
                insecure_transport: !over_https(&headers) && !loopback_host(&headers),
            };
            return Ok((StatusCode::UNAUTHORIZED, Html(page.render()?)).into_response());
        }
    };
    let token = new_token("ks_");
    let csrf = csrf_token(state.csrf_key(), &token);
    let now = state.now();
    let lifetime_ms = SESSION_LIFETIME.as_millis() as i64;
    state
        .store()
        .create_session(
            &token_hash(&token),
            user.id,
            &token_hash(&csrf),
            now,
            now + lifetime_ms,
        )
        .await?;
    tracing::info!(user = %user.name, "browser session started");
    let cookie = session_cookie(&token, SESSION_LIFETIME.as_secs(), secure_cookie(&headers));
    let mut response = see_other(&next);
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(Failure::internal)?,
    );
    Ok(response)
}

async fn logout(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    headers: HeaderMap,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Page {
    check_origin(&headers)?;
    caller.check_csrf_form(&form(submitted)?.csrf)?;
    if let Some(session) = auth::cookie(&headers, SESSION_COOKIE) {
        state.store().delete_session(&token_hash(session)).await?;
    }
    let mut response = see_other("/login");
    let cookie = session_cookie("", 0, secure_cookie(&headers));
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(Failure::internal)?,
    );
    Ok(response)
}

// ----- projects -----

struct ProjectRow {
    name: String,
    repository: String,
    last_run: Option<RunView>,
}

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsTemplate {
    layout: Layout,
    projects: Vec<ProjectRow>,
}

async fn projects_page(State(state): State<AppState>, PageCaller(caller): PageCaller) -> Page {
    let now = state.now();
    let mut projects = Vec::new();
    for project in state.store().list_projects().await? {
        if caller.role_on(&state, &project).await?.is_none() {
            continue;
        }
        let last_run = state
            .store()
            .list_runs(project.id, 1)
            .await?
            .first()
            .map(|run| RunView::new(&run_info(run, &project.name, &[]), now));
        projects.push(ProjectRow {
            name: project.name,
            repository: project.repository,
            last_run,
        });
    }
    let page = ProjectsTemplate {
        layout: Layout::for_caller("Projects", &caller),
        projects,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectTemplate {
    layout: Layout,
    name: String,
    repository: String,
    runs: Vec<RunView>,
    deployments: Vec<DeploymentView>,
    can_run: bool,
}

/// The project's deployments, newest first, as wire values (the store's rows checked).
async fn project_deployments(
    state: &AppState,
    project: &keelson_store::Project,
    environment: Option<&str>,
    limit: u32,
) -> Result<Vec<keelson_api::DeploymentInfo>, PageError> {
    let stored = state
        .store()
        .list_deployments(project.id, environment, limit)
        .await?;
    let infos = stored
        .into_iter()
        .map(|deployment| deployment_info(deployment, &project.name))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(infos)
}

async fn project_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
) -> Page {
    let (project, role) = crate::api::project_for(&state, &caller, &name, Role::Viewer).await?;
    let now = state.now();
    let runs = state
        .store()
        .list_runs(project.id, 100)
        .await?
        .iter()
        .map(|run| RunView::new(&run_info(run, &project.name, &[]), now))
        .collect();
    let deployments = state
        .store()
        .latest_deployments(project.id)
        .await?
        .into_iter()
        .map(|deployment| deployment_info(deployment, &project.name))
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(DeploymentView::new)
        .collect();
    let page = ProjectTemplate {
        layout: Layout::for_caller(project.name.clone(), &caller),
        name: project.name,
        repository: project.repository,
        runs,
        deployments,
        can_run: role >= Role::Developer,
    };
    Ok(Html(page.render()?).into_response())
}

#[derive(Template)]
#[template(path = "deployments.html")]
struct DeploymentsTemplate {
    layout: Layout,
    name: String,
    environment: Option<String>,
    limit: u32,
    deployments: Vec<DeploymentView>,
}

/// `/projects/{name}/deployments`: the project's deployment history, newest first. Takes the
/// API route's query (`environment=`, `limit=`, parsed by [`DeploymentQuery::parse`], so bad
/// values are the same `400`); shows at most [`MAX_PAGE_DEPLOYMENTS`].
async fn deployments_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
    pairs: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Page {
    let (project, _) = crate::api::project_for(&state, &caller, &name, Role::Viewer).await?;
    let Query(pairs) = pairs.map_err(|rejection| {
        Failure::invalid(format!("malformed query: {}", rejection.body_text()))
    })?;
    let query = DeploymentQuery::parse(&pairs)?;
    let limit = if pairs.iter().any(|(key, _)| key == "limit") {
        query.limit.min(MAX_PAGE_DEPLOYMENTS)
    } else {
        MAX_PAGE_DEPLOYMENTS
    };
    let deployments =
        project_deployments(&state, &project, query.environment.as_deref(), limit).await?;
    let title = match &query.environment {
        Some(environment) => format!("{} · deployments to {environment}", project.name),
        None => format!("{} · deployments", project.name),
    };
    let page = DeploymentsTemplate {
        layout: Layout::for_caller(title, &caller),
        name: project.name,
        environment: query.environment,
        limit,
        deployments: deployments.iter().map(DeploymentView::new).collect(),
    };
    Ok(Html(page.render()?).into_response())
}

/// The "Run now" form.
#[derive(Debug, Deserialize)]
pub struct RunNowForm {
    /// The session's CSRF token.
    #[serde(rename = "_csrf", default)]
    pub csrf: String,
    /// Branch, tag or commit (empty: the repository's HEAD).
    #[serde(rename = "ref", default)]
    pub git_ref: String,
}

async fn run_now(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(name): Path<String>,
    headers: HeaderMap,
    submitted: Result<Form<RunNowForm>, FormRejection>,
) -> Page {
    check_origin(&headers)?;
    let submitted = form(submitted)?;
    caller.check_csrf_form(&submitted.csrf)?;
    let git_ref = submitted.git_ref.trim();
    let body = StartRun {
        git_ref: (!git_ref.is_empty()).then(|| git_ref.to_string()),
        inputs: Default::default(),
    };
    let (_, Json(run)) = crate::api::start(State(state), caller, Path(name), Json(body)).await?;
    Ok(see_other(&format!("/runs/{}", run.id)))
}

// ----- runs -----

#[derive(Template)]
#[template(path = "run.html")]
struct RunTemplate {
    layout: Layout,
    run: RunView,
    stages: Vec<Vec<JobView>>,
    lines: Vec<LineView>,
    truncated: bool,
    can_act: bool,
    csrf: String,
    now: i64,
}

async fn run_page(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
) -> Page {
    let (run, project) = run_for(&state, &caller, id, Role::Viewer).await?;
    let role = caller.role_on(&state, &project).await?;
    let jobs = state.store().list_pipeline_jobs(run.id).await?;
    let info = run_info(&run, &project.name, &jobs);
    let log = read_run_log(
        &state,
        &run,
        &LogQuery {
            job: None,
            attempt: None,
            after: None,
            limit: Some(MAX_PAGE_LOG_LINES),
        },
    )
    .await?;
    let now = state.now();
    let page = RunTemplate {
        layout: Layout::for_caller(format!("{} #{}", project.name, run.number), &caller),
        stages: view::job_stages(&info, now),
        truncated: log.len() >= MAX_PAGE_LOG_LINES as usize,
        lines: log.iter().map(LineView::new).collect(),
        run: RunView::new(&info, now),
        can_act: role.is_some_and(|role| role >= Role::Developer),
        csrf: caller.csrf().unwrap_or_default().to_string(),
        now,
    };
    Ok(Html(page.render()?).into_response())
}

async fn cancel(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Page {
    check_origin(&headers)?;
    caller.check_csrf_form(&form(submitted)?.csrf)?;
    let Json(run) = crate::api::cancel(State(state), caller, Path(id)).await?;
    Ok(see_other(&format!("/runs/{}", run.id)))
}

async fn rerun(
    State(state): State<AppState>,
    PageCaller(caller): PageCaller,
    Path(id): Path<i64>,
    headers: HeaderMap,
    submitted: Result<Form<CsrfForm>, FormRejection>,
) -> Page {
    check_origin(&headers)?;
    caller.check_csrf_form(&form(submitted)?.csrf)?;
    let (_, Json(run)) = crate::api::rerun(State(state), caller, Path(id)).await?;
    Ok(see_other(&format!("/runs/{}", run.id)))
}

// ----- agents -----

struct AgentRow {
    name: String,
    labels: Vec<String>,
    version: String,
    last_seen: String,
    connected: bool,
}

#[derive(Template)]
#[template(path = "agents.html")]
struct AgentsTemplate {
    layout: Layout,
    agents: Vec<AgentRow>,
}

async fn agents_page(State(state): State<AppState>, PageCaller(caller): PageCaller) -> Page {
    let layout = Layout::for_caller("Agents", &caller);
    let Json(agents) = crate::api::agents(State(state), caller).await?;
    let agents = agents
        .into_iter()
        .map(|agent: AgentInfo| AgentRow {
            labels: agent.labels,
            last_seen: iso_utc(agent.last_seen),
            name: agent.name,
            version: agent.version,
            connected: agent.connected,
        })
        .collect();
    let page = AgentsTemplate { layout, agents };
    Ok(Html(page.render()?).into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue};

    use super::{check_origin, login_address, safe_next, secure_cookie};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn the_session_cookie_is_secure_unless_plain_http_to_loopback() {
        let cases: &[(&[(&'static str, &'static str)], bool)] = &[
            (&[("host", "127.0.0.1:8080")], false),
            (&[("host", "localhost:8080")], false),
            (&[("host", "[::1]:8080")], false),
            (&[("host", "app.localhost")], false),
            (
                &[("host", "127.0.0.1:8080"), ("x-forwarded-proto", "https")],
                true,
            ),
            (&[("host", "ci.example.com")], true),
            (&[("host", "10.1.2.3:8080")], true),
            (
                &[("host", "ci.example.com"), ("x-forwarded-proto", "http")],
                true,
            ),
            (&[("host", "localhost.example.com")], true),
            (&[], true),
        ];
        for (pairs, expected) in cases {
            assert_eq!(secure_cookie(&headers(pairs)), *expected, "{pairs:?}");
        }
    }

    #[test]
    fn after_login_only_local_paths_are_followed() {
        let cases: &[(Option<&str>, &str)] = &[
            (None, "/"),
            (Some("/runs/4"), "/runs/4"),
            (Some("/projects/a?x=1"), "/projects/a?x=1"),
            (Some("https://evil.example/"), "/"),
            (Some("//evil.example/"), "/"),
            (Some("/\\evil.example"), "/"),
            (Some("/a\nb"), "/"),
            (Some(""), "/"),
        ];
        for (next, expected) in cases {
            assert_eq!(safe_next(*next), *expected, "{next:?}");
        }
        let uri: axum::http::Uri = "/projects/a b?x=1&y=2".replace(' ', "%20").parse().unwrap();
        assert_eq!(
            login_address(Some(&uri)),
            "/login?next=/projects/a%2520b%3Fx%3D1%26y%3D2"
        );
        assert_eq!(login_address(Some(&"/".parse().unwrap())), "/login");
        assert_eq!(login_address(None), "/login");
    }

    #[test]
    fn posts_from_another_origin_are_refused() {
        let cases: &[(&[(&'static str, &'static str)], bool)] = &[
            (&[("host", "127.0.0.1:8080")], true),
            (
                &[
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://127.0.0.1:8080"),
                ],
                true,
            ),
            (
                &[
                    ("host", "ci.example.com"),
                    ("origin", "https://ci.example.com"),
                ],
                true,
            ),
            (
                &[
                    ("host", "ci.example.com"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
            (&[("host", "127.0.0.1:8080"), ("origin", "null")], false),
        ];
        for (pairs, allowed) in cases {
            assert_eq!(check_origin(&headers(pairs)).is_ok(), *allowed, "{pairs:?}");
        }
    }
}
