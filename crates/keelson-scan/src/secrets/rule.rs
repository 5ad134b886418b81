//! Secret rules: one TOML file per credential format (`rules/secrets/<id>.toml`), parsed and
//! compiled into [`Rules`], the set the engine runs.
//!
//! A rule file holds `id`, `title`, `description`, `severity`, `keywords` (ASCII, matched
//! case-insensitively by the prefilter), `regex` (the secret is the named group `secret`, else the
//! first numbered group that took part in the match, else the whole match), an optional `entropy`
//! minimum (Shannon, bits per character, of the secret), an optional `lines_after` (how many lines
//! after a keyword hit the regex may span, for multi-line secrets such as PEM blocks), an optional
//! `help`, `generic = true` for keyword-context rules that give way to specific ones on the same
//! secret, an `[allowlist]` (`paths`, `regexes`, `stopwords`) and `[fixtures]` with `true` (must be
//! found) and `false` (must not be found) examples.
//!
//! Invariant: every rule in a [`Rules`] has at least one keyword and a compiled regex; all keywords
//! of all rules live in one case-insensitive Aho-Corasick automaton.

use std::fmt;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::Regex;
use serde::Deserialize;

use super::config::{Allowlist, AllowlistSpec};
use crate::finding::Severity;

mod builtin_files {
    include!(concat!(env!("OUT_DIR"), "/secret_rules.rs"));
}

/// The most lines a rule may look past its keyword line (`lines_after`).
pub const MAX_LINES_AFTER: usize = 1000;

/// The names and contents of the built-in rule files, as embedded at build time.
pub fn builtin_rule_files() -> &'static [(&'static str, &'static str)] {
    builtin_files::BUILTIN_RULE_FILES
}

/// A rule file that could not be loaded: which file, where in it, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule file's name.
    pub file: String,
    /// 1-based line of the problem.
    pub line: usize,
    /// 1-based column (characters) of the problem.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for RuleError {}

/// All the errors found while loading a set of rule files (every file is checked, not just the
/// first bad one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for RuleErrors {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: toml::Spanned<String>,
    title: String,
    description: String,
    severity: toml::Spanned<String>,
    keywords: toml::Spanned<Vec<String>>,
    regex: toml::Spanned<String>,
    #[serde(default)]
    entropy: Option<toml::Spanned<f64>>,
    #[serde(default)]
    lines_after: Option<toml::Spanned<usize>>,
    #[serde(default)]
    help: Option<String>,
    #[serde(default)]
    generic: bool,
    #[serde(default)]
    allowlist: Option<toml::Spanned<AllowlistSpec>>,
    #[serde(default)]
    fixtures: RuleFixtures,
}

/// A rule's own examples: `true` ones it must find, `false` ones it must not.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFixtures {
    #[serde(rename = "true", default)]
    pub positive: Vec<String>,
    #[serde(rename = "false", default)]
    pub negative: Vec<String>,
}

/// One compiled secret rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) description: String,
    pub(crate) help: Option<String>,
    pub(crate) severity: Severity,
    pub(crate) keywords: Vec<String>,
    pub(crate) regex: Regex,
    /// Index of the named group `secret`, if the regex has one.
    pub(crate) secret_group: Option<usize>,
    pub(crate) min_entropy: Option<f64>,
    pub(crate) lines_after: usize,
    /// A keyword-context rule (`generic = true`): its hits give way to a specific rule's hit on
    /// the same text.
    pub(crate) generic: bool,
    pub(crate) allowlist: Allowlist,
    pub(crate) fixtures: RuleFixtures,
}

impl Rule {
    /// The rule id, e.g. `github-pat-classic`.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// One line naming the credential.
    pub fn title(&self) -> &str {
        &self.title
    }
    /// What the credential is and why a leak matters.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// How bad a leak of this credential is.
    pub fn severity(&self) -> Severity {
        self.severity
    }
    /// The prefilter keywords, lowercase.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }
    /// The minimum Shannon entropy of the secret part, if the rule sets one.
    pub fn min_entropy(&self) -> Option<f64> {
        self.min_entropy
    }
    /// The rule's own examples.
    pub fn fixtures(&self) -> &RuleFixtures {
        &self.fixtures
    }

