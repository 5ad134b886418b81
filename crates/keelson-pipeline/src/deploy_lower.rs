//! Lowers `deploy:` jobs to one built-in step, `keelson/deploy`, so the engine runs them like any
//! other built-in step (through the trait the binary implements) and knows nothing of deploying.
//!
//! The step's inputs carry everything the deploy controller needs as text: the environment, the
//! services, a strategy override and the whole `deploy:` block as JSON, each service's release
//! files (its artifact job's `artifacts.paths`, or the command's program), and the commit and
//! branch (`${{ git.sha }}`, `${{ git.branch }}`, rendered at run time).
//!
//! The services' `secrets:` are not declared on the step: a step's declared secrets are required
//! up front, while a deploy secret may also come from the controller's environment. The step
//! reads them from the run's secret source when it runs (the engine masks what it reads) and
//! fails, before deploying anything, on one found nowhere.

use indexmap::IndexMap;

use crate::deploy::RunSpec;
use crate::expr::Template;
use crate::model::{Action, Pipeline, Spanned, Step, Text, UsesSpec};

/// The name of the built-in step a deploy job becomes.
pub const DEPLOY_STEP: &str = "keelson/deploy";

fn text(raw: String, span: crate::Span) -> Text {
    let template = Template::parse(&raw).unwrap_or_else(|_| {
        // Only reachable for text the loader would have refused; keep it literal.
        Template::parse("").expect("empty template parses")
    });
    Text {
        template,
        raw,
        span,
        exact_columns: false,
    }
}

/// The files that make `service`'s release: its artifact job's `artifacts.paths`, or without an
/// artifact job the command's program; nothing for an image service or an unknown one.
pub fn release_patterns(pipeline: &Pipeline, service: &str) -> Vec<String> {
    let run = pipeline
        .deploy
        .as_ref()
        .and_then(|config| config.services.get(service))
        .map(|s| &s.run);
    match run {
        Some(RunSpec::Command {
            artifact: Some(job),
            ..
        }) => pipeline
            .jobs
            .get(job)
            .and_then(|j| j.artifacts.as_ref())
            .map(|a| a.paths.iter().map(|p| p.value.clone()).collect())
            .unwrap_or_default(),
        Some(RunSpec::Command { command, .. }) => command
            .first()
            .map(|c| vec![c.trim_start_matches("./").to_string()])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Gives every `deploy:` job (which has no steps) its `keelson/deploy` step. Jobs that already
/// have steps and pipelines without a `deploy:` block are left alone.
pub fn lower_deploy_jobs(pipeline: &mut Pipeline) {
    let Some(config) = pipeline.deploy.clone() else {
        return;
    };
    let config_json = serde_json::to_string(&config).expect("deploy config serialises");
    let mut lowered = Vec::new();
    for (id, job) in &pipeline.jobs {
        let Some(deploy) = &job.deploy else { continue };
        if !job.steps.is_empty() {
            continue;
        }
        let services: Vec<String> = config
            .services_of(deploy)
            .into_iter()
            .map(str::to_string)
            .collect();
        let artifacts: IndexMap<String, Vec<String>> = services
            .iter()
            .map(|service| (service.clone(), release_patterns(pipeline, service)))
            .collect();
        let span = job.span;
        let mut with: IndexMap<String, Vec<Text>> = IndexMap::new();
        let mut put = |name: &str, raw: String| {
            with.insert(name.to_string(), vec![text(raw, span)]);
        };
        put("environment", deploy.environment.clone());
        put("services", services.join(","));
        put(
            "strategy",
            deploy
                .strategy
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("strategy serialises"))
                .unwrap_or_default(),
        );
        put("config", config_json.clone());
        put(
            "artifacts",
            serde_json::to_string(&artifacts).expect("patterns serialise"),
        );
        put("commit", "${{ git.sha }}".into());
        put("branch", "${{ git.branch }}".into());
        put("requested-by", format!("pipeline job {id}"));
        let step = Step {
            id: None,
            name: Some(text(
                format!("deploy {} to {}", services.join(", "), deploy.environment),
                span,
            )),
            span,
            action: Action::Uses(UsesSpec {
                name: Spanned {
                    value: DEPLOY_STEP.to_string(),
                    span,
                },
                with,
                span,
            }),
            shell: None,
            working_directory: None,
            env: IndexMap::new(),
            condition: None,
            timeout: None,
            continue_on_error: false,
            retry: None,
            secrets: Vec::new(),
        };
        lowered.push((id.clone(), step));
    }
    for (id, step) in lowered {
        if let Some(job) = pipeline.jobs.get_mut(&id) {
            job.steps.push(step);
        }
    }
}
