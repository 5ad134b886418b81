//! The server's command-line client: `keelson project …` and `keelson remote …`, over the
//! `/api/v1` REST API (server from `KEELSON_SERVER`, token from `KEELSON_TOKEN`).
//!
//! Text the server stores for others (reasons, names) is printed with control characters
//! replaced, so a hostile value cannot move the cursor or recolour the terminal; `--json` prints
//! the API's values unchanged (JSON-escaped).

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use keelson_api::{
    ApiError, CreateProject, DeploymentInfo, JobState, LogLineInfo, LogStream, ProjectInfo,
    RunInfo, StartRun,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cli::{ProjectCommand, RemoteArgs, RemoteCommand};
use crate::commands::{EXIT_FAILED, EXIT_OK};

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(remote: &RemoteArgs) -> anyhow::Result<Client> {
        let Some(base) = remote.server.clone().filter(|s| !s.is_empty()) else {
            bail!("no server: set KEELSON_SERVER (e.g. http://127.0.0.1:8080) or pass --server");
        };
        let Some(token) = remote.token.clone().filter(|t| !t.is_empty()) else {
            bail!("no token: set KEELSON_TOKEN or pass --token");
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {url}"))?;
        let status = response.status();
        let bytes = response.bytes().await.context("reading the answer")?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ApiError>(&bytes) {
                Ok(error) => anyhow!("{} ({}, HTTP {})", error.message, error.code, error.status),
                Err(_) => anyhow!("HTTP {status} from {url}"),
            });
        }
        let bytes = if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            bytes::Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {url}"))
    }
}

fn out(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// `keelson project …`.
pub fn project_command(command: &ProjectCommand) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        match command {
            ProjectCommand::Add { name, repo, remote } => {
                let client = Client::new(remote)?;
                let project: ProjectInfo = client
                    .call(
                        Method::POST,
                        "/api/v1/projects",
                        Some(&CreateProject {
                            name: name.clone(),
                            repository: repo.clone(),
                        }),
                    )
                    .await?;
                out(&format!(
                    "project {} added ({})\n",
                    project.name, project.repository
                ));
            }
            ProjectCommand::List { remote } => {
                let client = Client::new(remote)?;
                let projects: Vec<ProjectInfo> = client
                    .call(Method::GET, "/api/v1/projects", None::<&()>)
                    .await?;
                for project in projects {
                    out(&format!("{}\t{}\n", project.name, project.repository));
                }
            }
        }
        Ok(EXIT_OK)
    })
}

fn short(commit: Option<&str>) -> &str {
    commit.map_or("-", |c| &c[..c.len().min(12)])
}

fn print_status(run: &RunInfo) {
    let duration = match (run.started_at, run.finished_at) {
        (Some(start), Some(end)) => format!(" in {:.1}s", (end - start) as f64 / 1000.0),
        _ => String::new(),
    };
    let mut text = format!(
        "run {} ({} #{}): {}{}\n  trigger {}, ref {}, commit {}\n",
        run.id,
        run.project,
        run.number,
        run.state.as_str(),
        duration,
        run.trigger,
        run.git_ref.as_deref().unwrap_or("-"),
        short(run.commit_sha.as_deref()),
    );
    if let Some(reason) = &run.reason {
        text.push_str(&format!("  reason: {}\n", reason.trim_end()));
    }
    for job in &run.jobs {
        let needs = if job.needs.is_empty() {
            String::new()
        } else {
            format!("  ← {}", job.needs.join(", "))
        };
        text.push_str(&format!(
            "  {:<10} {}{}\n",
            job.state.as_str(),
            job.name,
            needs
        ));
        if let Some(reason) = &job.reason {
            text.push_str(&format!("             {}\n", reason.trim_end()));
        }
    }
    out(&text);
}

fn print_lines(lines: &[LogLineInfo]) {
    let mut text = String::new();
    for line in lines {
        let job = line.job.as_deref().unwrap_or("agent");
        let stream = match line.stream {
            LogStream::Stdout => "",
            LogStream::Stderr => " !",
            LogStream::System => " ::",
        };
        text.push_str(&format!("[{job}]{stream} {}\n", line.text));
    }
    out(&text);
}

