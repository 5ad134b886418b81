//! Git modes: scans what commits added, by shelling out to the real `git` binary and reading
//! `git log -p -U0` output as a stream.
//!
//! Whole history walks every commit reachable from any ref (`--all`); a range `A..B` walks only
//! the commits the range adds. Only added (`+`) lines are scanned; each finding carries the commit
//! (sha, author, email, author date) and the line number in the new file, taken from the hunk
//! header. Merge commits show no patch (`git log` default), so a secret is reported at the
//! non-merge commit that introduced it.
//!
//! Invariant: the parser trusts hunk line counts, not line prefixes, to know where a hunk ends, so
//! an added line that itself starts with `++ ` or `@@` is still content.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use super::config::SecretsConfig;
use super::rule::Rules;
use super::{engine, finding_for};
use crate::finding::{Commit, ScanOutput, Skipped};

/// Why a git scan could not run.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot run `git` (is it installed and on PATH?): {0}")]
    Spawn(#[source] std::io::Error),
    #[error("{path} is not a git repository: {detail}")]
    NotARepository { path: String, detail: String },
    #[error("bad commit range `{range}`: {message}")]
    BadRange { range: String, message: String },
    #[error("`git log` failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error("cannot read `git log` output: {0}")]
    Read(#[source] std::io::Error),
}

/// The marker our `--format` puts at the start of each commit header line. No diff line starts
/// with it.
const COMMIT_MARKER: u8 = 0x01;

fn git(repo: &Path) -> Command {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(repo)
        .arg("-c")
        .arg("core.quotePath=false")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null());
    command
}

fn run_quiet(command: &mut Command) -> Result<(bool, String), GitError> {
    let output = command.output().map_err(GitError::Spawn)?;
    Ok((
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    ))
}

/// Checks the range's shape and that each named side is a commit in `repo`.
fn check_range(repo: &Path, range: &str) -> Result<(), GitError> {
    let bad = |message: &str| GitError::BadRange {
        range: range.to_string(),
        message: message.to_string(),
    };
    if range.starts_with('-') || range.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad(
            "a range must not start with `-` or contain spaces or control characters",
        ));
    }
    let Some((from, to)) = range.split_once("..") else {
        return Err(bad(
            "expected `A..B` (the commits reachable from B but not from A)",
        ));
    };
    let to = to.strip_prefix('.').unwrap_or(to);
    if from.is_empty() && to.is_empty() {
        return Err(bad("both ends of the range are empty"));
    }
    for side in [from, to] {
        if side.is_empty() {
            continue;
        }
        let (ok, _) = run_quiet(
            git(repo)
                .args(["rev-parse", "--verify", "--quiet"])
                .arg(format!("{side}^{{commit}}")),
        )?;
        if !ok {
            return Err(bad(&format!("`{side}` is not a commit in this repository")));
        }
    }
    Ok(())
}

/// Scans git history: `range` = `None` for every commit on all refs, or `Some("A..B")` for only
/// what that range adds. Findings are sorted.
pub fn scan_git(
    repo: &Path,
    range: Option<&str>,
    rules: &Rules,
    config: &SecretsConfig,
) -> Result<ScanOutput, GitError> {
    let (is_repo, detail) = run_quiet(git(repo).args(["rev-parse", "--git-dir"]))?;
    if !is_repo {
        return Err(GitError::NotARepository {
            path: repo.display().to_string(),
            detail,
        });
    }
    if let Some(range) = range {
        check_range(repo, range)?;
    }
    let mut command = git(repo);
    command.args([
        "log",
        "-p",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "--format=%x01%H%x00%an%x00%ae%x00%aI",
    ]);
    match range {
        Some(range) => command.arg(range),
        None => command.arg("--all"),
    };
    command.arg("--");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(GitError::Spawn)?;
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut parser = LogParser::new(rules, config);
    let read_result = parser.read(BufReader::with_capacity(1 << 16, stdout));
    let status = child.wait().map_err(GitError::Spawn)?;
    let stderr_text = stderr_reader.join().unwrap_or_default();
    read_result.map_err(GitError::Read)?;
    if !status.success() {
        return Err(GitError::Failed {
            status: status.to_string(),
            stderr: stderr_text.trim().to_string(),
        });
    }
    let mut output = parser.output;
    output.sort();
    Ok(output)
}

/// Where the parser is inside `git log -p` output.
enum State {
    /// Commit and file headers, between hunks.
    Header,
    /// Inside a hunk, with the old and new lines still to come.
    Hunk { old_left: usize, new_left: usize },
}

/// Streams `git log -p -U0` output into findings, one (commit, file) at a time.
struct LogParser<'a> {
    rules: &'a Rules,
    config: &'a SecretsConfig,
    commit: Option<Commit>,
    /// The new path of the current file (`None` for deletions and before `+++`).
    path: Option<String>,
    /// The path from `diff --git a/P b/P`, for reporting binary files.
    diff_path: Option<String>,
    state: State,
    next_new_line: usize,
    added: String,
    added_lines: Vec<usize>,
    oversized: bool,
    output: ScanOutput,
}

