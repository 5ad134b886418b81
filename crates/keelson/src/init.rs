//! `keelson init`: finds out what kind of project a folder holds (by its marker files) and
//! writes a commented starter `.keelson.yml` with `validate` → `test` → `build` jobs.
//!
//! Besides reading the project's files, [`starter_pipeline`] asks the machine a few questions
//! (is clippy installed, can python3 import pytest, ...) so the generated commands pass here;
//! the text itself is produced by pure functions that the tests drive with fixed answers.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

/// A kind of project `keelson init` knows how to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectKind {
    Cargo,
    Npm,
    Python,
    Go,
}

impl ProjectKind {
    fn label(self) -> &'static str {
        match self {
            ProjectKind::Cargo => "Rust (Cargo)",
            ProjectKind::Npm => "Node.js",
            ProjectKind::Python => "Python",
            ProjectKind::Go => "Go",
        }
    }
}

/// Marker files of Python projects.
const PYTHON_MARKERS: [&str; 3] = ["pyproject.toml", "setup.py", "requirements.txt"];

/// Detects project kinds in `dir` by marker files (Cargo.toml; package.json (+ which lockfile →
/// npm/yarn/pnpm); pyproject.toml / setup.py / requirements.txt; go.mod). Several may be found.
pub fn detect(dir: &Path) -> io::Result<Vec<ProjectKind>> {
    if !fs::metadata(dir)?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut kinds = Vec::new();
    if is_file(dir, "Cargo.toml")? {
        kinds.push(ProjectKind::Cargo);
    }
    if is_file(dir, "package.json")? {
        kinds.push(ProjectKind::Npm);
    }
    let mut python = false;
    for marker in PYTHON_MARKERS {
        python |= is_file(dir, marker)?;
    }
    if python {
        kinds.push(ProjectKind::Python);
    }
    if is_file(dir, "go.mod")? {
        kinds.push(ProjectKind::Go);
    }
    Ok(kinds)
}

/// A starter pipeline (YAML text) with `validate`, `test` and `build` jobs (test needs
/// validate, build needs test) for the detected kinds, with comments explaining the keys and
/// caching where it helps. With no kinds, a generic pipeline of `echo` steps.
///
/// Reads the project's files (package.json scripts, lockfiles, pyproject.toml) and probes the
/// tools on this machine (`cargo clippy --version`, `python3 -c 'import pytest'`, ...) so that
/// the commands it writes pass on a freshly created project of each kind.
pub fn starter_pipeline(dir: &Path, kinds: &[ProjectKind]) -> io::Result<String> {
    let facts = Facts::read(dir, kinds)?;
    let tools = Tools::probe(dir, &facts);
    Ok(render(&facts, &tools))
}

