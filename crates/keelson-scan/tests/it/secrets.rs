//! Secrets scanner tests: every rule's own fixtures (data-driven over all rule files), the rule
//! count and embedding, redaction, entropy, allowlists, inline allow, skipped files, directory
//! scans, and git history / range scans on a real repository built with `git`.

use std::path::Path;
use std::process::Command;

use keelson_scan::finding::{Details, Finding, Kind};
use keelson_scan::secrets::{
    self, GitError, Rules, SecretsConfig, rule::builtin_rule_files, scan_dir, scan_git, scan_text,
};

fn builtin() -> Rules {
    Rules::builtin()
}

fn found_by<'a>(findings: &'a [Finding], rule_id: &str) -> Vec<&'a Finding> {
    findings.iter().filter(|f| f.rule_id == rule_id).collect()
}

/// The text of the secret a finding points at is not recoverable from the finding, so this reads
/// it back from the scanned text: the characters after the 4 a redaction may show.
fn hidden_part_of_secret(text: &str, finding: &Finding) -> String {
    let line = finding.location.line.expect("secret findings have a line");
    let column = finding
        .location
        .column
        .expect("secret findings have a column");
    let line_text = text.lines().nth(line - 1).expect("line exists");
    line_text
        .chars()
        .skip(column - 1 + 4)
        .take(12)
        .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
        .collect()
}

