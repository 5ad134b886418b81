//! Push webhooks: signature verification for every provider and every failure, and parsing of
//! hand-written payloads that follow each provider's documented push event.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hmac::{Hmac, KeyInit, Mac};
use keelson_server::webhook::{
    Provider, PushEvent, WebhookError, WebhookEvent, event_type, normalize_repository_url,
    parse_push, verify,
};
use sha2::Sha256;

const SECRET: &[u8] = b"It's a Secret to Everybody";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

fn push(event: WebhookEvent) -> PushEvent {
    match event {
        WebhookEvent::Push(push) => push,
        other => panic!("expected a push, got {other:?}"),
    }
}

#[test]
fn provider_names_round_trip() {
    for provider in Provider::ALL {
        assert_eq!(provider.as_str().parse::<Provider>().unwrap(), provider);
        assert_eq!(provider.to_string(), provider.as_str());
    }
    assert_eq!("GitHub".parse::<Provider>().unwrap(), Provider::GitHub);
    assert_eq!("forgejo".parse::<Provider>().unwrap(), Provider::Gitea);
    let error = "bitbucket".parse::<Provider>().unwrap_err();
    assert_eq!(error, WebhookError::UnknownProvider("bitbucket".to_owned()));
    assert!(error.to_string().contains("`github`, `gitlab` or `gitea`"));
}

// The example from GitHub's documentation on validating webhook deliveries: secret
// "It's a Secret to Everybody", payload "Hello, World!".
#[test]
fn github_documented_example_signature_verifies() {
    let body = b"Hello, World!";
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    assert_eq!(&signature[7..], hmac_hex(SECRET, body));
    verify(
        Provider::GitHub,
        &headers(&[("X-Hub-Signature-256", signature)]),
        body,
        SECRET,
    )
    .unwrap();
}

#[test]
fn github_signature_over_fixture_verifies_and_headers_are_case_insensitive() {
    let body = fixture("github-push.json");
    let signature = format!("sha256={}", hmac_hex(SECRET, &body));
    verify(
        Provider::GitHub,
        &headers(&[("x-hub-signature-256", &signature)]),
        &body,
        SECRET,
    )
    .unwrap();
    // Upper-case hex digits are accepted too.
    let upper = format!("sha256={}", hmac_hex(SECRET, &body).to_uppercase());
    verify(
        Provider::GitHub,
        &headers(&[("X-Hub-Signature-256", &upper)]),
        &body,
        SECRET,
    )
    .unwrap();
}

#[test]
fn github_verification_failures() {
    let body = fixture("github-push.json");
    let good = hmac_hex(SECRET, &body);
    let wrong_secret = format!("sha256={}", hmac_hex(b"another secret", &body));
    let mut altered_body = body.clone();
    altered_body[10] ^= 1;
    let sha1_only = headers(&[(
        "X-Hub-Signature",
        "sha1=0123456789abcdef0123456789abcdef01234567",
    )]);

    type Case<'a> = (&'a str, HeaderMap, &'a [u8], &'a [u8], WebhookError);
    let cases: Vec<Case> = vec![
        (
            "no header",
            HeaderMap::new(),
            &body,
            SECRET,
            WebhookError::MissingSignature {
                provider: Provider::GitHub,
                expected: "X-Hub-Signature-256",
            },
        ),
        (
            "only the legacy SHA-1 header",
            sha1_only,
            &body,
            SECRET,
            WebhookError::MissingSignature {
                provider: Provider::GitHub,
                expected: "X-Hub-Signature-256",
            },
        ),
        (
            "no sha256= prefix",
            headers(&[("X-Hub-Signature-256", &good)]),
            &body,
            SECRET,
            WebhookError::MalformedSignature {
                header: "X-Hub-Signature-256",
                reason: "expected `sha256=` followed by 64 hex digits",
            },
        ),
        (
            "not hex",
            headers(&[(
                "X-Hub-Signature-256",
                &format!("sha256={}", "zz".repeat(32)),
            )]),
            &body,
            SECRET,
            WebhookError::MalformedSignature {
                header: "X-Hub-Signature-256",
                reason: "not hexadecimal",
            },
        ),
        (
            "too short",
            headers(&[("X-Hub-Signature-256", &format!("sha256={}", &good[..62]))]),
            &body,
            SECRET,
            WebhookError::MalformedSignature {
                header: "X-Hub-Signature-256",
                reason: "expected 64 hex digits (an HMAC-SHA256)",
            },
        ),
        (
            "signed with another secret",
            headers(&[("X-Hub-Signature-256", &wrong_secret)]),
            &body,
            SECRET,
            WebhookError::SignatureMismatch {
                header: "X-Hub-Signature-256",
            },
        ),
        (
            "body altered after signing",
            headers(&[("X-Hub-Signature-256", &format!("sha256={good}"))]),
            &altered_body,
            SECRET,
            WebhookError::SignatureMismatch {
                header: "X-Hub-Signature-256",
            },
        ),
        (
            "empty secret configured",
            headers(&[(
                "X-Hub-Signature-256",
                &format!("sha256={}", hmac_hex(b"", &body)),
            )]),
            &body,
            b"",
            WebhookError::EmptySecret,
        ),
    ];
    for (what, headers, body, secret, want) in cases {
        let error = verify(Provider::GitHub, &headers, body, secret).unwrap_err();
        assert_eq!(error, want, "{what}");
        let message = error.to_string();
        assert!(
            !message.contains("Secret to Everybody") && !message.contains(&good),
            "{what}: message leaks the secret or signature: {message}"
        );
    }
}

