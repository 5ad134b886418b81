//! Property tests of the YAML front end: arbitrary text, and mutations of a real pipeline, never
//! make loading, validation or planning panic.

use keelson_pipeline::load::{SourceLoader, load};
use keelson_pipeline::plan::Plan;
use proptest::prelude::*;

struct Loader;

impl SourceLoader for Loader {
    fn read(&self, _path: &str) -> Result<String, String> {
        Ok("jobs:\n  inc:\n    steps: [{run: x}]\n".to_owned())
    }
}

const SEED: &str = r#"env:
  GREETING: hello
include: [more.yml]
jobs:
  lint:
    steps:
      - run: echo "$GREETING ${{ env.GREETING }}"
  test:
    needs: [lint]
    matrix:
      os: [linux, mac]
      include: [{os: bsd, extra: 1}]
    if: ${{ success() && contains(matrix.os, 'l') }}
    cache: {key: "k-${{ hashFiles('**') }}", paths: [target], restore-keys: [k-]}
    steps:
      - id: version
        run: echo "ver=1.2.3" >> "$KEELSON_OUTPUT"
        retry: {max: 2, delay: 1s}
  build:
    needs: [test]
    secrets: [API_TOKEN]
    steps:
      - run: echo "${{ needs.test.outputs.ver }} ${{ steps.x.outputs.y }}"
"#;

fn exercise(text: &str) {
    let loaded = load(".keelson.yml", text, &Loader);
    let _ = loaded.diagnostics.render(&loaded.sources);
    if let Some(pipeline) = &loaded.pipeline {
        let _ = Plan::new(pipeline, &[]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        exercise(&text);
    }

    #[test]
    fn yamlish_text_never_panics(text in "([a-z:\\-\\[\\]{}\"'$|>&*!#, \\n]|\\$\\{\\{|\\}\\}|  ){0,120}") {
        exercise(&text);
    }

    #[test]
    fn mutated_pipelines_never_panic(cut in 0usize..SEED.len(), insert in "\\PC{0,8}", delete in 0usize..12) {
        let mut text: Vec<char> = SEED.chars().collect();
        let at = cut.min(text.len());
        let end = (at + delete).min(text.len());
        text.splice(at..end, insert.chars());
        exercise(&text.into_iter().collect::<String>());
    }
}

#[test]
fn deeply_nested_yaml_is_rejected_not_overflowed() {
    let text = format!("jobs: {}{}", "[".repeat(10_000), "]".repeat(10_000));
    exercise(&text);
    let text = format!(
        "jobs:\n  a:\n    steps: [{{run: \"${{{{ {}1{} }}}}\"}}]\n",
        "(".repeat(5_000),
        ")".repeat(5_000)
    );
    exercise(&text);
}
