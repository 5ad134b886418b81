//! Property tests of the expression language: no input makes it panic, and every error points
//! inside the text it came from.

use keelson_pipeline::expr::{
    self, EvalError, ExprError, FileHasher, Part, Scope, Status, Template,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

struct Hasher;

impl FileHasher for Hasher {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        if patterns.iter().any(String::is_empty) {
            Err("empty pattern".to_owned())
        } else {
            Ok(patterns.join(","))
        }
    }
}

fn contexts() -> Map<String, Value> {
    let value = json!({
        "env": { "A": "a", "B": "", "N": "12", "J": "{\"x\": [1, 2]}" },
        "matrix": { "os": "linux", "list": [1, "two", null, [3]], "obj": { "k": { "v": 1 } } },
        "needs": { "build": { "result": "success", "outputs": { "v": "1.0" } } },
        "steps": {},
        "git": { "branch": "main" },
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Pieces that make up plausible (and implausible) expressions.
fn token() -> impl Strategy<Value = String> {
    let fixed = prop::sample::select(vec![
        "(",
        ")",
        "[",
        "]",
        ".",
        ",",
        "*",
        "!",
        "<",
        "<=",
        ">",
        ">=",
        "==",
        "!=",
        "&&",
        "||",
        "=",
        "&",
        "|",
        " ",
        "  ",
        "null",
        "true",
        "false",
        "0",
        "-1",
        "1.5",
        "1e3",
        "0x1f",
        "0x",
        "1e",
        "'",
        "''",
        "\"",
        "\\",
        "'a''b'",
        "\"a\\\"\"",
        "env",
        "matrix",
        "needs",
        "steps",
        "git",
        "secrets",
        "nope",
        "success()",
        "failure()",
        "always()",
        "cancelled()",
        "contains",
        "startsWith",
        "endsWith",
        "format",
        "join",
        "toJSON",
        "fromJSON",
        "hashFiles",
        "(",
        "'{0}'",
        "'{'",
        "'}'",
        "'[1,2]'",
        "'{\"a\":1}'",
        "'{x'",
        "${{",
        "}}",
        "{",
        "}",
        "é",
        "\u{0}",
        "$",
        "-",
        "_x-y",
        "A",
    ]);
    prop_oneof![
        4 => fixed.prop_map(str::to_owned),
        1 => "[a-zA-Z_][a-zA-Z0-9_-]{0,6}",
        1 => "'[^']{0,6}'",
        1 => "[0-9]{1,4}",
        1 => any::<char>().prop_map(String::from),
    ]
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..24).prop_map(|tokens| tokens.concat())
}

fn text_input() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), token_soup()]
}

fn template_input() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                3 => token_soup().prop_map(|soup| format!("${{{{ {soup} }}}}")),
                1 => token_soup(),
                1 => any::<String>(),
            ],
            0..5
        )
        .prop_map(|parts| parts.concat()),
    ]
}

/// Well-formed expressions over known contexts and functions (arbitrary values inside).
fn valid_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-1.5",
            "0x10",
            "2e3",
            "''",
            "'abc'",
            "env.A",
            "env.N",
            "env.J",
            "matrix.list",
            "matrix.list[3][0]",
            "matrix.obj.k.v",
            "matrix['os']",
            "needs.*.result",
            "needs.build.outputs",
            "git",
            "steps.x.outputs.y",
            "success()",
            "failure()",
            "always()",
            "cancelled()",
            "matrix.list.*",
            "'{0} {1}'",
            "'[1, {\"a\": 2}]'",
        ])
        .prop_map(str::to_owned),
        "[a-z ]{0,5}".prop_map(|s| format!("'{s}'")),
        any::<i32>().prop_map(|n| n.to_string()),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        let binary = prop::sample::select(vec!["&&", "||", "==", "!=", "<", "<=", ">", ">="]);
        let unary = prop::sample::select(vec![
            "!",
            "toJSON",
            "fromJSON",
            "join",
            "format",
            "hashFiles",
            "(",
        ]);
        let pair =
            prop::sample::select(vec!["contains", "startsWith", "endsWith", "join", "format"]);
        prop_oneof![
            (inner.clone(), binary, inner.clone()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (unary, inner.clone()).prop_map(|(f, a)| match f {
                "!" => format!("!{a}"),
                "(" => format!("({a})"),
                f => format!("{f}({a})"),
            }),
            (pair, inner.clone(), inner.clone()).prop_map(|(f, a, b)| format!("{f}({a}, {b})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("({a})[{b}]")),
        ]
    })
}

fn assert_in_bounds(text: &str, offset: usize, len: usize) -> Result<(), TestCaseError> {
    let chars = text.chars().count();
    prop_assert!(
        offset <= chars,
        "offset {offset} beyond {chars} chars of {text:?}"
    );
    prop_assert!(
        offset + len <= chars,
        "span {offset}+{len} beyond {chars} chars of {text:?}"
    );
    Ok(())
}

fn expr_error_in_bounds(text: &str, error: &ExprError) -> Result<(), TestCaseError> {
    prop_assert!(!error.message.is_empty());
    assert_in_bounds(text, error.offset, error.len)
}