#[test]
fn non_text_header_is_rejected() {
    let mut map = HeaderMap::new();
    map.insert(
        "X-Hub-Signature-256",
        HeaderValue::from_bytes(b"sha256=\xff\xfe").unwrap(),
    );
    assert_eq!(
        verify(Provider::GitHub, &map, b"{}", SECRET).unwrap_err(),
        WebhookError::InvalidHeader {
            header: "X-Hub-Signature-256"
        }
    );
}

#[test]
fn gitea_and_forgejo_signatures() {
    let body = fixture("gitea-push.json");
    let good = hmac_hex(SECRET, &body);
    let bad = hmac_hex(b"wrong", &body);
    let prefixed = format!("sha256={good}");
    let accepted: &[&[(&str, &str)]] = &[
        &[("X-Gitea-Signature", &good)],
        &[("X-Forgejo-Signature", &good)],
        &[("X-Gogs-Signature", &good)],
        &[("X-Hub-Signature-256", &prefixed)],
        &[
            ("X-Gitea-Signature", &good),
            ("X-Forgejo-Signature", &good),
            ("X-Hub-Signature-256", &prefixed),
        ],
    ];
    for pairs in accepted {
        verify(Provider::Gitea, &headers(pairs), &body, SECRET)
            .unwrap_or_else(|e| panic!("{pairs:?}: {e}"));
    }
    let rejected: &[(&[(&str, &str)], WebhookError)] = &[
        (
            &[],
            WebhookError::MissingSignature {
                provider: Provider::Gitea,
                expected: "X-Gitea-Signature, X-Forgejo-Signature or X-Hub-Signature-256",
            },
        ),
        (
            &[("X-Gitea-Signature", &bad)],
            WebhookError::SignatureMismatch {
                header: "X-Gitea-Signature",
            },
        ),
        (
            // Every signature header present must verify, not just one of them.
            &[("X-Gitea-Signature", &good), ("X-Forgejo-Signature", &bad)],
            WebhookError::SignatureMismatch {
                header: "X-Forgejo-Signature",
            },
        ),
        (
            &[("X-Gitea-Signature", &prefixed)],
            WebhookError::MalformedSignature {
                header: "X-Gitea-Signature",
                reason: "expected 64 hex digits (an HMAC-SHA256)",
            },
        ),
        (
            &[("X-Forgejo-Signature", &"g".repeat(64))],
            WebhookError::MalformedSignature {
                header: "X-Forgejo-Signature",
                reason: "not hexadecimal",
            },
        ),
    ];
    for (pairs, want) in rejected {
        let error = verify(Provider::Gitea, &headers(pairs), &body, SECRET).unwrap_err();
        assert_eq!(&error, want, "{pairs:?}");
    }
}

