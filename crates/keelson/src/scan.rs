//! `keelson scan` and the `keelson/scan` built-in step: one scan function, two front ends.
//!
//! Exit codes of the command: 0 when nothing at or above `--fail-on` remains after the baseline,
//! 1 when something does, 2 for usage and input errors (a missing database that was asked for, a
//! bad range, an unreadable baseline).

use std::io::{IsTerminal, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use keelson_engine::builtin::{BuiltinOutcome, BuiltinRequest, BuiltinSteps};
use keelson_scan::finding::{Kind, ScanOutput, Severity};
use keelson_scan::{advisory, baseline, deps, inventory, misconfig, report, sbom, secrets};

use crate::cli::{ReportFormat, SbomFormat, ScanDbImportArgs, ScanRunArgs, ScanSbomArgs};
use crate::commands::{EXIT_FAILED, EXIT_INVALID, EXIT_OK};

/// Which scanners run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub secrets: bool,
    pub deps: bool,
    pub misconfig: bool,
    /// Named by the user (rather than "all by default"): a kind that cannot run is then an error.
    pub explicit: bool,
}

impl Kinds {
    fn from_flags(secrets: bool, deps: bool, misconfig: bool) -> Kinds {
        if secrets || deps || misconfig {
            Kinds {
                secrets,
                deps,
                misconfig,
                explicit: true,
            }
        } else {
            Kinds {
                secrets: true,
                deps: true,
                misconfig: true,
                explicit: false,
            }
        }
    }

    fn list(self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if self.secrets {
            kinds.push(Kind::Secret);
        }
        if self.deps {
            kinds.push(Kind::Vulnerability);
        }
        if self.misconfig {
            kinds.push(Kind::Misconfig);
        }
        kinds
    }
}

/// Where secrets are looked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitMode {
    /// The files as they are.
    Tree,
    /// Every commit on every ref.
    History,
    /// What the commits in `A..B` add.
    Range(String),
}

/// One scan, as the command line or a pipeline step asks for it.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    pub root: PathBuf,
    pub kinds: Kinds,
    pub git: GitMode,
    pub baseline: Option<PathBuf>,
    pub db_dir: PathBuf,
    pub secrets_config: Option<PathBuf>,
}

/// What a scan produced.
#[derive(Debug)]
pub struct ScanResult {
    pub report: report::Report,
    /// Things the user should know that are not findings (a kind that could not run, expired
    /// baseline entries).
    pub warnings: Vec<String>,
}

/// Runs the scanners a request names. `Err` is an input or usage error (exit 2).
pub fn execute(request: &ScanRequest) -> anyhow::Result<ScanResult> {
    let root = &request.root;
    if !root.exists() {
        bail!("{}: no such file or directory", root.display());
    }
    let mut warnings = Vec::new();
    let mut output = ScanOutput::default();
    let mut unresolved = Vec::new();
    let mut kinds = request.kinds;

    if kinds.secrets {
        let config = load_secrets_config(request)?;
        let rules = secrets::Rules::builtin();
        let found = match &request.git {
            GitMode::Tree => secrets::scan_dir(root, &rules, &config),
            GitMode::History => secrets::scan_git(root, None, &rules, &config)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            GitMode::Range(range) => secrets::scan_git(root, Some(range), &rules, &config)
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        };
        output.merge(found);
    }
    if kinds.deps {
        match advisory::Database::open(&request.db_dir) {
            Ok(db) => {
                let found = deps::scan(root, &db);
                for (lockfile, entry) in found.unresolved {
                    unresolved.push(report::UnresolvedDependency {
                        lockfile,
                        line: entry.line,
                        name: entry.name,
                        spec: entry.spec,
                        reason: entry.reason.to_string(),
                    });
                }
                output.merge(found.output);
            }
            Err(error) if kinds.explicit => {
                bail!(
                    "cannot open the advisory database at {}: {error}\n\
                     load advisories first: keelson scan db import PATH…",
                    request.db_dir.display()
                );
            }
            Err(error) => {
                warnings.push(format!(
                    "dependencies not scanned: no usable advisory database at {} ({error}); \
                     load one with `keelson scan db import PATH…`",
                    request.db_dir.display()
                ));
                kinds.deps = false;
            }
        }
    }
    if kinds.misconfig {
        output.merge(misconfig::scan(root));
    }

    if let Some(path) = &request.baseline {
        let accepted = baseline::Baseline::load(path)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("reading the baseline {}", path.display()))?;
        let (kept, expired) = accepted.apply(
            std::mem::take(&mut output.findings),
            baseline::Date::today_utc(),
        );
        output.findings = kept;
        for entry in expired {
            warnings.push(entry.to_string());
        }
    }
    output.sort();
    let root_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| root.display().to_string());
    Ok(ScanResult {
        report: report::Report {
            root: root_name,
            kinds: kinds.list(),
            output,
            unresolved,
            tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        },
        warnings,
    })
}