fn is_file(dir: &Path, name: &str) -> io::Result<bool> {
    match fs::metadata(dir.join(name)) {
        Ok(meta) => Ok(meta.is_file()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// Reads a file that may be missing.
fn read_optional(path: &Path) -> io::Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

// ---------------------------------------------------------------------------------------------
// What the project's files say.

/// Everything the generated text depends on that comes from the project's files.
#[derive(Clone, Debug, Default)]
struct Facts {
    /// The pipeline's `name:` (the folder's name).
    name: String,
    cargo: Option<CargoFacts>,
    node: Option<NodeFacts>,
    python: Option<PythonFacts>,
    go: Option<GoFacts>,
}

#[derive(Clone, Debug, Default)]
struct CargoFacts {
    /// The package's name when it builds a binary of that name (`src/main.rs`).
    binary: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum NodeManager {
    #[default]
    Npm,
    Yarn,
    Pnpm,
}

impl NodeManager {
    fn program(self) -> &'static str {
        match self {
            NodeManager::Npm => "npm",
            NodeManager::Yarn => "yarn",
            NodeManager::Pnpm => "pnpm",
        }
    }
}

#[derive(Clone, Debug, Default)]
struct NodeFacts {
    manager: NodeManager,
    /// The lockfile found, if any.
    lockfile: Option<&'static str>,
    /// yarn.lock written by Yarn 2+ (`__metadata:`), which wants `--immutable`.
    yarn_berry: bool,
    /// Real (not `npm init` placeholder) scripts in package.json.
    lint: bool,
    test: bool,
    build: bool,
    /// JavaScript entry files (`main`, `bin`) that exist, for `node --check`.
    entries: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct GoFacts {
    /// Some `.go` file exists (with none, `go vet ./...` and `go test ./...` fail).
    has_sources: bool,
}

#[derive(Clone, Debug, Default)]
struct PythonFacts {
    requirements: bool,
    /// pyproject.toml declares a `[build-system]`.
    build_system: bool,
    /// requirements.txt names pytest (so the pipeline's virtualenv will have it).
    pytest_required: bool,
}

impl Facts {
    fn read(dir: &Path, kinds: &[ProjectKind]) -> io::Result<Facts> {
        let name = fs::canonicalize(dir)
            .ok()
            .and_then(|path| path.file_name().map(|n| n.to_string_lossy().into_owned()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| "my-project".to_owned());
        let mut facts = Facts {
            name,
            ..Facts::default()
        };
        for kind in kinds {
            match kind {
                ProjectKind::Cargo => facts.cargo = Some(CargoFacts::read(dir)?),
                ProjectKind::Npm => facts.node = Some(NodeFacts::read(dir)?),
                ProjectKind::Python => facts.python = Some(PythonFacts::read(dir)?),
                ProjectKind::Go => {
                    facts.go = Some(GoFacts {
                        has_sources: has_go_sources(dir, 0)?,
                    });
                }
            }
        }
        Ok(facts)
    }
}

impl CargoFacts {
    fn read(dir: &Path) -> io::Result<CargoFacts> {
        let manifest = read_optional(&dir.join("Cargo.toml"))?.unwrap_or_default();
        let binary = if is_file(&dir.join("src"), "main.rs")? {
            toml_string_in_table(&manifest, "package", "name")
        } else {
            None
        };
        Ok(CargoFacts { binary })
    }
}

/// A plain string value `key = "..."` inside `[table]` of a TOML file (enough for
/// `[package] name`; no TOML parser in this crate).
fn toml_string_in_table(text: &str, table: &str, key: &str) -> Option<String> {
    let header = format!("[{table}]");
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if !inside {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let value = v
            .strip_prefix('"')
            .and_then(|rest| rest.split_once('"'))
            .map(|(value, _)| value)?;
        return Some(value.to_owned()).filter(|v| {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    }
    None
}

/// Whether a TOML file has a `[table]` header.
fn toml_has_table(text: &str, table: &str) -> bool {
    let header = format!("[{table}]");
    text.lines().any(|line| {
        let line = line.trim();
        line == header
            || line.starts_with(&format!("{header} "))
            || line.starts_with(&format!("{header}#"))
    })
}

impl NodeFacts {
    fn read(dir: &Path) -> io::Result<NodeFacts> {
        let text = fs::read_to_string(dir.join("package.json"))?;
        let package: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("package.json is not valid JSON: {error}"),
            )
        })?;

        let mut facts = NodeFacts::default();
        // The lockfile decides the package manager; `packageManager` is the hint without one.
        let lockfiles = [
            ("package-lock.json", NodeManager::Npm),
            ("npm-shrinkwrap.json", NodeManager::Npm),
            ("pnpm-lock.yaml", NodeManager::Pnpm),
            ("yarn.lock", NodeManager::Yarn),
        ];
        for (file, manager) in lockfiles {
            if is_file(dir, file)? {
                facts.lockfile = Some(file);
                facts.manager = manager;
                break;
            }
        }
        if facts.lockfile.is_none()
            && let Some(hint) = package.get("packageManager").and_then(|v| v.as_str())
        {
            if hint.starts_with("pnpm@") {
                facts.manager = NodeManager::Pnpm;
            } else if hint.starts_with("yarn@") {
                facts.manager = NodeManager::Yarn;
            }
        }
        if facts.lockfile == Some("yarn.lock") {
            let lock = fs::read_to_string(dir.join("yarn.lock"))?;
            facts.yarn_berry = lock.lines().any(|line| line.starts_with("__metadata:"));
        }

        let script = |name: &str| {
            package
                .get("scripts")
                .and_then(|scripts| scripts.get(name))
                .and_then(|v| v.as_str())
                .is_some_and(|body| !body.trim().is_empty() && !is_placeholder_script(body))
        };
        facts.lint = script("lint");
        facts.test = script("test");
        facts.build = script("build");

        let mut candidates: Vec<String> = Vec::new();
        match package.get("main").and_then(|v| v.as_str()) {
            Some(main) => candidates.push(main.to_owned()),
            None => candidates.push("index.js".to_owned()),
        }
        match package.get("bin") {
            Some(serde_json::Value::String(bin)) => candidates.push(bin.clone()),
            Some(serde_json::Value::Object(bins)) => {
                candidates.extend(bins.values().filter_map(|v| v.as_str()).map(str::to_owned))
            }
            _ => {}
        }
        for candidate in candidates {
            let path = candidate.trim_start_matches("./").to_owned();
            let is_js = [".js", ".cjs", ".mjs"]
                .iter()
                .any(|ext| path.ends_with(ext));
            if is_js
                && !path.starts_with('/')
                && !path.split('/').any(|part| part == "..")
                && is_file(dir, &path)?
                && !facts.entries.contains(&path)
            {
                facts.entries.push(path);
            }
        }
        Ok(facts)
    }
}

/// Whether `dir` holds a `.go` file, looking where the `./...` pattern does (not in `vendor`,
/// `testdata` or folders starting with `.` or `_`) and at most 8 levels deep.
fn has_go_sources(dir: &Path, depth: usize) -> io::Result<bool> {
    if depth > 8 {
        return Ok(false);
    }
    let mut subdirs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_file() && name.ends_with(".go") {
            return Ok(true);
        }
        if kind.is_dir()
            && !name.starts_with(['.', '_'])
            && !["vendor", "testdata", "node_modules"].contains(&name.as_ref())
        {
            subdirs.push(entry.path());
        }
    }
    for sub in subdirs {
        if has_go_sources(&sub, depth + 1)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// `npm init` writes a `test` script that always fails; it is not a test suite.
fn is_placeholder_script(body: &str) -> bool {
    body.contains("no test specified")
}

impl PythonFacts {
    fn read(dir: &Path) -> io::Result<PythonFacts> {
        let pyproject = read_optional(&dir.join("pyproject.toml"))?.unwrap_or_default();
        let requirements = read_optional(&dir.join("requirements.txt"))?;
        let pytest_required = requirements.as_deref().is_some_and(|text| {
            text.lines().any(|line| {
                let name: String = line
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                    .collect();
                name.eq_ignore_ascii_case("pytest")
            })
        });
        Ok(PythonFacts {
            requirements: requirements.is_some(),
            build_system: toml_has_table(&pyproject, "build-system"),
            pytest_required,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// What this machine has.

/// Answers from the tools installed here; all `false` when not asked (the kind is absent).
#[derive(Clone, Copy, Debug, Default)]
struct Tools {
    rustfmt: bool,
    clippy: bool,
    pytest: bool,
    /// python3 can import `build` (the PyPA build frontend).
    python_build: bool,
    yarn: bool,
    pnpm: bool,
}

impl Tools {
    fn probe(dir: &Path, facts: &Facts) -> Tools {
        let ok = |program: &str, args: &[&str]| succeeds(dir, program, args);
        // Python imports from the current folder first: ask from a neutral one, so a `build/`
        // output folder or a local `pytest.py` does not pass for the real thing.
        let neutral = std::env::temp_dir();
        let python_has =
            |module: &str| succeeds(&neutral, "python3", &["-c", &format!("import {module}")]);
        let mut tools = Tools::default();
        if facts.cargo.is_some() {
            tools.rustfmt = ok("cargo", &["fmt", "--version"]);
            tools.clippy = ok("cargo", &["clippy", "--version"]);
        }
        if let Some(python) = &facts.python {
            tools.pytest = python_has("pytest");
            if python.build_system {
                tools.python_build = python_has("build");
            }
        }
        if let Some(node) = &facts.node {
            match node.manager {
                NodeManager::Npm => {}
                NodeManager::Yarn => tools.yarn = ok("yarn", &["--version"]),
                NodeManager::Pnpm => tools.pnpm = ok("pnpm", &["--version"]),
            }
        }
        tools
    }
}

/// Whether `program args` runs and exits 0 (any failure to start counts as no).
fn succeeds(dir: &Path, program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

// ---------------------------------------------------------------------------------------------
// The pipeline, as data and then as YAML.

#[derive(Clone, Debug, Default)]
struct Step {
    /// Comment lines above the step.
    comment: Vec<String>,
    name: String,
    run: String,
    timeout: Option<&'static str>,
}

impl Step {
    fn new(name: impl Into<String>, run: impl Into<String>) -> Step {
        Step {
            name: name.into(),
            run: run.into(),
            ..Step::default()
        }
    }

    fn comment(mut self, line: impl Into<String>) -> Step {
        self.comment.push(line.into());
        self
    }

    fn timeout(mut self, timeout: &'static str) -> Step {
        self.timeout = Some(timeout);
        self
    }
}

#[derive(Clone, Debug)]
struct Cache {
    comment: Vec<String>,
    key: String,
    restore_keys: Vec<String>,
    paths: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Job {
    comment: Vec<String>,
    needs: Option<&'static str>,
    timeout: &'static str,
    cache: Option<Cache>,
    steps: Vec<Step>,
    /// Commented-out suggestions after the steps.
    footer: Vec<String>,
}

/// The whole pipeline text for `facts` on a machine with `tools`.
fn render(facts: &Facts, tools: &Tools) -> String {
    let kinds: Vec<&str> = [
        facts.cargo.as_ref().map(|_| ProjectKind::Cargo.label()),
        facts.node.as_ref().map(|_| ProjectKind::Npm.label()),
        facts.python.as_ref().map(|_| ProjectKind::Python.label()),
        facts.go.as_ref().map(|_| ProjectKind::Go.label()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let generic = kinds.is_empty();

    let mut validate = Job {
        comment: vec!["Quick checks first: formatting, lints, syntax.".into()],
        timeout: "15m",
        ..Job::default()
    };
    let mut test = Job {
        comment: vec!["`needs` orders jobs: this one starts once `validate` has succeeded.".into()],
        needs: Some("validate"),
        timeout: "30m",
        ..Job::default()
    };
    let mut build = Job {
        comment: vec!["Runs when the tests pass.".into()],
        needs: Some("test"),
        timeout: "30m",
        ..Job::default()
    };
    let mut env: Vec<(&str, &str, &str)> = Vec::new();

    if let Some(cargo) = &facts.cargo {
        cargo_jobs(cargo, tools, [&mut validate, &mut test, &mut build]);
        env.push((
            "CARGO_TERM_COLOR",
            "never",
            "Plain cargo output in the logs.",
        ));
    }
    if let Some(node) = &facts.node {
        node_jobs(node, tools, [&mut validate, &mut test, &mut build]);
    }
    if let Some(python) = &facts.python {
        python_jobs(python, tools, [&mut validate, &mut test, &mut build]);
        env.push(("PIP_DISABLE_PIP_VERSION_CHECK", "1", "Quieter pip."));
    }
    if let Some(go) = &facts.go {
        go_jobs(go, [&mut validate, &mut test, &mut build]);
    }
    if generic {
        generic_jobs([&mut validate, &mut test, &mut build]);
        env.push(("GREETING", "hello", "Read in steps as $GREETING."));
    }

    let mut out = String::new();
    let what = if generic {
        "a project of no kind it recognised (so the steps are placeholders)".to_owned()
    } else {
        format!("a {} project", kinds.join(" + "))
    };
    write_comment(
        &mut out,
        0,
        &format!("Keelson pipeline, written by `keelson init` for {what}."),
    );
    out.push_str(
        "# Check it with `keelson validate`, run it with `keelson run`, and edit it freely.\n\
         #\n\
         # Each job runs its steps in order, in a fresh copy of the repository; a step is a bash\n\
         # script (`run:`) and fails the job when it exits non-zero. Jobs run in parallel unless\n\
         # `needs:` orders them. Values may use expressions such as ${{ needs.test.outputs.x }}.\n",
    );
    let _ = writeln!(out, "name: {}", yaml_scalar(&facts.name));
    out.push('\n');
    if !env.is_empty() {
        out.push_str(
            "# Environment variables for every step (jobs and steps can have `env:` too).\n",
        );
        out.push_str("env:\n");
        for (name, value, comment) in &env {
            write_comment(&mut out, 2, comment);
            let _ = writeln!(out, "  {name}: {}", yaml_quoted(value));
        }
        out.push('\n');
    }
    out.push_str("jobs:\n");
    for (id, job) in [("validate", &validate), ("test", &test), ("build", &build)] {
        render_job(&mut out, id, job, id == "validate");
    }
    out.push_str(MORE_KEYS);
    out
}

/// Closing notes on keys the starter does not use.
const MORE_KEYS: &str = "\
# More keys, for later:
#   jobs.<id>.if: ${{ success() }}         run the job only when the condition holds
#   jobs.<id>.matrix: { os: [a, b] }       one copy of the job per combination (+ include/exclude)
#   jobs.<id>.artifacts: { paths: [...] }  hand files to the jobs that need this one
#   steps[*].id + `echo \"k=v\" >> \"$KEELSON_OUTPUT\"`   outputs, read as ${{ needs.<id>.outputs.k }}
#   steps[*].env, working-directory, shell, timeout, continue-on-error, retry: { max: 2, delay: 5s }
";

fn render_job(out: &mut String, id: &str, job: &Job, first: bool) {
    for line in &job.comment {
        write_comment(out, 2, line);
    }
    let _ = writeln!(out, "  {id}:");
    if let Some(needs) = job.needs {
        let _ = writeln!(out, "    needs: [{needs}]");
    }
    if first {
        out.push_str(
            "    # The job fails if it runs longer than this (steps can have `timeout:` too).\n",
        );
    }
    let _ = writeln!(out, "    timeout: {}", job.timeout);
    if let Some(cache) = &job.cache {
        for line in &cache.comment {
            write_comment(out, 4, line);
        }
        out.push_str("    cache:\n");
        let _ = writeln!(out, "      key: {}", yaml_scalar(&cache.key));
        let _ = writeln!(
            out,
            "      restore-keys: [{}]",
            yaml_list(&cache.restore_keys)
        );
        let _ = writeln!(out, "      paths: [{}]", yaml_list(&cache.paths));
    }
    out.push_str("    steps:\n");
    for step in &job.steps {
        for line in &step.comment {
            write_comment(out, 6, line);
        }
        let _ = writeln!(out, "      - name: {}", yaml_scalar(&step.name));
        let run = step.run.trim_end();
        if run.contains('\n') {
            out.push_str("        run: |\n");
            for line in run.lines() {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "          {line}");
                }
            }
        } else {
            let _ = writeln!(out, "        run: {}", yaml_scalar(run));
        }
        if let Some(timeout) = step.timeout {
            let _ = writeln!(out, "        timeout: {timeout}");
        }
    }
    for line in &job.footer {
        if line.is_empty() {
            out.push_str("    #\n");
        } else {
            let _ = writeln!(out, "    # {line}");
        }
    }
    out.push('\n');
}

/// Longest comment line written, in columns.
const COMMENT_WIDTH: usize = 92;

/// Writes `text` as `# ` comment lines at `indent`, wrapped at word boundaries.
fn write_comment(out: &mut String, indent: usize, text: &str) {
    let room = COMMENT_WIDTH.saturating_sub(indent + 2).max(40);
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > room {
            let _ = writeln!(out, "{:indent$}# {line}", "");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        let _ = writeln!(out, "{:indent$}# {line}", "");
    }
}

fn yaml_list(items: &[String]) -> String {
    items
        .iter()
        .map(|item| yaml_flow_scalar(item))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A scalar for block context: plain when YAML reads it back as the same string, else
/// double-quoted.
fn yaml_scalar(text: &str) -> String {
    if plain_is_safe(text, false) {
        text.to_owned()
    } else {
        yaml_quoted(text)
    }
}

/// A scalar inside `[...]`, where `,[]{}` also end a plain scalar.
fn yaml_flow_scalar(text: &str) -> String {
    if plain_is_safe(text, true) {
        text.to_owned()
    } else {
        yaml_quoted(text)
    }
}

fn plain_is_safe(text: &str, flow: bool) -> bool {
    let Some(first) = text.chars().next() else {
        return false;
    };
    let lower = text.to_ascii_lowercase();
    let second = text.chars().nth(1);
    let looks_typed = matches!(
        lower.as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
    ) || matches!(lower.as_str(), ".inf" | "+.inf" | "-.inf" | ".nan")
        || text.parse::<f64>().is_ok()
        || first.is_ascii_digit()
        || (matches!(first, '.' | '+') && second.is_some_and(|c| c.is_ascii_digit() || c == '.'));
    !looks_typed
        && !"-?:,[]{}#&*!|>'\"%@`".contains(first)
        && !first.is_whitespace()
        && !text.ends_with(|c: char| c.is_whitespace() || c == ':')
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.chars().any(|c| c.is_control())
        && !(flow && text.contains(['[', ']', '{', '}', ',']))
}

/// A double-quoted YAML scalar.
fn yaml_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A word for a shell command line: as is when safe, else single-quoted.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./+=:@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

// ---------------------------------------------------------------------------------------------
// Steps per kind.

fn cargo_jobs(cargo: &CargoFacts, tools: &Tools, [validate, test, build]: [&mut Job; 3]) {
    // A missing Cargo.lock just adds nothing to the hash.
    let hashed = "'Cargo.lock', '**/Cargo.toml'";
    let cache = |prefix: &str, comment: Vec<String>| Cache {
        comment,
        key: format!("{prefix}${{{{ hashFiles({hashed}) }}}}"),
        restore_keys: vec![prefix.to_owned()],
        paths: vec!["target".into()],
    };
    let explained = vec![
        "Keep `target/` between runs: restored before the steps, saved after a successful job \
         under `key` (a saved key never changes). The key hashes the manifests and the \
         lockfile; when they change, `restore-keys` restores the newest cache whose key starts \
         with the prefix and cargo rebuilds only what changed."
            .into(),
    ];
    validate.cache = Some(cache("cargo-validate-", explained));
    if tools.rustfmt {
        validate
            .steps
            .push(Step::new("cargo fmt", "cargo fmt --all --check"));
    } else {
        validate.footer.extend([
            "rustfmt is not installed here (`rustup component add rustfmt`); then add a step:"
                .into(),
            "  - name: cargo fmt".into(),
            "    run: cargo fmt --all --check".into(),
        ]);
    }
    if tools.clippy {
        validate.steps.push(
            Step::new(
                "cargo clippy",
                "cargo clippy --workspace --all-targets -- -D warnings",
            )
            .comment("Lints; `-D warnings` makes any warning fail the job."),
        );
    } else {
        validate.steps.push(
            Step::new("cargo check", "cargo check --workspace --all-targets").comment(
                "clippy is not installed here (`rustup component add clippy`); `cargo clippy \
                 --workspace --all-targets -- -D warnings` lints more.",
            ),
        );
    }

    test.cache = Some(cache(
        "cargo-test-",
        vec!["The same for the test builds, under their own key.".into()],
    ));
    test.steps
        .push(Step::new("cargo test", "cargo test --workspace").timeout("20m"));

    build.cache = Some(cache(
        "cargo-build-",
        vec!["And for the release builds.".into()],
    ));
    build.steps.push(Step::new(
        "cargo build",
        "cargo build --release --workspace",
    ));
    let binary = cargo.binary.as_deref().unwrap_or("<binary>");
    build.footer.extend([
        "Keep the binary for later jobs (`needs: [build]`), at the same path in their workspace:"
            .into(),
        "artifacts:".into(),
        format!("  paths: [target/release/{binary}]"),
    ]);
}

fn node_jobs(node: &NodeFacts, tools: &Tools, [validate, test, build]: [&mut Job; 3]) {
    // yarn and pnpm when installed here; else npm, which installs from package.json alone.
    let (manager, note) = match node.manager {
        NodeManager::Npm => (NodeManager::Npm, None),
        m @ (NodeManager::Yarn | NodeManager::Pnpm) => {
            let installed = if m == NodeManager::Yarn {
                tools.yarn
            } else {
                tools.pnpm
            };
            if installed {
                (m, None)
            } else {
                let found = node.lockfile.unwrap_or("packageManager in package.json");
                (
                    NodeManager::Npm,
                    Some(format!(
                        "{found} asks for {0}, but {0} is not installed here, so these steps use \
                         npm (ignoring {found}); install {0} and switch them over.",
                        m.program()
                    )),
                )
            }
        }
    };
    let program = manager.program();

    let has_lockfile = node.lockfile.is_some() && manager == node.manager;
    let (install_run, install_comment) = match manager {
        NodeManager::Npm if has_lockfile => (
            format!("{program} ci --no-audit --no-fund"),
            "`npm ci` installs exactly what package-lock.json says (npm keeps its downloads \
             in ~/.npm).",
        ),
        NodeManager::Npm => (
            format!("{program} install --no-audit --no-fund"),
            "No package-lock.json: `npm install` resolves the dependencies afresh. Commit the \
             lockfile it writes and use `npm ci`.",
        ),
        NodeManager::Yarn if node.yarn_berry => (
            format!("{program} install --immutable"),
            "Install exactly what yarn.lock says.",
        ),
        NodeManager::Yarn if has_lockfile => (
            format!("{program} install --frozen-lockfile"),
            "Install exactly what yarn.lock says.",
        ),
        NodeManager::Pnpm if has_lockfile => (
            format!("{program} install --frozen-lockfile"),
            "Install exactly what pnpm-lock.yaml says.",
        ),
        NodeManager::Yarn | NodeManager::Pnpm => (
            format!("{program} install"),
            "No lockfile yet: install resolves the dependencies afresh.",
        ),
    };
    // The first install step explains itself; the others just install.
    let explained = std::cell::Cell::new(false);
    let install = || {
        let mut step = Step::new(format!("{program} install"), install_run.clone());
        if !explained.replace(true) {
            step = step.comment(install_comment);
            if let Some(note) = &note {
                step = step.comment(note.clone());
            }
        }
        step
    };
    let run_script = |script: &str| match manager {
        NodeManager::Npm if script == "test" => format!("{program} test"),
        _ => format!("{program} run {script}"),
    };
    // A check that needs no script (nor dependencies): syntax of the entry files, else that
    // the package packs.
    let check_without_script = |why: &str| {
        if node.entries.is_empty() {
            Step::new("npm pack --dry-run", "npm pack --dry-run --ignore-scripts")
                .comment(why)
                .comment(
                    "Meanwhile: check that package.json is valid and list what would be published.",
                )
        } else {
            let run = node
                .entries
                .iter()
                .map(|entry| format!("node --check {}", shell_word(entry)))
                .collect::<Vec<_>>()
                .join(" && ");
            Step::new("node --check", run)
                .comment(why)
                .comment("Meanwhile: a syntax check of the package's entry files (`main`, `bin`).")
        }
    };

    if node.lint {
        validate.steps.push(install());
        validate.steps.push(Step::new("lint", run_script("lint")));
    } else {
        validate.steps.push(check_without_script(
            "package.json has no `lint` script; add one and run it here.",
        ));
    }

    if node.test {
        test.steps.push(install());
        test.steps
            .push(Step::new("test", run_script("test")).timeout("20m"));
    } else {
        test.steps.push(check_without_script(&format!(
            "package.json has no real `test` script yet; add one, then install the \
             dependencies and run `{}` here.",
            run_script("test")
        )));
    }

    if node.build {
        build.steps.push(install());
        build.steps.push(Step::new("build", run_script("build")));
    } else {
        build.steps.push(
            Step::new("npm pack --dry-run", "npm pack --dry-run --ignore-scripts").comment(
                "package.json has no `build` script: check that the package packs instead.",
            ),
        );
    }
}

/// Skips the usual folders that hold no project sources.
const COMPILEALL: &str =
    r"python3 -m compileall -q -x '(^|/)(\.git|\.venv|venv|node_modules|build|dist)/' .";

fn python_jobs(python: &PythonFacts, tools: &Tools, [validate, test, build]: [&mut Job; 3]) {
    validate.steps.push(
        Step::new("python compileall", COMPILEALL)
            .comment("Byte-compiles every .py file: catches syntax errors."),
    );

    // A virtualenv when there is something to install; it sees the system's packages (pytest).
    let venv = python.requirements || python.build_system;
    let python_cmd = if venv { ".venv/bin/python" } else { "python3" };
    if venv {
        test.steps.push(
            Step::new("virtualenv", "python3 -m venv --system-site-packages .venv").comment(
                "Dependencies go into a virtualenv in the workspace (it also sees system \
                 packages).",
            ),
        );
    }
    if python.requirements {
        test.steps.push(Step::new(
            "pip install requirements",
            format!("{python_cmd} -m pip install -r requirements.txt"),
        ));
    }
    if python.build_system {
        test.steps.push(
            Step::new(
                "pip install project",
                format!("{python_cmd} -m pip install -e ."),
            )
            .comment("Installs the project itself (editable), so the tests import it."),
        );
    }
    let pytest = tools.pytest || python.pytest_required;
    if pytest && venv && !python.pytest_required {
        test.steps.push(
            Step::new(
                "pytest",
                format!(
                    "{python_cmd} -c 'import pytest' 2>/dev/null || {python_cmd} -m pip install pytest"
                ),
            )
            .comment(
                "pytest is not in requirements.txt: the virtualenv uses the system's if it \
                 sees it, else installs it.",
            ),
        );
    }
    let (runner, comment) = if pytest {
        (format!("{python_cmd} -m pytest"), "pytest")
    } else {
        (
            format!("{python_cmd} -m unittest discover"),
            "unittest (pytest is not installed here; with it, `-m pytest` finds more tests)",
        )
    };
    test.steps.push(
        Step::new(
            "tests",
            format!(
                "status=0\n{runner} || status=$?\n\
                 # Exit status 5: no tests were found yet, which is fine for a new project.\n\
                 if [ \"$status\" -eq 5 ]; then echo \"no tests found\"; status=0; fi\n\
                 exit \"$status\""
            ),
        )
        .comment(format!("Runs the tests with {comment}."))
        .timeout("20m"),
    );

    if python.build_system {
        if tools.python_build {
            build.steps.push(
                Step::new("python -m build", "python3 -m build")
                    .comment("Builds the sdist and wheel into dist/."),
            );
        } else {
            build.steps.push(
                Step::new(
                    "python -m build",
                    "venv=\"$(mktemp -d)\"\n\
                     trap 'rm -rf \"$venv\"' EXIT\n\
                     python3 -m venv \"$venv\"\n\
                     \"$venv/bin/python\" -m pip install --quiet build\n\
                     \"$venv/bin/python\" -m build",
                )
                .comment(
                    "Builds the sdist and wheel into dist/. The `build` frontend is not installed \
                     here, so it goes into a throwaway virtualenv outside the workspace (inside, \
                     the sdist could pick it up).",
                ),
            );
        }
        build.footer.extend([
            "Keep the packages for later jobs (`needs: [build]`):".into(),
            "artifacts:".into(),
            "  paths: [dist]".into(),
        ]);
    } else {
        build
            .steps
            .push(Step::new("python compileall", COMPILEALL).comment(
                "No [build-system] in pyproject.toml, so nothing to package: compile everything \
             instead.",
            ));
    }
}

fn go_jobs(go: &GoFacts, [validate, test, build]: [&mut Job; 3]) {
    // With no package yet, `go vet` and `go test` fail on `./...`; skip until there is one.
    let guarded = |command: &str| {
        if go.has_sources {
            command.to_owned()
        } else {
            format!(
                "if [ -z \"$(go list ./...)\" ]; then echo \"no Go packages yet\"; exit 0; fi\n{command}"
            )
        }
    };
    let mut vet = Step::new("go vet", guarded("go vet ./..."))
        .comment("Go keeps its build and module caches in your home folder across runs.");
    if !go.has_sources {
        vet = vet.comment("No .go files yet: these steps pass until the first package appears.");
    }
    validate.steps.push(vet);
    test.steps
        .push(Step::new("go test", guarded("go test ./...")).timeout("20m"));
    build
        .steps
        .push(Step::new("go build", guarded("go build ./...")));
}

fn generic_jobs([validate, test, build]: [&mut Job; 3]) {
    validate.steps.push(
        Step::new(
            "check",
            "echo \"$GREETING from keelson: replace this with your linters\"\nls -la",
        )
        .comment("Replace these steps with your project's own commands."),
    );
    test.steps.push(
        Step::new(
            "test",
            "echo \"run your tests here\"\necho \"result=passed\" >> \"$KEELSON_OUTPUT\"",
        )
        .comment("`name=value` lines appended to $KEELSON_OUTPUT become outputs of the job.")
        .timeout("10m"),
    );
    build.steps.push(Step::new(
        "build",
        "echo \"tests said: ${{ needs.test.outputs.result }}\"\necho \"build your project here\"",
    ));
    build.footer.extend([
        "Cache folders between runs, keyed on file contents:".into(),
        "cache:".into(),
        "  key: deps-${{ hashFiles('lockfile') }}".into(),
        "  restore-keys: [deps-]".into(),
        "  paths: [deps]".into(),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        dir
    }

    fn all_tools() -> Tools {
        Tools {
            rustfmt: true,
            clippy: true,
            pytest: true,
            python_build: true,
            yarn: true,
            pnpm: true,
        }
    }

    fn generate(dir: &Path, tools: &Tools) -> String {
        let kinds = detect(dir).unwrap();
        let text = render(&Facts::read(dir, &kinds).unwrap(), tools);
        check_shape(&text);
        text
    }

    /// The `run:` commands of one job, in order (block scalars joined by newlines).
    fn runs(text: &str, job: &str) -> Vec<String> {
        let mut runs = Vec::new();
        let mut in_job = false;
        let mut block: Option<String> = None;
        for line in text.lines() {
            if let Some(b) = block.as_mut() {
                if let Some(content) = line.strip_prefix("          ") {
                    b.push_str(content);
                    b.push('\n');
                    continue;
                }
                if line.is_empty() {
                    b.push('\n');
                    continue;
                }
                runs.push(block.take().unwrap().trim_end().to_owned());
            }
            if line.starts_with("  ") && !line.starts_with("   ") && !line.starts_with("  #") {
                in_job = line == format!("  {job}:");
            }
            if !in_job {
                continue;
            }
            if line == "        run: |" {
                block = Some(String::new());
            } else if let Some(run) = line.strip_prefix("        run: ") {
                runs.push(run.to_owned());
            }
        }
        if let Some(b) = block {
            runs.push(b.trim_end().to_owned());
        }
        runs
    }

    struct NoIncludes;

    impl keelson_pipeline::load::SourceLoader for NoIncludes {
        fn read(&self, path: &str) -> Result<String, String> {
            Err(format!("a starter pipeline includes nothing, not {path}"))
        }
    }

    /// Light structural checks (the three jobs in order with their `needs`, steps with a
    /// name and a run, two-space indentation, no tabs), then the real loader must accept it.
    fn check_shape(text: &str) {
        assert!(!text.contains('\t'), "tabs in:\n{text}");
        assert!(text.ends_with('\n'));
        let jobs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(':'))
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect();
        let job_lines: Vec<&str> = jobs
            .iter()
            .copied()
            .filter(|l| ["  validate:", "  test:", "  build:"].contains(l))
            .collect();
        assert_eq!(job_lines, ["  validate:", "  test:", "  build:"], "{text}");
        assert!(text.contains("  test:\n    needs: [validate]\n"), "{text}");
        assert!(text.contains("  build:\n    needs: [test]\n"), "{text}");
        assert!(text.contains("\njobs:\n"));
        assert!(text.starts_with("# Keelson pipeline"));
        for line in text.lines() {
            let indent = line.len() - line.trim_start().len();
            assert_eq!(indent % 2, 0, "odd indentation: {line:?}");
        }
        for job in ["validate", "test", "build"] {
            let runs = runs(text, job);
            assert!(!runs.is_empty(), "job {job} has no steps:\n{text}");
            assert!(runs.iter().all(|r| !r.trim().is_empty()));
        }
        assert_eq!(
            text.matches("      - name: ").count(),
            text.matches("        run: ").count(),
            "every step has a name and a run"
        );
        let loaded = keelson_pipeline::load::load(".keelson.yml", text, &NoIncludes);
        assert!(
            loaded.pipeline.is_some(),
            "{}\n{text}",
            loaded.diagnostics.render(&loaded.sources)
        );
    }

    #[test]
    fn detects_nothing_in_an_empty_folder() {
        let dir = project(&[]);
        assert_eq!(detect(dir.path()).unwrap(), []);
    }

    #[test]
    fn detects_each_kind_by_its_markers() {
        let cases: [(&str, ProjectKind); 6] = [
            ("Cargo.toml", ProjectKind::Cargo),
            ("package.json", ProjectKind::Npm),
            ("pyproject.toml", ProjectKind::Python),
            ("setup.py", ProjectKind::Python),
            ("requirements.txt", ProjectKind::Python),
            ("go.mod", ProjectKind::Go),
        ];
        for (marker, kind) in cases {
            let dir = project(&[(marker, "")]);
            assert_eq!(detect(dir.path()).unwrap(), [kind], "{marker}");
        }
    }

    #[test]
    fn detects_several_kinds_in_a_fixed_order() {
        let dir = project(&[
            ("go.mod", "module x\n"),
            ("requirements.txt", ""),
            ("setup.py", ""),
            ("package.json", "{}"),
            ("Cargo.toml", ""),
        ]);
        assert_eq!(
            detect(dir.path()).unwrap(),
            [
                ProjectKind::Cargo,
                ProjectKind::Npm,
                ProjectKind::Python,
                ProjectKind::Go
            ]
        );
    }

    #[test]
    fn markers_must_be_files_and_the_folder_must_exist() {
        let dir = project(&[("Cargo.toml/inner", "")]);
        assert_eq!(detect(dir.path()).unwrap(), []);
        let missing = dir.path().join("nope");
        assert_eq!(
            detect(&missing).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let file = project(&[("f", "")]);
        assert!(detect(&file.path().join("f")).is_err());
    }

    #[test]
    fn generic_pipeline_when_nothing_is_detected() {
        let dir = project(&[("notes.txt", "hi")]);
        let text = starter_pipeline(dir.path(), &[]).unwrap();
        check_shape(&text);
        assert!(text.contains("placeholders"));
        assert!(text.contains("GREETING: \"hello\""));
        assert!(runs(&text, "validate")[0].starts_with("echo "));
        assert!(runs(&text, "test")[0].contains(">> \"$KEELSON_OUTPUT\""));
        assert!(runs(&text, "build")[0].contains("${{ needs.test.outputs.result }}"));
        assert!(
            !text.contains("\n    cache:"),
            "no real cache in the generic pipeline"
        );
    }

    #[test]
    fn cargo_pipeline() {
        let dir = project(&[
            (
                "Cargo.toml",
                "[package]\nname = \"demo-app\"\nversion = \"0.1.0\"\n",
            ),
            ("Cargo.lock", "version = 4\n"),
            ("src/main.rs", "fn main() {}\n"),
        ]);
        let text = generate(dir.path(), &all_tools());
        assert_eq!(
            runs(&text, "validate"),
            [
                "cargo fmt --all --check",
                "cargo clippy --workspace --all-targets -- -D warnings"
            ]
        );
        assert_eq!(runs(&text, "test"), ["cargo test --workspace"]);
        assert_eq!(runs(&text, "build"), ["cargo build --release --workspace"]);
        assert!(
            text.contains(
                "      key: cargo-test-${{ hashFiles('Cargo.lock', '**/Cargo.toml') }}\n\
             \x20     restore-keys: [cargo-test-]\n\
             \x20     paths: [target]\n"
            ),
            "{text}"
        );
        assert!(text.contains("CARGO_TERM_COLOR: \"never\""));
        assert!(
            text.contains("#   paths: [target/release/demo-app]"),
            "{text}"
        );
        assert!(text.contains("for a Rust (Cargo) project"));
    }

    #[test]
    fn cargo_pipeline_without_rustfmt_or_clippy_or_lockfile() {
        let dir = project(&[
            ("Cargo.toml", "[package]\nname = \"lib\"\n"),
            ("src/lib.rs", ""),
        ]);
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "validate"),
            ["cargo check --workspace --all-targets"]
        );
        assert!(text.contains("rustup component add rustfmt"));
        assert!(text.contains("rustup component add clippy"));
        assert!(text.contains("hashFiles('Cargo.lock', '**/Cargo.toml')"));
        assert!(text.contains("target/release/<binary>"));
    }

    const NPM_INIT: &str = r#"{
  "name": "fresh",
  "version": "1.0.0",
  "main": "index.js",
  "scripts": { "test": "echo \"Error: no test specified\" && exit 1" },
  "license": "ISC"
}"#;

    #[test]
    fn npm_init_project_without_files() {
        let dir = project(&[("package.json", NPM_INIT)]);
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "validate"),
            ["npm pack --dry-run --ignore-scripts"]
        );
        assert_eq!(runs(&text, "test"), ["npm pack --dry-run --ignore-scripts"]);
        assert_eq!(
            runs(&text, "build"),
            ["npm pack --dry-run --ignore-scripts"]
        );
        assert!(
            !runs(&text, "test").iter().any(|r| r.contains("npm test")),
            "placeholder test script must not run:\n{text}"
        );
        let all: Vec<String> = ["validate", "test", "build"]
            .iter()
            .flat_map(|job| runs(&text, job))
            .collect();
        assert!(!all.iter().any(|r| r.contains("npm ci")), "{text}");
        assert!(text.contains("for a Node.js project"));
    }

    #[test]
    fn npm_project_with_scripts_lockfile_and_entries() {
        let package = r#"{
  "name": "app", "main": "./lib/main.js", "bin": { "app": "bin/app.mjs", "gone": "bin/gone.js" },
  "scripts": { "lint": "eslint .", "test": "node --test", "build": "tsc" }
}"#;
        let dir = project(&[
            ("package.json", package),
            ("package-lock.json", "{}"),
            ("lib/main.js", ""),
            ("bin/app.mjs", ""),
        ]);
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "validate"),
            ["npm ci --no-audit --no-fund", "npm run lint"]
        );
        assert_eq!(
            runs(&text, "test"),
            ["npm ci --no-audit --no-fund", "npm test"]
        );
        assert_eq!(
            runs(&text, "build"),
            ["npm ci --no-audit --no-fund", "npm run build"]
        );

        // Without a lint script, the existing entry files get a syntax check.
        let dir = project(&[
            (
                "package.json",
                r#"{ "main": "lib/main.js", "bin": "bin/app.mjs" }"#,
            ),
            ("lib/main.js", ""),
            ("bin/app.mjs", ""),
        ]);
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "validate"),
            ["node --check lib/main.js && node --check bin/app.mjs"]
        );
    }

    #[test]
    fn yarn_and_pnpm_lockfiles() {
        let dir = project(&[
            ("package.json", r#"{ "scripts": { "test": "jest" } }"#),
            ("yarn.lock", "# yarn lockfile v1\n"),
        ]);
        let text = generate(dir.path(), &all_tools());
        assert_eq!(
            runs(&text, "test"),
            ["yarn install --frozen-lockfile", "yarn run test"]
        );

        let dir = project(&[
            (
                "package.json",
                r#"{ "scripts": { "build": "vite build" } }"#,
            ),
            ("yarn.lock", "__metadata:\n  version: 8\n"),
        ]);
        let text = generate(dir.path(), &all_tools());
        assert_eq!(
            runs(&text, "build"),
            ["yarn install --immutable", "yarn run build"]
        );
        // No yarn here: npm, with a note.
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "build"),
            ["npm install --no-audit --no-fund", "npm run build"]
        );
        assert!(text.contains("yarn.lock asks for yarn, but yarn is not installed here"));

        let dir = project(&[
            ("package.json", r#"{ "scripts": { "lint": "eslint ." } }"#),
            ("pnpm-lock.yaml", "lockfileVersion: '9.0'\n"),
        ]);
        let text = generate(dir.path(), &all_tools());
        assert_eq!(
            runs(&text, "validate"),
            ["pnpm install --frozen-lockfile", "pnpm run lint"]
        );
        // No pnpm here: npm, with a note.
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(
            runs(&text, "validate"),
            ["npm install --no-audit --no-fund", "npm run lint"]
        );
        assert!(text.contains("but pnpm is not installed here"), "{text}");
    }

    #[test]
    fn invalid_package_json_is_an_error() {
        let dir = project(&[("package.json", "{ not json")]);
        let error = starter_pipeline(dir.path(), &[ProjectKind::Npm]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn python_pyproject_with_build_system() {
        let pyproject = "[project]\nname = \"pkg\"\nversion = \"0.1.0\"\n\n\
                         [build-system]\nrequires = [\"setuptools>=61\"]\n\
                         build-backend = \"setuptools.build_meta\"\n";
        let dir = project(&[("pyproject.toml", pyproject), ("src/pkg/__init__.py", "")]);
        let text = generate(dir.path(), &all_tools());
        assert_eq!(runs(&text, "validate"), [COMPILEALL]);
        let test = runs(&text, "test");
        assert_eq!(test[0], "python3 -m venv --system-site-packages .venv");
        assert_eq!(test[1], ".venv/bin/python -m pip install -e .");
        assert_eq!(
            test[2],
            ".venv/bin/python -c 'import pytest' 2>/dev/null || .venv/bin/python -m pip install pytest"
        );
        assert!(
            test[3].contains("\n.venv/bin/python -m pytest || status=$?\n"),
            "{}",
            test[3]
        );
        assert!(test[3].contains("-eq 5"));
        assert_eq!(runs(&text, "build"), ["python3 -m build"]);
        assert!(text.contains("#   paths: [dist]"));

        // Without the build frontend, it goes into a virtualenv; without pytest, unittest.
        let text = generate(dir.path(), &Tools::default());
        let build = runs(&text, "build");
        assert_eq!(build.len(), 1);
        assert!(build[0].contains("\"$venv/bin/python\" -m pip install --quiet build\n"));
        assert!(
            build[0].ends_with("\n\"$venv/bin/python\" -m build"),
            "{}",
            build[0]
        );
        assert!(runs(&text, "test")[2].contains(".venv/bin/python -m unittest discover"));
    }

    #[test]
    fn python_requirements_only() {
        let dir = project(&[
            (
                "requirements.txt",
                "requests==2.31\npytest>=7 ; python_version > '3'\n",
            ),
            ("main.py", "print('hi')\n"),
        ]);
        let text = generate(dir.path(), &Tools::default());
        let test = runs(&text, "test");
        assert_eq!(
            test[1],
            ".venv/bin/python -m pip install -r requirements.txt"
        );
        assert!(
            test[2].contains(".venv/bin/python -m pytest"),
            "pytest comes from requirements.txt"
        );
        assert_eq!(runs(&text, "build"), [COMPILEALL]);
        assert!(text.contains("PIP_DISABLE_PIP_VERSION_CHECK: \"1\""));
    }

    #[test]
    fn python_setup_py_without_anything_to_install() {
        let dir = project(&[("setup.py", "from setuptools import setup\nsetup()\n")]);
        let text = generate(dir.path(), &Tools::default());
        let test = runs(&text, "test");
        assert_eq!(test.len(), 1);
        assert!(test[0].contains("python3 -m unittest discover"));
        assert!(!text.contains(".venv/bin"));
        assert_eq!(runs(&text, "build"), [COMPILEALL]);
    }

    #[test]
    fn go_pipeline() {
        let dir = project(&[
            ("go.mod", "module example.com/hello\n\ngo 1.22\n"),
            ("cmd/hello/main.go", "package main\n\nfunc main() {}\n"),
        ]);
        let text = generate(dir.path(), &Tools::default());
        assert_eq!(runs(&text, "validate"), ["go vet ./..."]);
        assert_eq!(runs(&text, "test"), ["go test ./..."]);
        assert_eq!(runs(&text, "build"), ["go build ./..."]);
        assert!(text.contains("for a Go project"));
    }

    #[test]
    fn go_module_without_sources_yet() {
        let dir = project(&[
            ("go.mod", "module example.com/empty\n"),
            ("vendor/x/x.go", "package x\n"),
            (".hidden/y.go", "package y\n"),
        ]);
        let text = generate(dir.path(), &Tools::default());
        let vet = runs(&text, "validate");
        assert_eq!(
            vet,
            [
                "if [ -z \"$(go list ./...)\" ]; then echo \"no Go packages yet\"; exit 0; fi\ngo vet ./..."
            ]
        );
        assert!(runs(&text, "test")[0].ends_with("\ngo test ./..."));
    }

    #[test]
    fn several_kinds_share_the_jobs() {
        let dir = project(&[
            ("Cargo.toml", "[package]\nname = \"both\"\n"),
            ("package.json", r#"{ "scripts": { "build": "webpack" } }"#),
        ]);
        let text = generate(dir.path(), &all_tools());
        assert!(text.contains("for a Rust (Cargo) + Node.js project"));
        assert_eq!(
            runs(&text, "build"),
            [
                "cargo build --release --workspace",
                "npm install --no-audit --no-fund",
                "npm run build"
            ]
        );
        assert_eq!(
            text.matches("\n    cache:\n").count(),
            3,
            "one cache per job"
        );
    }

    #[test]
    fn wraps_long_comments() {
        let mut out = String::new();
        let text = "word ".repeat(40);
        write_comment(&mut out, 4, &text);
        assert!(out.lines().count() > 1);
        for line in out.lines() {
            assert!(line.starts_with("    # word"), "{line:?}");
            assert!(line.len() <= COMMENT_WIDTH, "{line:?}");
        }
    }

    #[test]
    fn quotes_names_that_yaml_would_misread() {
        assert_eq!(yaml_scalar("my-app"), "my-app");
        assert_eq!(yaml_scalar("true"), "\"true\"");
        assert_eq!(yaml_scalar("123"), "\"123\"");
        assert_eq!(yaml_scalar(".5"), "\".5\"");
        assert_eq!(yaml_scalar(".inf"), "\".inf\"");
        assert_eq!(yaml_scalar(".venv/bin/python"), ".venv/bin/python");
        assert_eq!(yaml_scalar("a: b"), "\"a: b\"");
        assert_eq!(yaml_scalar("#x"), "\"#x\"");
        assert_eq!(yaml_scalar("say \"hi\""), "say \"hi\"");
        assert_eq!(yaml_scalar("'q"), "\"'q\"");
        assert_eq!(yaml_flow_scalar("a,b"), "\"a,b\"");
        assert_eq!(yaml_quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(shell_word("lib/main.js"), "lib/main.js");
        assert_eq!(shell_word("my file.js"), "'my file.js'");
        assert_eq!(shell_word("it's.js"), "'it'\\''s.js'");
    }

    #[test]
    fn pipeline_name_is_the_folder_name() {
        let parent = tempfile::tempdir().unwrap();
        let dir: PathBuf = parent.path().join("yes");
        fs::create_dir(&dir).unwrap();
        let text = starter_pipeline(&dir, &[]).unwrap();
        assert!(text.contains("\nname: \"yes\"\n"), "{text}");
    }

    #[test]
    fn reads_toml_strings_and_tables() {
        let toml = "[workspace]\nname = \"no\"\n[package]\n# c\nname = \"yes-1\" # trailing\n[build-system] # x\n";
        assert_eq!(
            toml_string_in_table(toml, "package", "name").as_deref(),
            Some("yes-1")
        );
        assert_eq!(toml_string_in_table(toml, "package", "version"), None);
        assert!(toml_has_table(toml, "build-system"));
        assert!(!toml_has_table("[tool.build-system]\n", "build-system"));
    }

    #[test]
    fn starter_pipeline_probes_the_machine_and_still_has_the_jobs() {
        // Whatever is installed here, the kinds' core commands are there.
        let dir = project(&[
            ("Cargo.toml", "[package]\nname = \"p\"\n"),
            ("pyproject.toml", "[project]\nname = \"p\"\n"),
            ("go.mod", "module p\n"),
            ("main.go", "package main\n"),
        ]);
        let kinds = detect(dir.path()).unwrap();
        let text = starter_pipeline(dir.path(), &kinds).unwrap();
        check_shape(&text);
        assert!(text.contains("run: cargo test --workspace"));
        assert!(text.contains("run: go vet ./..."));
        assert!(text.contains(COMPILEALL));
    }
}