fn eval_error_in_bounds(text: &str, error: &EvalError) -> Result<(), TestCaseError> {
    prop_assert!(!error.message.is_empty());
    assert_in_bounds(text, error.offset, error.len)
}

/// Parses, checks and evaluates `text`, checking every reported position.
fn exercise(text: &str, files: bool) -> Result<(), TestCaseError> {
    let expr = match expr::parse(text) {
        Ok(expr) => expr,
        Err(error) => return expr_error_in_bounds(text, &error),
    };
    for error in expr::check(&expr) {
        expr_error_in_bounds(text, &error)?;
    }
    for (path, offset, len) in expr.context_paths() {
        prop_assert!(!path.is_empty());
        assert_in_bounds(text, offset, len)?;
    }
    let _ = expr.uses_status_function();
    let contexts = contexts();
    let scope = Scope {
        contexts: &contexts,
        status: Status {
            failed: files,
            cancelled: false,
        },
        files: if files { Some(&Hasher) } else { None },
    };
    match expr::evaluate(&expr, &scope) {
        Ok(value) => {
            let _ = expr::truthy(&value);
            let _ = expr::to_text(&value);
        }
        Err(error) => eval_error_in_bounds(text, &error)?,
    }
    Ok(())
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer run.

    #[test]
    fn expressions_never_panic(text in text_input(), files in any::<bool>()) {
        exercise(&text, files)?;
    }

    #[test]
    fn well_formed_expressions_check_clean_and_evaluate(text in valid_expr(), files in any::<bool>()) {
        let parsed = expr::parse(&text);
        prop_assert!(parsed.is_ok(), "{text:?}: {parsed:?}");
        if let Ok(parsed) = parsed {
            prop_assert_eq!(expr::check(&parsed), Vec::new(), "{}", text);
        }
        exercise(&text, files)?;
        let template = Template::parse(&format!("x ${{{{ {text} }}}} y"));
        prop_assert!(template.is_ok(), "{text:?}: {template:?}");
    }

    #[test]
    fn templates_never_panic(text in template_input()) {
        let template = match Template::parse(&text) {
            Ok(template) => template,
            Err(error) => return expr_error_in_bounds(&text, &error),
        };
        // The parts put back together give the text again.
        let chars: Vec<char> = text.chars().collect();
        let mut rebuilt = String::new();
        for part in &template.parts {
            match part {
                Part::Text(literal) => rebuilt.push_str(literal),
                Part::Expr { offset, len, .. } => {
                    assert_in_bounds(&text, *offset, *len)?;
                    prop_assert!(*offset >= 3);
                    rebuilt.push_str("${{");
                    rebuilt.extend(&chars[*offset..*offset + *len]);
                    rebuilt.push_str("}}");
                }
            }
        }
        prop_assert_eq!(&rebuilt, &text);
        let contexts = contexts();
        let scope = Scope { contexts: &contexts, status: Status::default(), files: Some(&Hasher) };
        match template.render(&scope) {
            Ok(rendered) => {
                if template.is_literal() {
                    prop_assert_eq!(rendered, text);
                }
            }
            Err(error) => eval_error_in_bounds(&text, &error)?,
        }
    }

    #[test]
    fn literal_text_renders_as_itself(text in any::<String>()) {
        prop_assume!(!text.contains("${{"));
        let template = Template::parse(&text);
        prop_assert!(template.as_ref().is_ok_and(Template::is_literal));
        let contexts = Map::new();
        let scope = Scope { contexts: &contexts, status: Status::default(), files: None };
        let rendered = template.ok().map(|t| t.render(&scope));
        prop_assert_eq!(rendered, Some(Ok(text)));
    }

    #[test]
    fn string_literals_round_trip(text in any::<String>()) {
        let quoted = format!("'{}'", text.replace('\'', "''"));
        let expr = expr::parse(&quoted);
        prop_assert!(expr.is_ok(), "{quoted:?}: {expr:?}");
        let contexts = Map::new();
        let scope = Scope { contexts: &contexts, status: Status::default(), files: None };
        let value = expr.ok().map(|e| expr::evaluate(&e, &scope));
        prop_assert_eq!(value, Some(Ok(Value::String(text))));
    }

    #[test]
    fn numbers_compare_like_numbers(a in -1.0e6..1.0e6f64, b in -1.0e6..1.0e6f64) {
        let text = format!("{a:?} < {b:?} && {a:?} != {b:?} || {a:?} >= {b:?}");
        let contexts = Map::new();
        let scope = Scope { contexts: &contexts, status: Status::default(), files: None };
        let value = expr::parse(&text).ok().map(|e| expr::evaluate(&e, &scope));
        prop_assert_eq!(value, Some(Ok(Value::Bool(true))), "{}", text);
    }
}

#[test]
fn hostile_inputs_do_not_overflow() {
    let inputs = [
        "(".repeat(50_000),
        "!".repeat(50_000),
        "[".repeat(50_000),
        "a(".repeat(50_000),
        "${{ ".to_owned() + &"(".repeat(50_000) + " }}",
        "'".repeat(50_001),
        "${{".repeat(10_000),
    ];
    for input in &inputs {
        let _ = exercise(input, true);
        let _ = Template::parse(input);
    }
}