#[test]
fn every_rule_finds_its_true_fixtures_and_not_its_false_ones() {
    let rules = builtin();
    let config = SecretsConfig::default();
    let mut failures = Vec::new();
    for rule in rules.iter() {
        let fixtures = rule.fixtures();
        if fixtures.positive.is_empty() || fixtures.negative.is_empty() {
            failures.push(format!(
                "{}: needs at least one true and one false fixture",
                rule.id()
            ));
        }
        for (index, text) in fixtures.positive.iter().enumerate() {
            let findings = scan_text("fixtures/example.txt", text, &rules, &config);
            let mine = found_by(&findings, rule.id());
            if mine.is_empty() {
                failures.push(format!("{}: true fixture #{index} not found", rule.id()));
                continue;
            }
            for finding in mine {
                assert_eq!(finding.kind, Kind::Secret);
                assert_eq!(finding.severity, rule.severity());
                // Title, message and help are the rule's own static text (which may name a fixed
                // prefix such as `AGE-SECRET-KEY-1`); everything else must not carry the secret.
                let mut dynamic = (*finding).clone();
                dynamic.title.clear();
                dynamic.message.clear();
                dynamic.help = None;
                let json = serde_json::to_string(&dynamic).expect("findings serialize");
                let hidden = hidden_part_of_secret(text, finding);
                if hidden.chars().count() >= 6 && json.contains(&hidden) {
                    failures.push(format!(
                        "{}: true fixture #{index} leaks `{hidden}` into {json}",
                        rule.id()
                    ));
                }
            }
        }
        for (index, text) in fixtures.negative.iter().enumerate() {
            let findings = scan_text("fixtures/example.txt", text, &rules, &config);
            if !found_by(&findings, rule.id()).is_empty() {
                failures.push(format!(
                    "{}: false fixture #{index} was reported",
                    rule.id()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn there_are_at_least_100_rules_and_every_rule_file_is_embedded() {
    let rules = builtin();
    assert!(rules.len() >= 100, "only {} rules", rules.len());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/secrets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("rules directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    on_disk.sort();
    let embedded: Vec<String> = builtin_rule_files()
        .iter()
        .map(|(name, _)| name.to_string())
        .collect();
    assert_eq!(embedded, on_disk);
    for (name, _) in builtin_rule_files() {
        let id = name.trim_end_matches(".toml");
        assert!(
            rules.get(id).is_some(),
            "{name}: id must match the file name"
        );
    }
}

#[test]
fn findings_carry_rule_location_redaction_and_fingerprint_without_the_secret() {
    let rules = builtin();
    let token = "ghp_Zx9Kq2Lm8Np4Rs6Tv0Wy3Ab5Cd7Ef1Gh2Jk4";
    let text = format!("# config\n\n  GITHUB_TOKEN={token}\n");
    let findings = scan_text("deploy/.env", &text, &rules, &SecretsConfig::default());
    let finding = found_by(&findings, "github-pat-classic")[0];
    assert_eq!(finding.location.path, "deploy/.env");
    assert_eq!(finding.location.line, Some(3));
    assert_eq!(finding.location.column, Some(16));
    let Details::Secret {
        redacted,
        entropy,
        commit,
    } = &finding.details
    else {
        panic!("secret details expected");
    };
    assert_eq!(redacted, &format!("ghp_{}", "*".repeat(32)));
    assert!(entropy.is_some_and(|e| e > 4.0));
    assert!(commit.is_none());
    let expected = keelson_scan::finding::fingerprint(&[
        "github-pat-classic",
        "deploy/.env",
        &keelson_scan::finding::secret_hash(token),
    ]);
    assert_eq!(finding.fingerprint, expected);
    let json = serde_json::to_string(&findings).expect("serialize");
    assert!(
        !json.contains(token) && !json.contains(&token[4..]),
        "{json}"
    );
    assert!(!json.contains("Zx9Kq2"), "{json}");
}

#[test]
fn entropy_threshold_keeps_low_entropy_values_out() {
    let rules = builtin();
    let config = SecretsConfig::default();
    // Same shape, one made of one repeated character: only the varied one is a finding.
    let varied = scan_text("a", "api_key = \"k9Qz2Lm4Xp7Rt1Vb8Nw3\"", &rules, &config);
    assert_eq!(found_by(&varied, "generic-api-key").len(), 1);
    let flat = scan_text("a", "api_key = \"kkkkkkkkkkkkkkkkkkkk\"", &rules, &config);
    assert!(found_by(&flat, "generic-api-key").is_empty());
}

#[test]
fn generic_rules_give_way_to_specific_ones_on_the_same_secret() {
    let rules = builtin();
    let text = "auth_token = \"ghp_Zx9Kq2Lm8Np4Rs6Tv0Wy3Ab5Cd7Ef1Gh2Jk4\"";
    let findings = scan_text("a", text, &rules, &SecretsConfig::default());
    let ids: Vec<&str> = findings.iter().map(|f| f.rule_id.as_str()).collect();
    assert_eq!(ids, vec!["github-pat-classic"]);
}

#[test]
fn global_allowlists_and_inline_allow_suppress() {
    let rules = builtin();
    let token = "ghp_Zx9Kq2Lm8Np4Rs6Tv0Wy3Ab5Cd7Ef1Gh2Jk4";
    let text = format!("TOKEN={token}\n");
    let default = SecretsConfig::default();
    assert_eq!(scan_text("src/a.env", &text, &rules, &default).len(), 1);

    let by_path =
        SecretsConfig::from_toml("[allowlist]\npaths = [\"src/**\"]\n", "k.toml").expect("config");
    assert!(scan_text("src/a.env", &text, &rules, &by_path).is_empty());
    assert_eq!(scan_text("other/a.env", &text, &rules, &by_path).len(), 1);

    let by_regex = SecretsConfig::from_toml("[allowlist]\nregexes = ['^ghp_Zx9']\n", "k.toml")
        .expect("config");
    assert!(scan_text("a", &text, &rules, &by_regex).is_empty());

    let by_word = SecretsConfig::from_toml("[allowlist]\nstopwords = ['lm8NP4']\n", "k.toml")
        .expect("config");
    assert!(scan_text("a", &text, &rules, &by_word).is_empty());

    let inline = format!("TOKEN={token} # keelson:allow test fixture\nOTHER={token}\n");
    let findings = scan_text("a", &inline, &rules, &default);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].location.line, Some(2));
}

#[test]
fn rule_files_with_errors_report_file_line_and_column() {
    let bad = "id = \"x\"\ntitle = \"t\"\ndescription = \"d\"\nseverity = \"high\"\nkeywords = [\"k\"]\nregex = '''(unclosed'''\n";
    let errors = Rules::from_files([("x.toml", bad)]).expect_err("bad regex");
    assert_eq!(errors.0.len(), 1);
    assert_eq!((errors.0[0].line, errors.0[0].column), (6, 9));
    assert!(
        errors.to_string().starts_with("x.toml:6:9: invalid regex"),
        "{errors}"
    );

    let unknown = "id = \"x\"\ntitle = \"t\"\ndescription = \"d\"\nseverity = \"severe\"\nkeywords = []\nregex = 'a'\nkeywrods = []\n";
    let errors = Rules::from_files([("y.toml", unknown)]).expect_err("unknown key");
    assert!(errors.0[0].message.contains("keywrods"), "{errors}");
    assert_eq!(errors.0[0].line, 7);

    let two_problems = "id = \"x\"\ntitle = \"t\"\ndescription = \"d\"\nseverity = \"severe\"\nkeywords = []\nregex = 'a'\n";
    let errors = Rules::from_files([("z.toml", two_problems)]).expect_err("two problems");
    assert_eq!(errors.0.len(), 2, "{errors}");
}

fn write(path: &Path, contents: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, contents).expect("write");
}

#[test]
fn directory_scan_reports_findings_and_skips_binary_and_huge_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let token = "glpat-Zx9Kq2Lm8Np4Rs6Tv0Wy";
    write(
        &root.join("app/settings.py"),
        format!("x = 1\nGITLAB = '{token}'\n").as_bytes(),
    );
    let mut binary = b"\x7fELF\0\0\0".to_vec();
    binary.extend_from_slice(token.as_bytes());
    write(&root.join("bin/tool"), &binary);
    write(
        &root.join("big/dump.sql"),
        format!("{}\n{token}\n", "-".repeat(4096)).as_bytes(),
    );
    write(&root.join(".gitignore"), b"ignored/\n");
    write(&root.join("ignored/secret.txt"), token.as_bytes());

    let config = SecretsConfig {
        max_file_size: 2048,
        threads: 3,
        ..SecretsConfig::default()
    };
    let output = scan_dir(root, &builtin(), &config);
    let locations: Vec<String> = output
        .findings
        .iter()
        .map(|f| format!("{} {}", f.rule_id, f.location))
        .collect();
    assert_eq!(locations, vec!["gitlab-pat app/settings.py:2:11"]);
    let skipped: Vec<(&str, bool)> = output
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.contains("binary")))
        .collect();
    assert_eq!(skipped, vec![("big/dump.sql", false), ("bin/tool", true)]);
    assert!(output.skipped[0].reason.contains("2048 byte limit"));
    assert!(output.errors.is_empty(), "{:?}", output.errors);

    // The default limit (10 MiB) reads the same file.
    let output = scan_dir(root, &builtin(), &SecretsConfig::default());
    assert_eq!(output.findings.len(), 2);
}

#[test]
fn directory_scan_of_many_files_matches_single_threaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..60 {
        let body = if i % 7 == 0 {
            format!("line\nkey: sk_live_{}Zx9Kq2Lm8Np4Rs6Tv0Wy3A\n", 1000 + i)
        } else {
            format!("nothing to see {i}\n")
        };
        write(
            &dir.path().join(format!("d{}/f{i}.txt", i % 5)),
            body.as_bytes(),
        );
    }
    let rules = builtin();
    let parallel = scan_dir(dir.path(), &rules, &SecretsConfig::default());
    let serial = scan_dir(
        dir.path(),
        &rules,
        &SecretsConfig {
            threads: 1,
            ..SecretsConfig::default()
        },
    );
    assert_eq!(parallel.findings.len(), 9);
    assert_eq!(parallel, serial);
}