#[test]
fn gitlab_token() {
    let body = fixture("gitlab-push.json");
    let secret_text = std::str::from_utf8(SECRET).unwrap();
    verify(
        Provider::GitLab,
        &headers(&[("X-Gitlab-Token", secret_text)]),
        &body,
        SECRET,
    )
    .unwrap();
    let cases: &[(&[(&str, &str)], WebhookError)] = &[
        (
            &[],
            WebhookError::MissingSignature {
                provider: Provider::GitLab,
                expected: "X-Gitlab-Token",
            },
        ),
        (
            &[("X-Gitlab-Token", "It's a Secret to Everybod")],
            WebhookError::TokenMismatch,
        ),
        (
            &[("X-Gitlab-Token", "It's a Secret to Everybodyy")],
            WebhookError::TokenMismatch,
        ),
        (&[("X-Gitlab-Token", "")], WebhookError::TokenMismatch),
        // GitLab does not sign; an HMAC header alone is not a token.
        (
            &[("X-Hub-Signature-256", "sha256=00")],
            WebhookError::MissingSignature {
                provider: Provider::GitLab,
                expected: "X-Gitlab-Token",
            },
        ),
    ];
    for (pairs, want) in cases {
        let error = verify(Provider::GitLab, &headers(pairs), &body, SECRET).unwrap_err();
        assert_eq!(&error, want, "{pairs:?}");
        assert!(!error.to_string().contains(secret_text));
    }
    assert_eq!(
        verify(
            Provider::GitLab,
            &headers(&[("X-Gitlab-Token", "")]),
            &body,
            b""
        )
        .unwrap_err(),
        WebhookError::EmptySecret
    );
}

