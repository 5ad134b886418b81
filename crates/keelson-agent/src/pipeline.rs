//! Loading and planning the pipeline of a checkout: finds `.keelson.yml`, reads includes from
//! inside the checkout only, and turns every problem into log lines plus one failure reason.
//!
//! Invariant: reads files only below the checkout directory (includes with `..` or an absolute
//! path are refused), and never panics on a malformed pipeline.

use std::path::{Component, Path, PathBuf};

use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::model::Pipeline;
use keelson_pipeline::plan::Plan;
use keelson_pipeline::source::SourceMap;

pub use keelson_pipeline::load::PIPELINE_FILES;

/// A pipeline ready to run.
#[derive(Debug)]
pub struct Prepared {
    /// The validated pipeline.
    pub pipeline: Pipeline,
    /// Its sources (for the engine's diagnostics).
    pub sources: SourceMap,
    /// The jobs to run.
    pub plan: Plan,
}

/// Why the pipeline cannot run: `log` holds the full diagnostics (one entry per line), `reason`
/// a one-line summary for the completion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unrunnable {
    /// Lines for the job log.
    pub log: Vec<String>,
    /// The completion's reason.
    pub reason: String,
}

/// Loads the pipeline of `root` and plans `jobs` (empty: all). Diagnostics that do not stop the
/// run (warnings) come back as lines to log.
pub fn prepare(root: &Path, jobs: &[String]) -> Result<(Prepared, Vec<String>), Unrunnable> {
    let Some(name) = PIPELINE_FILES.iter().find(|name| root.join(name).is_file()) else {
        let reason = "the commit has no .keelson.yml".to_owned();
        return Err(Unrunnable {
            log: vec![format!("error: {reason}")],
            reason,
        });
    };
    let text = std::fs::read_to_string(root.join(name)).map_err(|error| {
        let reason = format!("cannot read {name}: {error}");
        Unrunnable {
            log: vec![format!("error: {reason}")],
            reason,
        }
    })?;
    let loaded = load(
        name,
        &text,
        &CheckoutLoader {
            root: root.to_path_buf(),
        },
    );
    let log: Vec<String> = if loaded.diagnostics.items.is_empty() {
        Vec::new()
    } else {
        loaded
            .diagnostics
            .render(&loaded.sources)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let Some(pipeline) = loaded.pipeline else {
        let first = loaded
            .diagnostics
            .items
            .iter()
            .find(|d| d.severity == keelson_pipeline::diag::Severity::Error)
            .map(|d| d.message.clone())
            .unwrap_or_else(|| "it is invalid".to_owned());
        let count = loaded.diagnostics.error_count();
        let reason = if count > 1 {
            format!("{name} is invalid: {first} (and {} more)", count - 1)
        } else {
            format!("{name} is invalid: {first}")
        };
        return Err(Unrunnable { log, reason });
    };
    let plan = match Plan::new(&pipeline, jobs) {
        Ok(plan) => plan,
        Err(error) => {
            let reason = error.to_string();
            let mut log = log;
            log.push(format!("error: {reason}"));
            return Err(Unrunnable { log, reason });
        }
    };
    Ok((
        Prepared {
            pipeline,
            sources: loaded.sources,
            plan,
        },
        log,
    ))
}

/// Reads included files relative to the checkout, refusing paths that leave it.
struct CheckoutLoader {
    root: PathBuf,
}

impl SourceLoader for CheckoutLoader {
    fn read(&self, path: &str) -> Result<String, String> {
        let relative = Path::new(path);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err("includes must be relative paths inside the repository".to_owned());
        }
        std::fs::read_to_string(self.root.join(relative)).map_err(|error| error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn a_missing_pipeline_is_unrunnable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = prepare(dir.path(), &[]).expect_err("no pipeline");
        assert_eq!(error.reason, "the commit has no .keelson.yml");
        assert_eq!(error.log, ["error: the commit has no .keelson.yml"]);
    }

    #[test]
    fn a_valid_pipeline_is_planned_with_the_selected_jobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            ".keelson.yml",
            "jobs:\n  a:\n    steps:\n      - run: echo a\n  b:\n    needs: [a]\n    steps:\n      - run: echo b\n  c:\n    steps:\n      - run: echo c\n",
        );
        let (all, warnings) = prepare(dir.path(), &[]).expect("valid");
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(all.plan.jobs.len(), 3);
        let (selected, _) = prepare(dir.path(), &["b".to_owned()]).expect("valid");
        let ids: Vec<&str> = selected.plan.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"], "a selected job brings the jobs it needs");
        let unknown = prepare(dir.path(), &["nope".to_owned()]).expect_err("unknown job");
        assert!(
            unknown.reason.contains("no job named `nope`"),
            "{}",
            unknown.reason
        );
    }

    #[test]
    fn diagnostics_go_to_the_log_with_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            ".keelson.yml",
            "jobs:\n  a:\n    neeeds: [b]\n    steps:\n      - run: echo a\n",
        );
        let error = prepare(dir.path(), &[]).expect_err("invalid");
        assert!(
            error.reason.starts_with(".keelson.yml is invalid: "),
            "{}",
            error.reason
        );
        assert!(error.reason.contains("neeeds"), "{}", error.reason);
        let log = error.log.join("\n");
        assert!(log.contains(".keelson.yml:3:5"), "{log}");
    }

    #[test]
    fn includes_cannot_leave_the_checkout() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "ci/extra.yml", "jobs: {}\n");
        let loader = CheckoutLoader {
            root: dir.path().to_path_buf(),
        };
        assert_eq!(loader.read("ci/extra.yml").as_deref(), Ok("jobs: {}\n"));
        assert_eq!(loader.read("./ci/extra.yml").as_deref(), Ok("jobs: {}\n"));
        for path in ["../outside.yml", "/etc/passwd", "ci/../../x.yml"] {
            assert!(loader.read(path).is_err(), "{path}");
        }
    }
}