// ------------------------------------------------------------------------------------- git

fn git(repo: &Path, args: &[&str], date: &str) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Fixture Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.org")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_NAME", "Fixture Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.org")
        .env("GIT_COMMITTER_DATE", date)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

const GIT_TOKEN: &str = "sk_live_Zx9Kq2Lm8Np4Rs6Tv0Wy3Ab5";

/// A repository where commit 1 adds a secret (line 3 of config/app.env), commit 2 removes it and
/// commit 3 adds an unrelated file. Returns the shas, oldest first.
fn history_repo(root: &Path) -> Vec<String> {
    git(root, &["init", "-q"], "2024-03-04T05:06:07+00:00");
    write(&root.join("config/app.env"), b"A=1\nB=2\n");
    git(root, &["add", "."], "2024-03-04T05:06:07+00:00");
    git(
        root,
        &["commit", "-q", "-m", "base"],
        "2024-03-04T05:06:07+00:00",
    );
    write(
        &root.join("config/app.env"),
        format!("A=1\nB=2\nSTRIPE_KEY={GIT_TOKEN}\n").as_bytes(),
    );
    git(
        root,
        &["commit", "-qam", "add key"],
        "2024-03-05T06:07:08+02:00",
    );
    let with_secret = git(root, &["rev-parse", "HEAD"], "2024-03-05T06:07:08+02:00");
    write(&root.join("config/app.env"), b"A=1\nB=2\n");
    git(
        root,
        &["commit", "-qam", "remove key"],
        "2024-03-06T00:00:00+00:00",
    );
    let removal = git(root, &["rev-parse", "HEAD"], "2024-03-06T00:00:00+00:00");
    write(&root.join("README.md"), b"# hello\n++ not a header\n");
    write(&root.join("logo.bin"), b"\x89PNG\0\0\x01\x02");
    git(root, &["add", "."], "2024-03-07T00:00:00+00:00");
    git(
        root,
        &["commit", "-qm", "readme"],
        "2024-03-07T00:00:00+00:00",
    );
    let last = git(root, &["rev-parse", "HEAD"], "2024-03-07T00:00:00+00:00");
    vec![with_secret, removal, last]
}