/// Prints the log from `after` on until the run ends; returns the final run.
async fn follow(client: &Client, run: i64, job: Option<&str>) -> anyhow::Result<RunInfo> {
    let mut last: (i64, i64) = (0, 0);
    loop {
        let info: RunInfo = client
            .call(Method::GET, &format!("/api/v1/runs/{run}"), None::<&()>)
            .await?;
        let mut path = format!("/api/v1/runs/{run}/logs?limit=100000");
        if let Some(job) = job {
            path.push_str(&format!("&job={}", url_escape(job)));
        }
        let lines: Vec<LogLineInfo> = client.call(Method::GET, &path, None::<&()>).await?;
        let fresh: Vec<LogLineInfo> = lines
            .into_iter()
            .filter(|line| (line.attempt, line.seq) > last)
            .collect();
        if let Some(end) = fresh.last() {
            last = (end.attempt, end.seq);
        }
        print_lines(&fresh);
        if info.state.is_terminal() {
            return Ok(info);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn url_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The API path listing `project`'s deployments with the given filter.
fn deployments_path(project: &str, environment: Option<&str>, limit: Option<u32>) -> String {
    let mut query = Vec::new();
    if let Some(environment) = environment {
        query.push(format!("environment={}", url_escape(environment)));
    }
    if let Some(limit) = limit {
        query.push(format!("limit={limit}"));
    }
    let mut path = format!("/api/v1/projects/{}/deployments", url_escape(project));
    if !query.is_empty() {
        path.push('?');
        path.push_str(&query.join("&"));
    }
    path
}

/// `text` safe to print in a table cell: control characters (line breaks, escape sequences)
/// as spaces, runs of white space as one, `-` when empty.
fn terminal_cell(text: &str) -> String {
    let mut cell = String::with_capacity(text.len());
    for c in text.chars() {
        let c = if c.is_control() || c.is_whitespace() {
            ' '
        } else {
            c
        };
        if !(c == ' ' && (cell.is_empty() || cell.ends_with(' '))) {
            cell.push(c);
        }
    }
    let cell = cell.trim_end();
    if cell.is_empty() {
        "-".to_string()
    } else {
        cell.to_string()
    }
}

/// The deployments as a table, newest first as given; the reason last (only for deployments
/// that did not succeed), on one line.
fn render_deployments(deployments: &[DeploymentInfo]) -> String {
    const HEADERS: [&str; 10] = [
        "STARTED",
        "ENVIRONMENT",
        "SERVICE",
        "REV",
        "STATE",
        "STRATEGY",
        "COMMIT",
        "BY",
        "RUN",
        "REASON",
    ];
    let rows: Vec<[String; 10]> = deployments
        .iter()
        .map(|info| {
            let record = &info.deployment;
            let reason = match record.state {
                keelson_api::DeploymentState::Succeeded => String::new(),
                _ => terminal_cell(record.reason.as_deref().unwrap_or_default()),
            };
            [
                keelson_core::time::rfc3339_utc_ms(record.started_at),
                terminal_cell(&record.environment),
                terminal_cell(&record.service),
                record.revision.to_string(),
                record.state.as_str().to_string(),
                terminal_cell(&record.strategy),
                terminal_cell(short(record.commit.as_deref())),
                terminal_cell(&record.requested_by),
                format!("{} (#{})", info.run_id, info.run_number),
                reason,
            ]
        })
        .collect();
    let mut widths = HEADERS.map(|header| header.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: &[&str]| {
        let mut out = String::new();
        for (index, cell) in cells.iter().enumerate() {
            if index + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[index]);
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(&HEADERS);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    text
}

fn exit_for(state: JobState) -> u8 {
    if state == JobState::Succeeded {
        EXIT_OK
    } else {
        EXIT_FAILED
    }
}

/// `keelson remote …`.
pub fn remote_command(command: &RemoteCommand) -> anyhow::Result<u8> {
    runtime()?.block_on(async {
        match command {
            RemoteCommand::Run {
                project,
                git_ref,
                inputs,
                wait,
                remote,
            } => {
                let client = Client::new(remote)?;
                let body = StartRun {
                    git_ref: git_ref.clone(),
                    inputs: inputs.iter().cloned().collect(),
                };
                let run: RunInfo = client
                    .call(
                        Method::POST,
                        &format!("/api/v1/projects/{}/runs", url_escape(project)),
                        Some(&body),
                    )
                    .await?;
                out(&format!(
                    "run {} ({} #{}) {} at {}\n",
                    run.id,
                    run.project,
                    run.number,
                    run.state.as_str(),
                    short(run.commit_sha.as_deref())
                ));
                if !*wait {
                    return Ok(EXIT_OK);
                }
                let finished = follow(&client, run.id, None).await?;
                print_status(&finished);
                Ok(exit_for(finished.state))
            }
            RemoteCommand::Status { run, remote } => {
                let client = Client::new(remote)?;
                let info: RunInfo = client
                    .call(Method::GET, &format!("/api/v1/runs/{run}"), None::<&()>)
                    .await?;
                print_status(&info);
                Ok(EXIT_OK)
            }
            RemoteCommand::Logs {
                run,
                job,
                follow: keep,
                remote,
            } => {
                let client = Client::new(remote)?;
                if *keep {
                    let finished = follow(&client, *run, job.as_deref()).await?;
                    return Ok(exit_for(finished.state));
                }
                let mut path = format!("/api/v1/runs/{run}/logs?limit=100000");
                if let Some(job) = job {
                    path.push_str(&format!("&job={}", url_escape(job)));
                }
                let lines: Vec<LogLineInfo> = client.call(Method::GET, &path, None::<&()>).await?;
                print_lines(&lines);
                Ok(EXIT_OK)
            }
            RemoteCommand::Cancel { run, remote } => {
                let client = Client::new(remote)?;
                let info: RunInfo = client
                    .call(
                        Method::POST,
                        &format!("/api/v1/runs/{run}/cancel"),
                        None::<&()>,
                    )
                    .await?;
                out(&format!(
                    "run {} ({} #{}): {}\n",
                    info.id,
                    info.project,
                    info.number,
                    if info.state.is_terminal() {
                        info.state.as_str()
                    } else {
                        "cancelling"
                    }
                ));
                Ok(EXIT_OK)
            }
            RemoteCommand::Deployments {
                project,
                environment,
                limit,
                json,
                remote,
            } => {
                let client = Client::new(remote)?;
                let path = deployments_path(project, environment.as_deref(), *limit);
                let deployments: Vec<DeploymentInfo> =
                    client.call(Method::GET, &path, None::<&()>).await?;
                if *json {
                    let mut text = serde_json::to_string_pretty(&deployments)
                        .context("writing the deployments as JSON")?;
                    text.push('\n');
                    out(&text);
                } else if deployments.is_empty() {
                    out(&match environment {
                        Some(environment) => {
                            format!("no deployments of {project} to {environment} yet\n")
                        }
                        None => format!("no deployments of {project} yet\n"),
                    });
                } else {
                    out(&render_deployments(&deployments));
                }
                Ok(EXIT_OK)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use keelson_api::{DeploymentInfo, DeploymentRecord, DeploymentState};

    use super::{deployments_path, render_deployments, terminal_cell};

    #[test]
    fn the_deployments_path_escapes_the_project_and_the_filter() {
        let cases: &[(&str, Option<&str>, Option<u32>, &str)] = &[
            ("shop", None, None, "/api/v1/projects/shop/deployments"),
            (
                "shop",
                Some("staging"),
                None,
                "/api/v1/projects/shop/deployments?environment=staging",
            ),
            (
                "shop",
                Some("a b&c"),
                Some(5),
                "/api/v1/projects/shop/deployments?environment=a%20b%26c&limit=5",
            ),
            (
                "x/y",
                None,
                Some(1),
                "/api/v1/projects/x%2Fy/deployments?limit=1",
            ),
        ];
        for (project, environment, limit, expected) in cases {
            assert_eq!(
                deployments_path(project, *environment, *limit),
                *expected,
                "{project} {environment:?} {limit:?}"
            );
        }
    }

    #[test]
    fn cells_lose_control_characters() {
        let cases: &[(&str, &str)] = &[
            ("", "-"),
            ("plain", "plain"),
            ("two\nlines\r\n", "two lines"),
            ("\u{1b}[2J\u{1b}[31mred", "[2J [31mred"),
            ("tab\tand  spaces", "tab and spaces"),
        ];
        for (text, expected) in cases {
            assert_eq!(terminal_cell(text), *expected, "{text:?}");
        }
    }

    fn info(environment: &str, state: DeploymentState, reason: Option<&str>) -> DeploymentInfo {
        DeploymentInfo {
            id: 1,
            project: "shop".into(),
            run_id: 17,
            run_number: 3,
            job: "deploy".into(),
            attempt: 1,
            deployment: DeploymentRecord {
                environment: environment.into(),
                service: "web".into(),
                revision: 2,
                strategy: "canary".into(),
                commit: Some("0123456789abcdef".into()),
                branch: None,
                digest: "sha256:00".into(),
                requested_by: "alice".into(),
                state,
                reason: reason.map(str::to_string),
                started_at: 1_795_427_629_123,
                finished_at: None,
            },
            recorded_at: 0,
        }
    }

    #[test]
    fn deployments_render_as_an_aligned_table_with_the_reason_last() {
        let table = render_deployments(&[
            info(
                "production",
                DeploymentState::RolledBack,
                Some("error rate\n0.2 > 0.05\u{1b}[0m"),
            ),
            info("qa", DeploymentState::Succeeded, Some("ignored")),
        ]);
        let expected = "\
STARTED               ENVIRONMENT  SERVICE  REV  STATE        STRATEGY  COMMIT        BY     RUN      REASON
2026-11-23T09:53:49Z  production   web      2    rolled-back  canary    0123456789ab  alice  17 (#3)  error rate 0.2 > 0.05 [0m
2026-11-23T09:53:49Z  qa           web      2    succeeded    canary    0123456789ab  alice  17 (#3)
";
        assert_eq!(table, expected);
    }
}