impl<'a> LogParser<'a> {
    fn new(rules: &'a Rules, config: &'a SecretsConfig) -> Self {
        LogParser {
            rules,
            config,
            commit: None,
            path: None,
            diff_path: None,
            state: State::Header,
            next_new_line: 1,
            added: String::new(),
            added_lines: Vec::new(),
            oversized: false,
            output: ScanOutput::default(),
        }
    }

    fn read(&mut self, mut reader: impl BufRead) -> std::io::Result<()> {
        let mut raw = Vec::with_capacity(256);
        loop {
            raw.clear();
            if reader.read_until(b'\n', &mut raw)? == 0 {
                break;
            }
            if raw.last() == Some(&b'\n') {
                raw.pop();
            }
            self.line(&raw);
        }
        self.flush_file();
        Ok(())
    }

    fn line(&mut self, raw: &[u8]) {
        if let State::Hunk { old_left, new_left } = &mut self.state {
            match raw.first() {
                Some(b'+') if *new_left > 0 => {
                    *new_left -= 1;
                    let content = String::from_utf8_lossy(&raw[1..]);
                    self.add_line(&content);
                    self.next_new_line += 1;
                }
                Some(b'-') if *old_left > 0 => *old_left -= 1,
                Some(b' ') if *old_left > 0 && *new_left > 0 => {
                    *old_left -= 1;
                    *new_left -= 1;
                    self.next_new_line += 1;
                }
                Some(b'\\') => {}
                _ => {
                    // The counts say the hunk is over: this line is a header.
                    self.state = State::Header;
                    return self.header_line(raw);
                }
            }
            if let State::Hunk {
                old_left: 0,
                new_left: 0,
            } = self.state
            {
                self.state = State::Header;
            }
            return;
        }
        self.header_line(raw);
    }

    fn header_line(&mut self, raw: &[u8]) {
        if raw.first() == Some(&COMMIT_MARKER) {
            self.flush_file();
            self.path = None;
            self.diff_path = None;
            self.commit = parse_commit(&String::from_utf8_lossy(&raw[1..]));
            return;
        }
        let line = String::from_utf8_lossy(raw);
        if let Some(rest) = line.strip_prefix("diff --git ") {
            self.flush_file();
            self.path = None;
            self.diff_path = same_path_of_diff_header(rest);
        } else if let Some(rest) = line.strip_prefix("+++ ") {
            self.flush_file();
            self.path = new_path(rest);
        } else if let Some(rest) = line.strip_prefix("@@ ") {
            if let Some((old_count, new_start, new_count)) = parse_hunk_header(rest) {
                self.next_new_line = new_start.max(1);
                if old_count > 0 || new_count > 0 {
                    self.state = State::Hunk {
                        old_left: old_count,
                        new_left: new_count,
                    };
                }
            }
        } else if line.starts_with("Binary files ") && line.ends_with(" differ") {
            let path = self
                .diff_path
                .clone()
                .unwrap_or_else(|| "<binary>".to_string());
            self.output.skipped.push(Skipped {
                path: format!("{path}@{}", self.short_sha()),
                reason: "binary file in git history".to_string(),
            });
        }
    }

    /// The first 12 characters of the current commit's sha, for naming skipped blobs.
    fn short_sha(&self) -> String {
        self.commit
            .as_ref()
            .map_or_else(String::new, |c| c.sha.chars().take(12).collect())
    }

    fn add_line(&mut self, content: &str) {
        if self.path.is_none() || self.oversized {
            return;
        }
        if (self.added.len() + content.len()) as u64 > self.config.max_file_size {
            self.oversized = true;
            return;
        }
        self.added.push_str(content);
        self.added.push('\n');
        self.added_lines.push(self.next_new_line);
    }

    fn flush_file(&mut self) {
        let added = std::mem::take(&mut self.added);
        let added_lines = std::mem::take(&mut self.added_lines);
        let oversized = std::mem::replace(&mut self.oversized, false);
        let Some(path) = self.path.clone() else {
            return;
        };
        if oversized {
            self.output.skipped.push(Skipped {
                path: format!("{path}@{}", self.short_sha()),
                reason: format!(
                    "lines added by this commit exceed the {} byte limit",
                    self.config.max_file_size
                ),
            });
            return;
        }
        if added.is_empty() {
            return;
        }
        for hit in engine::find(self.rules, self.config, &path, &added) {
            let line = added_lines.get(hit.line - 1).copied().unwrap_or(hit.line);
            let finding = finding_for(self.rules, &hit, &added, &path, line, self.commit.clone());
            self.output.findings.push(finding);
        }
    }
}

fn parse_commit(header: &str) -> Option<Commit> {
    let mut fields = header.split('\0');
    let sha = fields.next()?.trim().to_string();
    let author = fields.next()?.to_string();
    let email = fields.next()?.to_string();
    let date = fields.next()?.trim().to_string();
    Some(Commit {
        sha,
        author,
        email,
        date,
    })
}

