//! KK8S-109: a ConfigMap holds what looks like a credential: a data key named like a secret with
//! a value, or a `NAME=value` / `name: value` line inside a value where the name looks like a
//! secret and the value is not empty or a `${VAR}`-style placeholder.
//!
//! Invariant: findings name the data key only; the suspected secret never leaves this module.

use std::sync::LazyLock;

use regex::Regex;

use super::Hits;
use crate::finding::Severity;
use crate::misconfig::RuleInfo;
use crate::misconfig::kubernetes::manifest::Object;

pub const INFO: RuleInfo = RuleInfo {
    id: "KK8S-109",
    upstream_id: Some("KSV-0109"),
    title: "ConfigMap holds a secret",
    severity: Severity::High,
    rationale: "ConfigMaps are not meant for secrets: they are readable by more roles, shown in \
                plain text by tooling, and never encrypted at rest. A password or token in one is \
                exposed to everyone who can read the namespace's configuration.",
    fix: "Move the value into a Secret (or an external secret store) and reference it from the \
          pod; keep only a placeholder such as `${PASSWORD}` in the ConfigMap.",
};

/// Words that make a name look like a credential.
const SECRET_WORDS: [&str; 8] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
];

/// Word pairs that make a name look like a credential (`api_key`, `privateKey` …).
const SECRET_PAIRS: [(&str, &str); 3] = [("api", "key"), ("private", "key"), ("access", "key")];

/// Last words that make a name describe a credential rather than hold one (`token_ttl`,
/// `secretName`, `password_file` …).
const DESCRIPTIVE_SUFFIXES: [&str; 22] = [
    "name", "names", "file", "path", "dir", "url", "uri", "endpoint", "ttl", "timeout", "expiry",
    "expiration", "length", "size", "enabled", "type", "header", "ref", "id", "policy", "mode",
    "duration",
];

/// A name split into lower-case words at separators and camelCase humps.
fn words(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for ch in name.chars() {
        if !ch.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            previous_lower = false;
            continue;
        }
        if ch.is_ascii_uppercase() && previous_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        previous_lower = ch.is_ascii_lowercase() || ch.is_ascii_digit();
        current.push(ch.to_ascii_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

/// Whether a key or variable name looks like it holds a credential.
fn secret_name(name: &str) -> bool {
    let words = words(name);
    let Some(last) = words.last() else {
        return false;
    };
    if DESCRIPTIVE_SUFFIXES.contains(&last.as_str()) {
        return false;
    }
    words.iter().any(|word| SECRET_WORDS.contains(&word.as_str()))
        || words
            .windows(2)
            .any(|pair| SECRET_PAIRS.contains(&(pair[0].as_str(), pair[1].as_str())))
}

/// Whether a value is empty, a reference to something else, or not a credential at all.
fn placeholder(value: &str) -> bool {
    let value = value.trim().trim_matches(['"', '\'']).trim();
    if value.is_empty()
        || value.starts_with("${")
        || value.starts_with("$(")
        || value.starts_with("{{")
        || value.starts_with("%{")
        || (value.starts_with('<') && value.ends_with('>'))
        || matches!(value, "|" | ">" | "{" | "[" | "|-" | ">-")
    {
        return true;
    }
    if let Some(variable) = value.strip_prefix('$') {
        return variable.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    }
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "null" | "none" | "~"
    )
}

/// `NAME=value`, `name: value` or `"name": "value",` on one line.
static ASSIGNMENT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^[\s{,]*(?:export\s+)?["']?([A-Za-z_][A-Za-z0-9_.\-]*)["']?\s*[=:]\s*(.*?)\s*,?\s*$"#)
        .expect("static regex")
});

/// Whether a data value contains an assignment of a credential.
fn holds_assignment(text: &str) -> bool {
    text.lines().any(|line| {
        ASSIGNMENT.captures(line).is_some_and(|captures| {
            secret_name(&captures[1]) && !placeholder(&captures[2])
        })
    })
}

pub fn check(object: &Object<'_>, hits: &mut Hits) {
    if object.kind != "ConfigMap" {
        return;
    }
    let data = object.root.get("data").map_or(&[][..], |data| data.entries());
    for (key, value) in data {
        let (Some(name), Some(text)) = (key.scalar(), value.scalar()) else {
            continue;
        };
        if (secret_name(name) && !placeholder(text)) || holds_assignment(text) {
            hits.part("data key", name, key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values() {
        assert!(secret_name("REDIS_PASSWORD"));
        assert!(secret_name("githubToken"));
        assert!(secret_name("aws-secret-access-key"));
        assert!(secret_name("stripe_api_key"));
        assert!(!secret_name("token_ttl"));
        assert!(!secret_name("secretName"));
        assert!(!secret_name("tokenizer"));
        assert!(placeholder("${REDIS_PASSWORD}"));
        assert!(placeholder("\"$PASSWORD\""));
        assert!(!placeholder("hunter2"));
        assert!(holds_assignment("user=app\nDB_PASSWORD=abc123\n"));
        assert!(holds_assignment("{\"apiKey\": \"k-123\"}"));
        assert!(!holds_assignment("REDIS_PASSWORD=\nREDIS_HOST=redis\n"));
    }
}