#[test]
fn github_push_fixture_parses() {
    let body = fixture("github-push.json");
    let event = parse_push(
        Provider::GitHub,
        &headers(&[("X-GitHub-Event", "push")]),
        &body,
    )
    .unwrap();
    let push = push(event);
    assert_eq!(push.git_ref, "refs/heads/main");
    assert_eq!(push.branch(), Some("main"));
    assert_eq!(push.tag(), None);
    assert_eq!(push.before, "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    assert_eq!(push.after, "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c");
    assert!(!push.deleted);
    assert_eq!(push.pusher.as_deref(), Some("octo-dev"));
    assert_eq!(
        push.repository_urls,
        vec![
            "https://github.com/keelson-example/hello-service.git",
            "git@github.com:keelson-example/hello-service.git",
            "git://github.com/keelson-example/hello-service.git",
            "https://github.com/keelson-example/hello-service",
        ]
    );
    assert!(push.matches_repository("https://github.com/keelson-example/hello-service"));
    assert!(push.matches_repository("git@github.com:Keelson-Example/hello-service.git"));
    assert!(push.matches_repository("ssh://git@github.com/keelson-example/hello-service.git"));
    assert!(!push.matches_repository("https://github.com/keelson-example/hello"));
    assert!(!push.matches_repository("https://gitlab.com/keelson-example/hello-service"));
}

#[test]
fn github_branch_deletion_and_ping_and_other_events() {
    let deleted = push(
        parse_push(
            Provider::GitHub,
            &headers(&[("X-GitHub-Event", "push")]),
            &fixture("github-delete-branch.json"),
        )
        .unwrap(),
    );
    assert!(deleted.deleted);
    assert_eq!(deleted.after, "0".repeat(40));
    assert_eq!(deleted.branch(), Some("feature/old-idea"));

    assert_eq!(
        parse_push(
            Provider::GitHub,
            &headers(&[("X-GitHub-Event", "ping")]),
            &fixture("github-ping.json"),
        )
        .unwrap(),
        WebhookEvent::Ping
    );
    // Other events are ignored without even parsing the body.
    assert_eq!(
        parse_push(
            Provider::GitHub,
            &headers(&[("X-GitHub-Event", "issues")]),
            b"not json",
        )
        .unwrap(),
        WebhookEvent::Ignored {
            event: "issues".to_owned()
        }
    );
}

#[test]
fn gitlab_push_tag_push_and_deletion_fixtures_parse() {
    let branch = push(
        parse_push(
            Provider::GitLab,
            &headers(&[("X-Gitlab-Event", "Push Hook")]),
            &fixture("gitlab-push.json"),
        )
        .unwrap(),
    );
    assert_eq!(branch.git_ref, "refs/heads/main");
    assert_eq!(branch.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    assert_eq!(branch.pusher.as_deref(), Some("jmaintainer"));
    assert!(!branch.deleted);
    assert_eq!(
        branch.repository_urls,
        vec![
            "https://gitlab.example.com/platform/hello-service.git",
            "git@gitlab.example.com:platform/hello-service.git",
            "https://gitlab.example.com/platform/hello-service",
        ]
    );
    assert!(branch.matches_repository("https://gitlab.example.com/platform/hello-service.git/"));

    let tag = push(
        parse_push(
            Provider::GitLab,
            &headers(&[("X-Gitlab-Event", "Tag Push Hook")]),
            &fixture("gitlab-tag-push.json"),
        )
        .unwrap(),
    );
    assert_eq!(tag.tag(), Some("v1.0.0"));
    assert_eq!(tag.before, "0".repeat(40));
    assert_eq!(tag.after, "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7");
    assert!(!tag.deleted);
    assert_eq!(tag.pusher.as_deref(), Some("jsmith"));

    let deleted = push(
        parse_push(
            Provider::GitLab,
            &headers(&[("X-Gitlab-Event", "Push Hook")]),
            &fixture("gitlab-delete-branch.json"),
        )
        .unwrap(),
    );
    assert!(deleted.deleted);
    assert_eq!(deleted.branch(), Some("feature/old-idea"));

    assert_eq!(
        parse_push(
            Provider::GitLab,
            &headers(&[("X-Gitlab-Event", "Merge Request Hook")]),
            b"{}",
        )
        .unwrap(),
        WebhookEvent::Ignored {
            event: "Merge Request Hook".to_owned()
        }
    );
}

#[test]
fn gitea_and_forgejo_push_fixture_parses() {
    let body = fixture("gitea-push.json");
    for event_header in ["X-Gitea-Event", "X-Forgejo-Event", "X-Gogs-Event"] {
        let push =
            push(parse_push(Provider::Gitea, &headers(&[(event_header, "push")]), &body).unwrap());
        assert_eq!(push.git_ref, "refs/heads/develop");
        assert_eq!(push.before, "28e1879d029cb852e4844d9c718537df08844e03");
        assert_eq!(push.after, "bffeb74224043ba2feb48d137756c8a9331c449a");
        assert_eq!(push.pusher.as_deref(), Some("robin"));
        assert_eq!(
            push.repository_urls,
            vec![
                "https://code.example.org/platform/hello-service.git",
                "git@code.example.org:platform/hello-service.git",
                "https://code.example.org/platform/hello-service",
            ]
        );
    }
    assert_eq!(
        parse_push(
            Provider::Gitea,
            &headers(&[("X-Gitea-Event", "delete")]),
            &body
        )
        .unwrap(),
        WebhookEvent::Ignored {
            event: "delete".to_owned()
        }
    );
    // A Gitea deletion push (after all zeros) is a deletion.
    let text = String::from_utf8(body).unwrap().replace(
        "\"after\": \"bffeb74224043ba2feb48d137756c8a9331c449a\"",
        &format!("\"after\": \"{}\"", "0".repeat(40)),
    );
    let deleted = push(
        parse_push(
            Provider::Gitea,
            &headers(&[("X-Gitea-Event", "push")]),
            text.as_bytes(),
        )
        .unwrap(),
    );
    assert!(deleted.deleted);
}

#[test]
fn sha256_repositories_have_64_digit_ids() {
    let long = "a".repeat(64);
    let body = format!(
        r#"{{"ref":"refs/heads/main","before":"{}","after":"{long}",
            "repository":{{"clone_url":"https://code.example.org/a/b.git"}}}}"#,
        "b".repeat(64)
    );
    let push = push(
        parse_push(
            Provider::Gitea,
            &headers(&[("X-Gitea-Event", "push")]),
            body.as_bytes(),
        )
        .unwrap(),
    );
    assert_eq!(push.after, long);
}