#[test]
fn git_history_finds_a_removed_secret_with_its_commit_and_a_later_range_does_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shas = history_repo(dir.path());
    let rules = builtin();
    let config = SecretsConfig::default();

    // The working tree no longer has it.
    assert!(scan_dir(dir.path(), &rules, &config).findings.is_empty());

    let output = scan_git(dir.path(), None, &rules, &config).expect("history scan");
    assert_eq!(output.findings.len(), 1, "{:?}", output.findings);
    let finding = &output.findings[0];
    assert_eq!(finding.rule_id, "stripe-live-secret-key");
    assert_eq!(finding.location.path, "config/app.env");
    assert_eq!(finding.location.line, Some(3));
    assert_eq!(finding.location.column, Some(12));
    let Details::Secret { commit, .. } = &finding.details else {
        panic!("secret details expected");
    };
    let commit = commit.as_ref().expect("history findings name their commit");
    assert_eq!(commit.sha, shas[0]);
    assert_eq!(commit.author, "Fixture Author");
    assert_eq!(commit.email, "author@example.org");
    assert_eq!(commit.date, "2024-03-05T06:07:08+02:00");
    let skipped: Vec<&str> = output.skipped.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(skipped, vec![format!("logo.bin@{}", &shas[2][..12])]);
    let json = serde_json::to_string(&output).expect("serialize");
    assert!(!json.contains(GIT_TOKEN) && !json.contains(&GIT_TOKEN[4..]));
    // Same identity as a working-tree finding of that secret in that file.
    let direct = scan_text(
        "config/app.env",
        &format!("STRIPE_KEY={GIT_TOKEN}"),
        &rules,
        &config,
    );
    assert_eq!(direct[0].fingerprint, finding.fingerprint);

    let later = format!("{}..{}", shas[0], shas[2]);
    let output = scan_git(dir.path(), Some(&later), &rules, &config).expect("range scan");
    assert!(output.findings.is_empty(), "{:?}", output.findings);

    let including = format!("{}~1..{}", shas[0], shas[0]);
    let output = scan_git(dir.path(), Some(&including), &rules, &config).expect("range scan");
    assert_eq!(output.findings.len(), 1);
}

#[test]
fn git_modes_reject_bad_ranges_and_non_repositories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = builtin();
    let config = SecretsConfig::default();
    let error = scan_git(dir.path(), None, &rules, &config).expect_err("not a repo");
    assert!(matches!(error, GitError::NotARepository { .. }), "{error}");
    assert!(error.to_string().contains("is not a git repository"));

    history_repo(dir.path());
    for range in [
        "nosuchref..HEAD",
        "HEAD",
        "--output=/tmp/x",
        "..",
        "HEAD..no such",
    ] {
        let error = scan_git(dir.path(), Some(range), &rules, &config).expect_err(range);
        assert!(
            matches!(error, GitError::BadRange { .. }),
            "{range}: {error}"
        );
    }
}

#[test]
fn redact_never_shows_more_than_four_characters() {
    for secret in ["abc", "abcdefgh", "AKIA0123456789ABCDEF", &"q".repeat(300)] {
        let redacted = secrets::redact(secret);
        let shown: String = redacted.chars().take_while(|c| *c != '*').collect();
        assert!(shown.chars().count() <= 4, "{redacted}");
        assert!(redacted.ends_with('*'));
    }
}
