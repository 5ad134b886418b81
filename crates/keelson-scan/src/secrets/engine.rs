//! The matching engine: one pass of the keyword automaton over the text, then each triggered
//! rule's regex over only the line(s) around its keyword hits, then entropy, allowlists and inline
//! `keelson:allow` suppression.
//!
//! Invariant: a rule's regex never runs on text that is not within its window, i.e. the line of a
//! hit of one of its own keywords plus the rule's `lines_after` following lines. The engine returns
//! byte ranges; turning them into findings (redaction, hashing) happens in [`super::finding_for`].

use std::ops::Range;

use super::config::SecretsConfig;
use super::rule::{Rule, Rules};

/// The marker that suppresses every finding on its line.
pub const INLINE_ALLOW: &str = "keelson:allow";

/// One secret the engine found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    /// Index into [`Rules::rules`].
    pub rule: usize,
    /// Byte range of the secret in the scanned text.
    pub secret: Range<usize>,
    /// 1-based line of the secret's first character in the scanned text.
    pub line: usize,
    /// 1-based column (characters) of the secret's first character.
    pub column: usize,
    pub entropy: f64,
}

/// Shannon entropy in bits per byte of `text` (0.0 for an empty string).
pub fn shannon_entropy(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut counts = [0usize; 256];
    for byte in text.bytes() {
        counts[usize::from(byte)] += 1;
    }
    let length = text.len() as f64;
    counts
        .iter()
        .filter(|&&count| count > 0)
        .map(|&count| {
            let p = count as f64 / length;
            -p * p.log2()
        })
        .sum()
}

/// The byte range of the line containing `offset`, without its `\n`.
fn line_around(bytes: &[u8], offset: usize) -> Range<usize> {
    let start = memchr::memrchr(b'\n', &bytes[..offset]).map_or(0, |i| i + 1);
    let end = memchr::memchr(b'\n', &bytes[offset..]).map_or(bytes.len(), |i| offset + i);
    start..end
}

/// Extends `end` (a line end) by `lines` more lines.
fn extend_lines(bytes: &[u8], mut end: usize, lines: usize) -> usize {
    for _ in 0..lines {
        if end >= bytes.len() {
            break;
        }
        end = memchr::memchr(b'\n', &bytes[end + 1..]).map_or(bytes.len(), |i| end + 1 + i);
    }
    end
}

/// For each rule triggered by a keyword in `text`, the merged windows its regex must run on,
/// sorted by rule then start. Exposed to the crate for the prefilter tests.
pub(crate) fn windows(rules: &Rules, text: &str) -> Vec<(usize, Range<usize>)> {
    let bytes = text.as_bytes();
    let mut windows: Vec<(usize, Range<usize>)> = Vec::new();
    let mut current_line: Range<usize> = 0..0;
    let mut have_line = false;
    for hit in rules.automaton.find_overlapping_iter(text) {
        if !(have_line && hit.start() >= current_line.start && hit.start() <= current_line.end) {
            current_line = line_around(bytes, hit.start());
            have_line = true;
        }
        // A keyword never contains `\n` only if the rule author says so; be safe with ones that do.
        let keyword_end_line = if hit.end() <= current_line.end {
            current_line.end
        } else {
            line_around(bytes, hit.end() - 1).end
        };
        for &rule_index in &rules.keyword_rules[hit.pattern().as_usize()] {
            let lines_after = rules.rules[rule_index].lines_after;
            let end = if lines_after == 0 {
                keyword_end_line
            } else {
                extend_lines(bytes, keyword_end_line, lines_after)
            };
            windows.push((rule_index, current_line.start..end));
        }
    }
    windows.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.start.cmp(&b.1.start)));
    let mut merged: Vec<(usize, Range<usize>)> = Vec::with_capacity(windows.len());
    for (rule_index, window) in windows {
        if let Some((last_rule, last)) = merged.last_mut()
            && *last_rule == rule_index
            && window.start <= last.end
        {
            last.end = last.end.max(window.end);
            continue;
        }
        merged.push((rule_index, window));
    }
    merged
}

/// The secret part of one regex match: group `secret`, else the first numbered group that took
/// part, else the whole match.
fn secret_range(rule: &Rule, captures: &regex::Captures<'_>) -> Option<Range<usize>> {
    if let Some(group) = rule.secret_group {
        return captures.get(group).map(|m| m.range());
    }
    (1..captures.len())
        .find_map(|group| captures.get(group))
        .or_else(|| captures.get(0))
        .map(|m| m.range())
}