#[test]
fn malformed_payloads_are_clear_errors() {
    let github = headers(&[("X-GitHub-Event", "push")]);
    let error = parse_push(
        Provider::GitHub,
        &github,
        b"{\n  \"ref\": \"refs/heads/main\",\n  oops\n}",
    )
    .unwrap_err();
    match &error {
        WebhookError::InvalidJson { line, column, .. } => {
            assert_eq!((*line, *column), (3, 3), "{error}");
        }
        other => panic!("expected InvalidJson, got {other:?}"),
    }
    assert!(error.to_string().contains("line 3, column 3"), "{error}");

    let repo = r#""repository":{"clone_url":"https://github.com/a/b.git"}"#;
    let sha = "0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c";
    let cases: Vec<(String, WebhookError)> = vec![
        (
            "[1, 2]".to_owned(),
            WebhookError::InvalidField {
                field: "(body)",
                reason: "expected a JSON object".to_owned(),
            },
        ),
        (
            format!(r#"{{"before":"{sha}","after":"{sha}",{repo}}}"#),
            WebhookError::MissingField {
                field: "ref",
                expected: "string",
            },
        ),
        (
            format!(r#"{{"ref":42,"before":"{sha}","after":"{sha}",{repo}}}"#),
            WebhookError::MissingField {
                field: "ref",
                expected: "string",
            },
        ),
        (
            format!(r#"{{"ref":"main","before":"{sha}","after":"{sha}",{repo}}}"#),
            WebhookError::InvalidField {
                field: "ref",
                reason: "expected a full ref such as `refs/heads/main`".to_owned(),
            },
        ),
        (
            format!(r#"{{"ref":"refs/heads/a b","before":"{sha}","after":"{sha}",{repo}}}"#),
            WebhookError::InvalidField {
                field: "ref",
                reason: "contains spaces or control characters".to_owned(),
            },
        ),
        (
            format!(r#"{{"ref":"refs/heads/main","after":"{sha}",{repo}}}"#),
            WebhookError::MissingField {
                field: "before",
                expected: "string",
            },
        ),
        (
            format!(r#"{{"ref":"refs/heads/main","before":"{sha}",{repo}}}"#),
            WebhookError::MissingField {
                field: "after",
                expected: "string",
            },
        ),
        (
            format!(r#"{{"ref":"refs/heads/main","before":"{sha}","after":"abc123",{repo}}}"#),
            WebhookError::InvalidField {
                field: "after",
                reason: "expected a commit id of 40 or 64 hex digits, got 6 characters".to_owned(),
            },
        ),
        (
            format!(
                r#"{{"ref":"refs/heads/main","before":"{sha}","after":"{}",{repo}}}"#,
                "g".repeat(40)
            ),
            WebhookError::InvalidField {
                field: "after",
                reason: "expected a commit id of 40 or 64 hex digits, got 40 characters".to_owned(),
            },
        ),
        (
            format!(r#"{{"ref":"refs/heads/main","before":"{sha}","after":"{sha}"}}"#),
            WebhookError::MissingField {
                field: "repository URL",
                expected: "string",
            },
        ),
    ];
    for (body, want) in cases {
        let error = parse_push(Provider::GitHub, &github, body.as_bytes()).unwrap_err();
        assert_eq!(error, want, "{body}");
    }
}

#[test]
fn missing_event_header_is_an_error() {
    for (provider, expected) in [
        (Provider::GitHub, "X-GitHub-Event"),
        (Provider::GitLab, "X-Gitlab-Event"),
        (Provider::Gitea, "X-Gitea-Event or X-Forgejo-Event"),
    ] {
        assert_eq!(
            parse_push(provider, &HeaderMap::new(), b"{}").unwrap_err(),
            WebhookError::MissingEventHeader { expected }
        );
        assert_eq!(
            event_type(provider, &HeaderMap::new()).unwrap_err(),
            WebhookError::MissingEventHeader { expected }
        );
    }
    // Gitea also sends X-GitHub-Event, which suffices on its own.
    assert_eq!(
        event_type(Provider::Gitea, &headers(&[("X-GitHub-Event", "push")])).unwrap(),
        "push"
    );
}

#[test]
fn repository_url_normalisation() {
    let cases = [
        ("https://github.com/Owner/Repo.git", "github.com/owner/repo"),
        (
            "https://user:token@github.com:443/owner/repo/",
            "github.com/owner/repo",
        ),
        ("git@github.com:owner/repo.git", "github.com/owner/repo"),
        (
            "ssh://git@github.com:22/owner/repo.git",
            "github.com/owner/repo",
        ),
        ("git://github.com/owner/repo.git", "github.com/owner/repo"),
        ("/srv/git/repo.git", "srv/git/repo"),
    ];
    for (input, want) in cases {
        assert_eq!(normalize_repository_url(input), want, "{input}");
    }
}
