//! Secret masking: secrets from the environment and from `.keelson/secrets.env`, printed raw,
//! base64-, URL- and JSON-encoded, split across writes, or registered with `::add-mask::` at run
//! time, never appear in the output (`--json` or `--plain`) nor in any file of the data dir.

use crate::support::Project;

const ENV_SECRET: &str = "env-Secret-Value-4711";
const SPLIT_SECRET: &str = "splitSECRETvalue";
/// As written in the secrets file (double quotes understand `\n` and `\"`).
const FILE_SECRET_LINE: &str = r#"FILE_SECRET="pa$$ \"quoted\" word\nsecond-line-of-it""#;
const FILE_SECRET: &str = "pa$$ \"quoted\" word\nsecond-line-of-it";
/// What the step registers with `::add-mask::` (computed by the step, never written literally).
const RUNTIME_SECRET: &str = "dyn-42-masked-value";

const PIPELINE: &str = r#"
jobs:
  leak:
    secrets: [ENV_SECRET, FILE_SECRET, SPLIT_SECRET]
    cache:
      key: masking-cache
      paths: [cached.txt]
    artifacts:
      paths: [artifact.txt]
    steps:
      - name: print the secrets in many forms
        run: |
          urlencode() {
            local s="$1" i c
            for ((i = 0; i < ${#s}; i++)); do
              c=${s:i:1}
              case $c in
                [a-zA-Z0-9.~_-]) printf '%s' "$c" ;;
                *) printf '%%%02X' "'$c" ;;
              esac
            done
          }
          json_escape() {
            local s="$1"
            s=${s//\\/\\\\}
            s=${s//\"/\\\"}
            s=${s//$'\n'/\\n}
            printf '%s' "$s"
          }
          for name in ENV_SECRET FILE_SECRET SPLIT_SECRET; do
            value=${!name}
            echo "raw $name: $value"
            echo "stderr $name: $value" >&2
            echo "base64 $name: $(printf %s "$value" | base64 -w0)"
            echo "url $name: $(urlencode "$value")"
            echo "json $name: {\"token\":\"$(json_escape "$value")\"}"
          done
          echo "cached" > cached.txt
          echo "artifact" > artifact.txt
      - name: split across writes
        run: |
          printf 'split: %s' "${SPLIT_SECRET:0:8}"; sleep 0.1; printf '%s\n' "${SPLIT_SECRET:8}"
      - name: runtime mask
        run: |
          value="dyn-$((6 * 7))-masked-value"
          echo "::add-mask::$value"
          echo "runtime: $value"
          echo "token=$value" >> "$KEELSON_OUTPUT"
      - name: "named with ${{ secrets.ENV_SECRET }}"
        run: |
          echo "secret=$ENV_SECRET" >> "$KEELSON_OUTPUT"
          echo "runtime again: dyn-$((40 + 2))-masked-value"
  dependant:
    needs: [leak]
    cacheable: true
    steps:
      - run: |
          echo "from needs: ${{ needs.leak.outputs.secret }} ${{ needs.leak.outputs.token }}"
          echo "copy=${{ needs.leak.outputs.secret }}" >> "$KEELSON_OUTPUT"
"#;

/// Every form of every secret that must not appear anywhere.
fn forbidden() -> Vec<(String, String)> {
    let mut forms = Vec::new();
    for (name, value) in [
        ("ENV_SECRET", ENV_SECRET),
        ("SPLIT_SECRET", SPLIT_SECRET),
        ("FILE_SECRET", FILE_SECRET),
        ("RUNTIME_SECRET", RUNTIME_SECRET),
    ] {
        forms.push((format!("{name} raw"), value.to_owned()));
        forms.push((format!("{name} base64"), base64(value.as_bytes())));
        forms.push((format!("{name} url"), url_encode(value)));
        let json = serde_json::to_string(value).unwrap();
        forms.push((format!("{name} json"), json[1..json.len() - 1].to_owned()));
        for (index, line) in value.lines().enumerate().filter(|_| value.contains('\n')) {
            forms.push((format!("{name} line {index}"), line.to_owned()));
        }
    }
    forms
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
        for _ in chunk.len()..3 {
            out.push('=');
        }
    }
    out
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[track_caller]
fn assert_clean(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for (form, value) in forbidden() {
        assert!(
            !text.contains(&value),
            "{form} `{value}` leaked into {what}:\n{text}"
        );
    }
}

fn masking_project() -> Project {
    let project = Project::new(PIPELINE);
    project.write(
        ".keelson/secrets.env",
        &format!("# local secrets\n{FILE_SECRET_LINE}\n"),
    );
    project
}

#[test]
fn secrets_are_masked_in_json_and_plain_output_and_every_data_file() {
    let project = masking_project();
    let env = [("ENV_SECRET", ENV_SECRET), ("SPLIT_SECRET", SPLIT_SECRET)];
    let run = project.run_with_env(&[], &env);
    run.assert_code(0);

    // The lines are there, with the secrets replaced.
    let lines = run.log_lines("leak");
    for expected in [
        "raw ENV_SECRET: ***",
        "stderr ENV_SECRET: ***",
        "split: ***",
        "::add-mask::***",
        "runtime: ***",
        "runtime again: ***",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "missing `{expected}` in {lines:#?}"
        );
    }
    for prefix in ["base64", "url", "json"] {
        for name in ["ENV_SECRET", "FILE_SECRET", "SPLIT_SECRET"] {
            let line = lines
                .iter()
                .find(|l| l.starts_with(&format!("{prefix} {name}: ")))
                .unwrap_or_else(|| panic!("no {prefix} line for {name}: {lines:#?}"));
            assert!(line.contains("***"), "{line}");
        }
    }
    assert_eq!(run.log_lines("dependant"), ["from needs: *** ***"]);
    assert_eq!(run.outcome("dependant"), "success");
    assert_clean("the --json output", run.stdout.as_bytes());
    assert_clean("stderr of the --json run", run.stderr.as_bytes());

    let mut plain = project.command();
    plain.args(["run", "--plain"]);
    for (name, value) in env {
        plain.env(name, value);
    }
    let plain = plain.output().expect("run keelson --plain");
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");
    let plain_stdout = String::from_utf8_lossy(&plain.stdout);
    assert!(
        plain_stdout.contains("raw ENV_SECRET: ***"),
        "{plain_stdout}"
    );
    assert_clean("the --plain output", &plain.stdout);
    assert_clean("stderr of the --plain run", &plain.stderr);

    let logs = project.keelson(&["logs"]);
    assert_clean("keelson logs", &logs.stdout);

    let files = project.data_files();
    assert!(
        files.iter().any(|f| f.ends_with("run.json")),
        "no run record in {files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.components().any(|c| c.as_os_str() == "step-cache")),
        "no step-cache entry in {files:?}"
    );
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        assert_clean(&file.display().to_string(), &bytes);
    }
}

#[test]
fn secrets_file_is_used_when_the_environment_lacks_the_secret() {
    let project = Project::new(
        r#"
jobs:
  show:
    secrets: [FILE_SECRET]
    steps:
      - run: printf '%s\n' "$FILE_SECRET" | wc -l | tr -d ' '; echo "$FILE_SECRET"
"#,
    );
    project.write(".keelson/secrets.env", &format!("{FILE_SECRET_LINE}\n"));
    let run = project.run(&[]);
    run.assert_code(0);
    // Two lines: the file's `\n` became a newline; both lines are masked.
    assert_eq!(run.log_lines("show"), ["2", "***", "***"]);
    assert_clean("the --json output", run.stdout.as_bytes());
}

#[test]
fn secret_shorter_than_four_bytes_is_refused() {
    let project = Project::new(
        r#"
jobs:
  use:
    secrets: [SHORT]
    steps:
      - run: echo "$SHORT"
"#,
    );
    let run = project.run_with_env(&[], &[("SHORT", "q7%")]);
    run.assert_code(2);
    assert!(
        run.stderr.contains("SHORT") && run.stderr.contains("too short"),
        "unclear message\n{}",
        run.dump()
    );
    assert!(!run.stderr.contains("q7%"), "the message shows the secret");
    assert!(run.of_kind("job_started").next().is_none(), "a job ran");
    assert_nothing_left(&project);
}

/// A refused run leaves no run or work directory in the data dir.
#[track_caller]
fn assert_nothing_left(project: &Project) {
    for sub in ["runs", "work"] {
        let dirs: Vec<_> = std::fs::read_dir(project.data.join(sub))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        assert!(dirs.is_empty(), "a refused run left {dirs:?} behind");
    }
}

#[test]
fn missing_secret_is_refused_before_anything_runs() {
    let project = Project::new(
        r#"
jobs:
  use:
    secrets: [NOT_SET_ANYWHERE]
    steps:
      - run: echo ran
"#,
    );
    let run = project.run(&[]);
    run.assert_code(2);
    assert!(run.stderr.contains("NOT_SET_ANYWHERE"), "{}", run.dump());
    assert!(run.of_kind("job_started").next().is_none());
    assert_nothing_left(&project);
}

#[test]
fn environment_wins_over_the_secrets_file() {
    let project = Project::new(
        r#"
jobs:
  show:
    secrets: [TOKEN]
    steps:
      - run: |
          [ "$TOKEN" = from-the-environment ] && echo "environment wins"
"#,
    );
    project.write(".keelson/secrets.env", "TOKEN=from-the-file\n");
    let run = project.run_with_env(&[], &[("TOKEN", "from-the-environment")]);
    run.assert_code(0);
    assert_eq!(run.log_lines("show"), ["environment wins"]);
}

#[test]
fn step_secret_is_only_in_that_steps_environment() {
    let project = Project::new(
        r#"
jobs:
  show:
    steps:
      - secrets: [STEP_TOKEN]
        run: echo "first ${#STEP_TOKEN} $STEP_TOKEN"
      - run: echo "second ${STEP_TOKEN:-unset}"
"#,
    );
    let run = project.run_with_env(&[], &[("STEP_TOKEN", "step-only-token")]);
    run.assert_code(0);
    assert_eq!(run.log_lines("show"), ["first 15 ***", "second unset"]);
}

#[test]
fn secret_in_a_cache_key_is_not_stored_in_plain_text() {
    let project = Project::new(
        r#"
jobs:
  deps:
    secrets: [REGISTRY_TOKEN]
    cache:
      key: deps-${{ secrets.REGISTRY_TOKEN }}
      paths: [vendor]
    steps:
      - run: mkdir -p vendor && echo lib > vendor/lib.txt
"#,
    );
    let token = "registry-token-0042";
    let run = project.run_with_env(&[], &[("REGISTRY_TOKEN", token)]);
    run.assert_code(0);
    assert!(!run.stdout.contains(token), "{}", run.dump());
    for file in project.data_files() {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(token),
            "the secret is stored in plain text in {}",
            file.display()
        );
    }
}