/// Finds the secrets in `text`. `relative_path` is used for path allowlists only. Hits are
/// returned in text order.
pub(crate) fn find(
    rules: &Rules,
    config: &SecretsConfig,
    relative_path: &str,
    text: &str,
) -> Vec<Hit> {
    if config.allowlist.allows_path(relative_path) {
        return Vec::new();
    }
    let bytes = text.as_bytes();
    let mut found: Vec<(usize, Range<usize>, f64)> = Vec::new();
    for (rule_index, window) in windows(rules, text) {
        let rule = &rules.rules[rule_index];
        let slice = &text[window.clone()];
        for captures in rule.regex.captures_iter(slice) {
            let Some(range) = secret_range(rule, &captures) else {
                continue;
            };
            if range.is_empty() {
                continue;
            }
            let absolute = window.start + range.start..window.start + range.end;
            let secret = &text[absolute.clone()];
            let entropy = shannon_entropy(secret);
            if rule.min_entropy.is_some_and(|minimum| entropy < minimum) {
                continue;
            }
            if rule.allowlist.allows_secret(secret)
                || config.allowlist.allows_secret(secret)
                || rule.allowlist.allows_path(relative_path)
            {
                continue;
            }
            let line = line_around(bytes, absolute.start);
            if memchr::memmem::find(&bytes[line], INLINE_ALLOW.as_bytes()).is_some() {
                continue;
            }
            found.push((rule_index, absolute, entropy));
        }
    }
    found.sort_by(|a, b| a.1.start.cmp(&b.1.start).then(a.0.cmp(&b.0)));
    found.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    if found.iter().any(|(rule, _, _)| rules.rules[*rule].generic) {
        let specific: Vec<Range<usize>> = found
            .iter()
            .filter(|(rule, _, _)| !rules.rules[*rule].generic)
            .map(|(_, range, _)| range.clone())
            .collect();
        found.retain(|(rule, range, _)| {
            !rules.rules[*rule].generic
                || !specific
                    .iter()
                    .any(|other| other.start < range.end && range.start < other.end)
        });
    }

    // Line numbers in one forward pass.
    let mut hits = Vec::with_capacity(found.len());
    let mut line = 1;
    let mut counted_to = 0;
    for (rule, secret, entropy) in found {
        line += memchr::memchr_iter(b'\n', &bytes[counted_to..secret.start]).count();
        counted_to = secret.start;
        let line_start = memchr::memrchr(b'\n', &bytes[..secret.start]).map_or(0, |i| i + 1);
        let column = text[line_start..secret.start].chars().count() + 1;
        hits.push(Hit {
            rule,
            secret,
            line,
            column,
            entropy,
        });
    }
    hits
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::rule::Rule;

    fn rules_from(text: &str) -> Rules {
        let rule = Rule::parse("test.toml", text).expect("valid test rule");
        Rules::from_rules(vec![rule]).expect("automaton")
    }

    const GATED: &str = r#"
id = "gated"
title = "t"
description = "d"
severity = "high"
keywords = ["zzkw"]
regex = 'token-(?P<secret>[a-z0-9]{8})'
"#;

    #[test]
    fn a_rule_without_its_keyword_is_never_run() {
        let rules = rules_from(GATED);
        let config = SecretsConfig::default();
        // The regex would match, but the keyword is absent: no window, no run, no hit.
        let text = "x = token-a1b2c3d4\n";
        assert!(windows(&rules, text).is_empty());
        assert!(find(&rules, &config, "f", text).is_empty());
        // Keyword on another line: the regex runs on that line only, not on the token's line.
        let text = "x = token-a1b2c3d4\n# ZZKW here\n";
        assert_eq!(windows(&rules, text), vec![(0, 19..30)]);
        assert!(find(&rules, &config, "f", text).is_empty());
        // Keyword on the same line (any case): found, with line and column of the secret.
        let text = "\n# Zzkw: token-a1b2c3d4\n";
        let hits = find(&rules, &config, "f", text);
        assert_eq!(hits.len(), 1);
        assert_eq!((hits[0].line, hits[0].column), (2, 15));
        assert_eq!(&text[hits[0].secret.clone()], "a1b2c3d4");
    }

    #[test]
    fn windows_of_one_rule_merge_and_lines_after_extends_them() {
        let rules = rules_from(&format!("{GATED}lines_after = 1\n"));
        let text = "zzkw zzkw\nsecond\nthird zzkw\nfourth\nfifth";
        assert_eq!(windows(&rules, text), vec![(0, 0..16), (0, 17..34)]);
    }

    #[test]
    fn entropy_of_known_strings() {
        assert_eq!(shannon_entropy(""), 0.0);
        assert_eq!(shannon_entropy("aaaa"), 0.0);
        assert!((shannon_entropy("abcd") - 2.0).abs() < 1e-9);
        assert!((shannon_entropy("0123456789abcdef") - 4.0).abs() < 1e-9);
    }

    #[test]
    fn entropy_threshold_filters_low_entropy_secrets() {
        let rules = rules_from(&format!("{GATED}entropy = 2.5\n"));
        let config = SecretsConfig::default();
        assert!(find(&rules, &config, "f", "zzkw token-aaaaaaaa").is_empty());
        assert!(find(&rules, &config, "f", "zzkw token-aaaabbbb").is_empty()); // 1.0 bit
        assert_eq!(find(&rules, &config, "f", "zzkw token-a1b2c3d4").len(), 1); // 3.0 bits
    }
}