fn load_secrets_config(request: &ScanRequest) -> anyhow::Result<secrets::SecretsConfig> {
    let default_path = request.root.join(".keelson-secrets.toml");
    let path = match &request.secrets_config {
        Some(path) => path.clone(),
        None if request.root.is_dir() && default_path.is_file() => default_path,
        None => return Ok(secrets::SecretsConfig::default()),
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    secrets::SecretsConfig::from_toml(&text, &path.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))
}

fn parse_fail_on(value: &str) -> anyhow::Result<Option<Severity>> {
    if value.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    value
        .parse::<Severity>()
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--fail-on: {e} (or never)"))
}

fn write_or_print(output: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
    }
}

#[allow(clippy::print_stderr)]
fn warn(message: &str) {
    eprintln!("warning: {message}");
}

/// `keelson scan [PATH] …`
pub fn scan_command(args: &ScanRunArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let fail_on = match parse_fail_on(&args.fail_on) {
        Ok(level) => level,
        Err(error) => return usage_error(&error),
    };
    let git = match (&args.history, &args.range) {
        (true, _) => GitMode::History,
        (false, Some(range)) => GitMode::Range(range.clone()),
        (false, None) => GitMode::Tree,
    };
    let kinds = Kinds::from_flags(args.secrets, args.deps, args.misconfig);
    if git != GitMode::Tree && kinds.explicit && !kinds.secrets {
        return usage_error(&anyhow::anyhow!(
            "--history and --range apply to the secrets scan; add --secrets"
        ));
    }
    let request = ScanRequest {
        root: args.path.clone(),
        kinds,
        git,
        baseline: args.baseline.clone(),
        db_dir: args
            .db
            .clone()
            .unwrap_or_else(|| data_dir.join("advisories")),
        secrets_config: args.secrets_config.clone(),
    };
    let result = match execute(&request) {
        Ok(result) => result,
        Err(error) => return usage_error(&error),
    };
    for warning in &result.warnings {
        warn(warning);
    }
    if let Some(path) = &args.write_baseline {
        std::fs::write(path, baseline::write(&result.report.output.findings))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let text = match args.format {
        ReportFormat::Table => {
            let colour = args.output.is_none()
                && std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none();
            report::table(&result.report, colour)
        }
        ReportFormat::Json => report::json(&result.report),
        ReportFormat::Sarif => report::sarif(&result.report),
    };
    write_or_print(args.output.as_deref(), &text)?;
    let failed = fail_on.is_some_and(|level| report::exceeds(&result.report.output, level));
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

#[allow(clippy::print_stderr)]
fn usage_error(error: &anyhow::Error) -> anyhow::Result<u8> {
    eprintln!("error: {error:#}");
    Ok(EXIT_INVALID)
}

/// `keelson scan db import PATH…`
#[allow(clippy::print_stdout)]
pub fn db_import_command(args: &ScanDbImportArgs, data_dir: &Path) -> anyhow::Result<u8> {
    let db_dir = args
        .db
        .clone()
        .unwrap_or_else(|| data_dir.join("advisories"));
    for path in &args.paths {
        if !path.exists() {
            return usage_error(&anyhow::anyhow!(
                "{}: no such file or directory",
                path.display()
            ));
        }
    }
    let started = std::time::Instant::now();
    let imported = match advisory::import(&args.paths, &db_dir) {
        Ok(report) => report,
        Err(error) => return usage_error(&anyhow::anyhow!("{error}")),
    };
    for skip in &imported.skipped {
        println!("skipped {}: {}", skip.path, skip.reason);
    }
    for error in &imported.errors {
        println!("error: {error}");
    }
    if let Some(why) = &imported.replaced_index {
        println!("note: the previous index was rebuilt: {why}");
    }
    println!(
        "{} files read, {} advisories: {} added, {} updated, {} unchanged; {} stored in {} ({:.1} MiB, {:.1} s)",
        imported.files_read,
        imported.advisories_read,
        imported.added,
        imported.updated,
        imported.unchanged,
        imported.stored,
        db_dir.display(),
        imported.index_bytes as f64 / (1024.0 * 1024.0),
        started.elapsed().as_secs_f64()
    );
    // Files that could not be read are reported and the rest is stored; the exit code says so.
    Ok(if imported.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_INVALID
    })
}

/// `keelson scan sbom [PATH] --format cyclonedx|spdx`
pub fn sbom_command(args: &ScanSbomArgs) -> anyhow::Result<u8> {
    if !args.path.exists() {
        return usage_error(&anyhow::anyhow!(
            "{}: no such file or directory",
            args.path.display()
        ));
    }
    let (document, collected) = build_sbom(&args.path, args.format)?;
    for error in &collected.errors {
        warn(&error.to_string());
    }
    for skipped in &collected.skipped {
        warn(&format!("skipped {}: {}", skipped.path, skipped.reason));
    }
    write_or_print(args.output.as_deref(), &document)?;
    Ok(EXIT_OK)
}

fn build_sbom(root: &Path, format: SbomFormat) -> anyhow::Result<(String, inventory::Collected)> {
    let collected = inventory::collect(root);
    let root_name = root
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "project".to_owned());
    let options = sbom::SbomOptions::now(env!("CARGO_PKG_VERSION"), root_name)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = match format {
        SbomFormat::Cyclonedx => sbom::cyclonedx_json(&collected.inventories, &options),
        SbomFormat::Spdx => sbom::spdx_json(&collected.inventories, &options),
    };
    Ok((text, collected))
}