    /// Parses and compiles one rule file. `file` names it in errors; every problem found in the
    /// file is returned.
    pub fn parse(file: &str, text: &str) -> Result<Rule, Vec<RuleError>> {
        let error_at = |offset: usize, message: String| {
            let (line, column) = line_column(text, offset);
            RuleError {
                file: file.to_string(),
                line,
                column,
                message,
            }
        };
        let raw: RuleFile = toml::from_str(text).map_err(|err| {
            let offset = err.span().map_or(0, |span| span.start);
            vec![error_at(offset, err.message().to_string())]
        })?;
        let mut errors = Vec::new();

        let id = raw.id.get_ref().clone();
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            errors.push(error_at(
                raw.id.span().start,
                format!("rule id `{id}` must be lowercase letters, digits and `-`"),
            ));
        }
        let severity = match raw.severity.get_ref().parse::<Severity>() {
            Ok(severity) => severity,
            Err(message) => {
                errors.push(error_at(raw.severity.span().start, message));
                Severity::High
            }
        };
        let keywords: Vec<String> = raw
            .keywords
            .get_ref()
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .collect();
        if keywords.is_empty() {
            errors.push(error_at(
                raw.keywords.span().start,
                "a rule needs at least one keyword for the prefilter".to_string(),
            ));
        }
        if let Some(bad) = keywords.iter().find(|k| k.is_empty() || !k.is_ascii()) {
            errors.push(error_at(
                raw.keywords.span().start,
                format!("keyword `{bad}` must be non-empty ASCII"),
            ));
        }
        let regex = match Regex::new(raw.regex.get_ref()) {
            Ok(regex) => Some(regex),
            Err(err) => {
                errors.push(error_at(
                    raw.regex.span().start,
                    format!("invalid regex: {err}"),
                ));
                None
            }
        };
        let min_entropy = raw.entropy.as_ref().map(|e| *e.get_ref());
        if let Some(entropy) = &raw.entropy {
            let value = *entropy.get_ref();
            if !(0.0..=8.0).contains(&value) {
                errors.push(error_at(
                    entropy.span().start,
                    format!("entropy {value} is outside 0.0..=8.0 bits per character"),
                ));
            }
        }
        let lines_after = raw.lines_after.as_ref().map_or(0, |l| *l.get_ref());
        if lines_after > MAX_LINES_AFTER {
            let offset = raw.lines_after.as_ref().map_or(0, |l| l.span().start);
            errors.push(error_at(
                offset,
                format!("lines_after {lines_after} is above the limit of {MAX_LINES_AFTER}"),
            ));
        }
        let allowlist = match &raw.allowlist {
            None => Some(Allowlist::default()),
            Some(spec) => match Allowlist::compile(spec.get_ref()) {
                Ok(allowlist) => Some(allowlist),
                Err(message) => {
                    errors.push(error_at(spec.span().start, message));
                    None
                }
            },
        };
        match (regex, allowlist) {
            (Some(regex), Some(allowlist)) if errors.is_empty() => {
                let secret_group = regex
                    .capture_names()
                    .position(|name| name == Some("secret"));
                Ok(Rule {
                    id,
                    title: raw.title,
                    description: raw.description,
                    help: raw.help,
                    severity,
                    keywords,
                    regex,
                    secret_group,
                    min_entropy,
                    lines_after,
                    generic: raw.generic,
                    allowlist,
                    fixtures: raw.fixtures,
                })
            }
            _ => Err(errors),
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// A compiled set of secret rules with their keyword prefilter.
#[derive(Debug, Clone)]
pub struct Rules {
    pub(crate) rules: Vec<Rule>,
    /// One automaton over the distinct keywords of all rules (ASCII case-insensitive).
    pub(crate) automaton: AhoCorasick,
    /// For each automaton pattern, the indices of the rules that keyword triggers.
    pub(crate) keyword_rules: Vec<Vec<usize>>,
}

impl Rules {
    /// The rules embedded in the binary (`rules/secrets/*.toml`). They are checked by the test
    /// suite, so a failure to load them is a build defect and panics with the rule errors.
    pub fn builtin() -> Rules {
        static BUILTIN: OnceLock<Rules> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Rules::from_files(builtin_rule_files().iter().copied())
                    .unwrap_or_else(|errors| panic!("built-in secret rules are invalid:\n{errors}"))
            })
            .clone()
    }

    /// Loads rule files given as `(file name, contents)`. Every file is checked; all errors are
    /// returned together. Duplicate rule ids are an error.
    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Rules, RuleErrors> {
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (file, text) in files {
            match Rule::parse(file, text) {
                Ok(rule) => {
                    if rules.iter().any(|r: &Rule| r.id == rule.id) {
                        errors.push(RuleError {
                            file: file.to_string(),
                            line: 1,
                            column: 1,
                            message: format!("duplicate rule id `{}`", rule.id),
                        });
                    } else {
                        rules.push(rule);
                    }
                }
                Err(mut file_errors) => errors.append(&mut file_errors),
            }
        }
        if !errors.is_empty() {
            return Err(RuleErrors(errors));
        }
        Rules::from_rules(rules).map_err(|message| {
            RuleErrors(vec![RuleError {
                file: "<rules>".to_string(),
                line: 1,
                column: 1,
                message,
            }])
        })
    }

    /// Builds the prefilter over already compiled rules.
    pub fn from_rules(rules: Vec<Rule>) -> Result<Rules, String> {
        let mut keywords: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        for (rule_index, rule) in rules.iter().enumerate() {
            for keyword in &rule.keywords {
                match keywords.iter().position(|k| k == keyword) {
                    Some(pattern) => {
                        if !keyword_rules[pattern].contains(&rule_index) {
                            keyword_rules[pattern].push(rule_index);
                        }
                    }
                    None => {
                        keywords.push(keyword.clone());
                        keyword_rules.push(vec![rule_index]);
                    }
                }
            }
        }
        let automaton = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&keywords)
            .map_err(|err| format!("cannot build the keyword automaton: {err}"))?;
        Ok(Rules {
            rules,
            automaton,
            keyword_rules,
        })
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in load order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The rule with this id.
    pub fn get(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|rule| rule.id == id)
    }

    /// Only the rules whose ids are listed (unknown ids are ignored).
    pub fn only(&self, ids: &[&str]) -> Rules {
        let rules = self
            .rules
            .iter()
            .filter(|rule| ids.contains(&rule.id.as_str()))
            .cloned()
            .collect();
        Rules::from_rules(rules).expect("a subset of valid keywords builds")
    }

    /// All distinct keywords (lowercase), e.g. to hand the same pattern set to another tool.
    pub fn keywords(&self) -> Vec<&str> {
        let mut keywords: Vec<&str> = self
            .rules
            .iter()
            .flat_map(|rule| rule.keywords.iter().map(String::as_str))
            .collect();
        keywords.sort_unstable();
        keywords.dedup();
        keywords
    }
}