/// `a/P b/P` → `P` (only when both sides are the same path, as with `--no-renames`).
fn same_path_of_diff_header(rest: &str) -> Option<String> {
    if rest.len() < 7 || rest.len().is_multiple_of(2) {
        return None;
    }
    let half = (rest.len() - 1) / 2;
    let (old, new) = (rest.get(..half)?, rest.get(half + 1..)?);
    let old = old.strip_prefix("a/")?;
    let new = new.strip_prefix("b/")?;
    (old == new).then(|| new.to_string())
}

/// The path of a `+++` line: `b/P` → `P`, `/dev/null` → `None`, C-quoted `"b/P"` unquoted.
fn new_path(rest: &str) -> Option<String> {
    let rest = rest.trim_end_matches('\t');
    if rest == "/dev/null" {
        return None;
    }
    let unquoted = if rest.starts_with('"') && rest.ends_with('"') && rest.len() >= 2 {
        unquote_c(&rest[1..rest.len() - 1])
    } else {
        rest.to_string()
    };
    Some(
        unquoted
            .strip_prefix("b/")
            .map(str::to_string)
            .unwrap_or(unquoted),
    )
}

/// Undoes git's C-style path quoting (`\"`, `\\`, `\t`, `\n`, octal bytes).
fn unquote_c(quoted: &str) -> String {
    let mut bytes = Vec::with_capacity(quoted.len());
    let mut input = quoted.bytes().peekable();
    while let Some(byte) = input.next() {
        if byte != b'\\' {
            bytes.push(byte);
            continue;
        }
        match input.next() {
            Some(b'n') => bytes.push(b'\n'),
            Some(b't') => bytes.push(b'\t'),
            Some(b'r') => bytes.push(b'\r'),
            Some(digit @ b'0'..=b'7') => {
                let mut value = u32::from(digit - b'0');
                for _ in 0..2 {
                    match input.peek() {
                        Some(&d @ b'0'..=b'7') => {
                            value = value * 8 + u32::from(d - b'0');
                            input.next();
                        }
                        _ => break,
                    }
                }
                bytes.push((value & 0xff) as u8);
            }
            Some(other) => bytes.push(other),
            None => bytes.push(b'\\'),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `-a[,b] +c[,d] @@…` → `(b, c, d)`; counts default to 1.
fn parse_hunk_header(rest: &str) -> Option<(usize, usize, usize)> {
    let mut parts = rest.split(' ');
    let old = parts.next()?.strip_prefix('-')?;
    let new = parts.next()?.strip_prefix('+')?;
    let count = |range: &str| -> Option<(usize, usize)> {
        match range.split_once(',') {
            Some((start, count)) => Some((start.parse().ok()?, count.parse().ok()?)),
            None => Some((range.parse().ok()?, 1)),
        }
    };
    let (_, old_count) = count(old)?;
    let (new_start, new_count) = count(new)?;
    Some((old_count, new_start, new_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunk_headers_parse_with_default_counts() {
        assert_eq!(parse_hunk_header("-0,0 +1,3 @@"), Some((0, 1, 3)));
        assert_eq!(parse_hunk_header("-5 +7 @@ fn x()"), Some((1, 7, 1)));
        assert_eq!(parse_hunk_header("-3,2 +2,0 @@"), Some((2, 2, 0)));
        assert_eq!(parse_hunk_header("garbage"), None);
    }

    #[test]
    fn paths_of_diff_headers() {
        assert_eq!(
            same_path_of_diff_header("a/x y b/x y").as_deref(),
            Some("x y")
        );
        assert_eq!(same_path_of_diff_header("a/x b/z"), None);
        assert_eq!(new_path("b/src/a.rs").as_deref(), Some("src/a.rs"));
        assert_eq!(new_path("/dev/null"), None);
        assert_eq!(
            new_path("\"b/we\\\"ird\\tname\\303\\251\"").as_deref(),
            Some("we\"ird\tname\u{e9}")
        );
    }

    #[test]
    fn added_lines_that_look_like_headers_stay_content() {
        let rules = Rules::builtin();
        let config = SecretsConfig::default();
        let mut parser = LogParser::new(&rules, &config);
        let log = "\u{1}abc\0Ann\0ann@example.org\x002024-01-02T03:04:05+00:00\n\
                   diff --git a/f b/f\n--- a/f\n+++ b/f\n@@ -0,0 +1,2 @@\n+++ b/not-a-header\n+@@ -1 +1 @@\n";
        for line in log.lines() {
            parser.line(line.as_bytes());
        }
        assert_eq!(parser.path.as_deref(), Some("f"));
        assert_eq!(parser.added, "++ b/not-a-header\n@@ -1 +1 @@\n");
        assert_eq!(parser.added_lines, vec![1, 2]);
        assert!(matches!(parser.state, State::Header));
    }
}