/// `keelson scan rules`: one line per rule, secrets first, then misconfigurations.
pub fn rules_command() -> anyhow::Result<u8> {
    let mut text = String::new();
    let secrets = secrets::Rules::builtin();
    for rule in secrets.iter() {
        text.push_str(&format!(
            "{:<10} {:<40} {:<10} {:<9} {}\n",
            "secret",
            rule.id(),
            "-",
            rule.severity(),
            rule.title()
        ));
    }
    for rule in misconfig::all_rules() {
        text.push_str(&format!(
            "{:<10} {:<40} {:<10} {:<9} {}\n",
            "misconfig",
            rule.id,
            rule.upstream_id.unwrap_or("-"),
            rule.severity,
            rule.title
        ));
    }
    write_or_print(None, &text)?;
    Ok(EXIT_OK)
}

/// The `keelson/scan` built-in step.
#[derive(Debug, Default)]
pub struct ScanStep;

impl BuiltinSteps for ScanStep {
    fn run(&self, request: &BuiltinRequest, log: &mut dyn FnMut(&str)) -> BuiltinOutcome {
        match self.scan_step(request, log) {
            Ok(outcome) => outcome,
            Err(error) => {
                log(&format!("error: {error:#}"));
                BuiltinOutcome {
                    success: false,
                    reason: Some(format!("{error:#}")),
                    ..BuiltinOutcome::default()
                }
            }
        }
    }
}

/// A `with:` path: relative, and inside the workspace.
fn workspace_path(workspace: &Path, input: &str, value: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(value);
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("`{input}: {value}` must be a relative path inside the workspace");
    }
    Ok(workspace.join(path))
}

impl ScanStep {
    fn scan_step(
        &self,
        request: &BuiltinRequest,
        log: &mut dyn FnMut(&str),
    ) -> anyhow::Result<BuiltinOutcome> {
        if request.name != "keelson/scan" {
            bail!("unknown built-in step `{}`", request.name);
        }
        let input = |name: &str| {
            request
                .inputs
                .get(name)
                .map(|s| s.trim())
                .filter(|s| !s.is_empty())
        };
        let ws = &request.workspace;
        let kinds = match input("kinds") {
            None => Kinds::from_flags(false, false, false),
            Some(list) => {
                let mut flags = (false, false, false);
                for kind in list.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    match kind {
                        "secrets" => flags.0 = true,
                        "deps" => flags.1 = true,
                        "misconfig" => flags.2 = true,
                        other => {
                            bail!("`kinds`: unknown kind `{other}` (secrets, deps, misconfig)")
                        }
                    }
                }
                Kinds::from_flags(flags.0, flags.1, flags.2)
            }
        };
        let fail_on = parse_fail_on(input("fail-on").unwrap_or("high"))?;
        let root = workspace_path(ws, "path", input("path").unwrap_or("."))?;
        let baseline = input("baseline")
            .map(|b| workspace_path(ws, "baseline", b))
            .transpose()?;
        let db_dir = match input("db") {
            Some(db) => workspace_path(ws, "db", db)?,
            None => request.data_dir.join("advisories"),
        };
        let out_rel = input("output").unwrap_or("keelson-scan").to_owned();
        let out_dir = workspace_path(ws, "output", &out_rel)?;
        let sbom_format = match input("sbom").unwrap_or("cyclonedx") {
            "cyclonedx" => Some(SbomFormat::Cyclonedx),
            "spdx" => Some(SbomFormat::Spdx),
            "none" => None,
            other => bail!("`sbom`: unknown format `{other}` (cyclonedx, spdx, none)"),
        };

        let scan = ScanRequest {
            root: root.clone(),
            kinds,
            git: GitMode::Tree,
            baseline,
            db_dir,
            secrets_config: None,
        };
        let mut result = execute(&scan)?;
        // The reports directory is the step's own output: never scan it on a re-run.
        let out_prefix = format!("{}/", out_rel.trim_end_matches('/'));
        result
            .report
            .output
            .findings
            .retain(|f| !f.location.path.starts_with(&out_prefix));
        for warning in &result.warnings {
            log(&format!("warning: {warning}"));
        }
        for line in report::table(&result.report, false).lines() {
            log(line);
        }

        std::fs::create_dir_all(&out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display()))?;
        let mut reports = Vec::new();
        let sarif_name = "keelson-scan.sarif";
        std::fs::write(out_dir.join(sarif_name), report::sarif(&result.report))
            .context("cannot write the SARIF report")?;
        reports.push(format!("{out_rel}/{sarif_name}"));
        if let Some(format) = sbom_format {
            let (document, _) = build_sbom(&root, format)?;
            let name = match format {
                SbomFormat::Cyclonedx => "sbom.cdx.json",
                SbomFormat::Spdx => "sbom.spdx.json",
            };
            std::fs::write(out_dir.join(name), document).context("cannot write the SBOM")?;
            reports.push(format!("{out_rel}/{name}"));
        }
        log(&format!(
            "reports: {} (kept as artifacts)",
            reports.join(", ")
        ));

        let findings = &result.report.output.findings;
        let mut outputs = indexmap::IndexMap::new();
        outputs.insert("findings".to_owned(), findings.len().to_string());
        outputs.insert("sarif".to_owned(), reports[0].clone());
        let failed = fail_on.is_some_and(|level| report::exceeds(&result.report.output, level));
        let reason = fail_on.filter(|_| failed).map(|level| {
            let count = findings.iter().filter(|f| f.severity >= level).count();
            format!("{count} finding(s) at or above {level}")
        });
        Ok(BuiltinOutcome {
            success: !failed,
            reason,
            reports,
            outputs,
            records: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_with_stay_in_the_workspace() {
        let ws = Path::new("/w");
        assert!(workspace_path(ws, "path", "src").is_ok());
        assert!(workspace_path(ws, "path", "../etc").is_err());
        assert!(workspace_path(ws, "path", "/etc").is_err());
    }
}
