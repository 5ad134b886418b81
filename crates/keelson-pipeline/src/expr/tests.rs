//! Table-driven tests of parsing, checking, evaluation and templates.

use serde_json::{Map, Value, json};

use super::*;

fn contexts() -> Map<String, Value> {
    let value = json!({
        "env": { "FOO": "bar", "EMPTY": "", "NUM": "42", "I": 1 },
        "matrix": { "os": "linux", "node": 18, "list": [1, 2, 3], "half": 0.5 },
        "needs": {
            "build": { "result": "success", "outputs": { "ver": "1.2.3", "json": "{\"a\":[1,2]}" } },
            "lint": { "result": "failure" }
        },
        "git": { "branch": "main" },
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

struct FakeHasher;

impl FileHasher for FakeHasher {
    fn hash_files(&self, patterns: &[String]) -> Result<String, String> {
        match patterns {
            [one] if one == "bad" => Err("bad pattern".to_owned()),
            _ => Ok(format!("hash({})", patterns.join("|"))),
        }
    }
}

fn eval_with(
    text: &str,
    status: Status,
    files: Option<&dyn FileHasher>,
) -> Result<Value, EvalError> {
    let contexts = contexts();
    let scope = Scope {
        contexts: &contexts,
        status,
        files,
    };
    let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
    evaluate(&expr, &scope)
}

fn eval_ok(text: &str) -> Value {
    eval_with(text, Status::default(), Some(&FakeHasher))
        .unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

#[test]
fn evaluates() {
    let table: &[(&str, Value)] = &[
        // literals
        ("null", json!(null)),
        ("true", json!(true)),
        ("false", json!(false)),
        ("1", json!(1)),
        ("1.5", json!(1.5)),
        ("-2", json!(-2)),
        ("0x1F", json!(31)),
        ("1e3", json!(1000)),
        ("2.5E-1", json!(0.25)),
        ("'it''s'", json!("it's")),
        ("''", json!("")),
        (r#""a\"b\\c\n""#, json!("a\"b\\c\n")),
        ("'héllo wörld'", json!("héllo wörld")),
        // contexts and access
        ("env.FOO", json!("bar")),
        ("env.foo", json!("bar")),
        ("ENV.FOO", json!("bar")),
        ("env.MISSING", json!(null)),
        ("env.FOO.deeper.still", json!(null)),
        ("env.MISSING.x", json!(null)),
        ("matrix.list[1]", json!(2)),
        ("matrix.list[1.7]", json!(2)),
        ("matrix.list['1']", json!(2)),
        ("matrix.list[5]", json!(null)),
        ("matrix.list[-1]", json!(null)),
        ("matrix.list[true]", json!(null)),
        ("matrix['os']", json!("linux")),
        ("matrix[env.MISSING]", json!(null)),
        ("needs['build'].result", json!("success")),
        ("needs.build.outputs.ver", json!("1.2.3")),
        ("needs.build['outputs']['ver']", json!("1.2.3")),
        ("'abc'.length", json!(null)),
        ("(matrix).os", json!("linux")),
        ("needs.*.result", json!(["success", "failure"])),
        ("needs[*].result", json!(["success", "failure"])),
        ("matrix.list.*", json!([1, 2, 3])),
        ("env.FOO.*", json!([])),
        (
            r#"fromJSON('[{"a":1},{"b":2},{"a":3}]').*.a"#,
            json!([1, 3]),
        ),
        (r#"fromJSON('[[1,2],[3]]').*.*"#, json!([1, 2, 3])),
        (r#"fromJSON('[[1,2],[3]]').*[0]"#, json!([1, 3])),
        // comparison
        ("1 == 1", json!(true)),
        ("1 == 1.0", json!(true)),
        ("'abc' == 'ABC'", json!(true)),
        ("'abc' != 'ABC'", json!(false)),
        ("'1' == 1", json!(true)),
        ("' 1 ' == 1", json!(true)),
        ("'0x10' == 16", json!(true)),
        ("null == 0", json!(true)),
        ("null == null", json!(true)),
        ("null == ''", json!(true)),
        ("true == 1", json!(true)),
        ("false == '0'", json!(true)),
        ("'' == 0", json!(true)),
        ("'abc' == 0", json!(false)),
        ("'abc' != 0", json!(true)),
        ("'nan' == 'NaN'", json!(true)),
        ("1 < 2", json!(true)),
        ("2 <= 2", json!(true)),
        ("3 > 2", json!(true)),
        ("2 >= 3", json!(false)),
        ("'a' < 'B'", json!(true)),
        ("'b' < 'A'", json!(false)),
        ("'_' < 'a'", json!(false)),
        ("null < 1", json!(true)),
        ("'abc' < 1", json!(false)),
        ("'abc' >= 1", json!(false)),
        ("matrix.list == matrix.list", json!(true)),
        ("matrix.list < matrix.list", json!(false)),
        ("fromJSON('[1,2]') == fromJSON('[1, 2]')", json!(true)),
        ("fromJSON('[1,2]') == fromJSON('[2, 1]')", json!(false)),
        (
            r#"fromJSON('{"a":1,"b":2}') == fromJSON('{"b":2,"a":1.0}')"#,
            json!(true),
        ),
        ("fromJSON('[1]') == 1", json!(false)),
        ("fromJSON('[]') == ''", json!(false)),
        ("matrix.node == '18'", json!(true)),
        ("matrix.half < 1", json!(true)),
        // logic
        ("1 && 2", json!(2)),
        ("0 && 2", json!(0)),
        ("'' || 'x'", json!("x")),
        ("'a' || 'x'", json!("a")),
        ("null || false", json!(false)),
        ("env.EMPTY || 'default'", json!("default")),
        ("env.FOO && 'yes' || 'no'", json!("yes")),
        ("env.MISSING && 'yes' || 'no'", json!("no")),
        ("false && nope.x", json!(false)),
        ("true || nope.x", json!(true)),
        ("!0", json!(true)),
        ("!!'a'", json!(true)),
        ("!fromJSON('[]')", json!(false)),
        ("!1 == false", json!(true)),
        ("1 == 1 && 2 > 3 || 'z'", json!("z")),
        ("1 < 2 == true", json!(true)),
        ("1 == 2 == false", json!(true)),
        ("(1 || 2) && 3", json!(3)),
        ("1 || 0 && 0", json!(1)),
        ("0 && 1 || 2", json!(2)),
        ("3 == 2 < 1", json!(false)),
        ("(3 == 2) < 1", json!(true)),
        ("1 < 2 && 2 < 1 || 1 != 1 == false", json!(true)),
        ("'${{' == '${{'", json!(true)),
        ("!(1 && 0)", json!(true)),
        // functions
        ("contains('Hello', 'ell')", json!(true)),
        ("contains('Hello', 'ELL')", json!(true)),
        ("contains('Hello', 'xyz')", json!(false)),
        ("contains(matrix.list, 2)", json!(true)),
        ("contains(matrix.list, '2')", json!(true)),
        ("contains(matrix.list, 4)", json!(false)),
        ("contains(needs.*.result, 'FAILURE')", json!(true)),
        ("contains(matrix, 'os')", json!(false)),
        ("contains(123, 2)", json!(true)),
        ("CONTAINS('abc', 'B')", json!(true)),
        ("startsWith('Hello', 'he')", json!(true)),
        ("startsWith('Hello', 'lo')", json!(false)),
        ("endsWith('Hello', 'LO')", json!(true)),
        ("startsWith(fromJSON('[1]'), '1')", json!(false)),
        ("startswith(git.branch, 'ma')", json!(true)),
        ("format('{0}-{1}', 'a', 1)", json!("a-1")),
        ("format('{{0}} {0} }}', 'x')", json!("{0} x }")),
        ("format('{1}{0}{1}', 'a', 'b')", json!("bab")),
        ("format('plain')", json!("plain")),
        ("format('{0}', matrix.list)", json!("[1,2,3]")),
        ("format('{0}|{1}|{2}', null, true, 1.5)", json!("|true|1.5")),
        ("join(matrix.list)", json!("1,2,3")),
        ("join(matrix.list, ' + ')", json!("1 + 2 + 3")),
        ("join('abc', '-')", json!("abc")),
        ("join(fromJSON('[]'))", json!("")),
        ("toJSON(matrix.list)", json!("[\n  1,\n  2,\n  3\n]")),
        ("toJSON('a')", json!("\"a\"")),
        ("toJSON(null)", json!("null")),
        (r#"fromJSON('{"a": [1, 2]}').a[1]"#, json!(2)),
        ("fromJSON(needs.build.outputs.json).a[0]", json!(1)),
        ("fromJSON('true')", json!(true)),
        ("fromJSON(' 12 ')", json!(12)),
        (
            "hashFiles('**/*.rs', 'Cargo.lock')",
            json!("hash(**/*.rs|Cargo.lock)"),
        ),
        ("success()", json!(true)),
        ("failure()", json!(false)),
        ("always()", json!(true)),
        ("cancelled()", json!(false)),
        ("Success()", json!(true)),
    ];
    for (text, expected) in table {
        assert_eq!(&eval_ok(text), expected, "{text}");
    }
}

#[test]
fn status_functions() {
    let table: &[(Status, [bool; 4])] = &[
        // success, failure, always, cancelled
        (
            Status {
                failed: false,
                cancelled: false,
            },
            [true, false, true, false],
        ),
        (
            Status {
                failed: true,
                cancelled: false,
            },
            [false, true, true, false],
        ),
        (
            Status {
                failed: false,
                cancelled: true,
            },
            [false, false, true, true],
        ),
        (
            Status {
                failed: true,
                cancelled: true,
            },
            [false, true, true, true],
        ),
    ];
    for (status, expected) in table {
        for (name, want) in ["success()", "failure()", "always()", "cancelled()"]
            .iter()
            .zip(expected)
        {
            assert_eq!(
                eval_with(name, *status, None),
                Ok(json!(want)),
                "{name} {status:?}"
            );
        }
    }
}

#[test]
fn evaluation_errors() {
    let table: &[(&str, &str, usize, usize)] = &[
        ("foo.bar", "unknown context `foo`", 0, 3),
        (
            "secrets.TOKEN",
            "context `secrets` is not available here",
            0,
            7,
        ),
        ("env.FOO && nope()", "unknown function `nope`", 11, 4),
        (
            "startsWith('a')",
            "`startsWith` takes 2 arguments, got 1",
            0,
            15,
        ),
        (
            "format('{1}', 'a')",
            "format: no argument for `{1}` (1 argument after the format string)",
            0,
            18,
        ),
        (
            "format('{0}')",
            "format: no argument for `{0}` (0 arguments after the format string)",
            0,
            13,
        ),
        (
            "format('{x}', 1)",
            "format: invalid placeholder in `{x}` (write `{0}`, or `{{` for a brace)",
            0,
            16,
        ),
        (
            "format('{', 1)",
            "format: invalid placeholder in `{` (write `{0}`, or `{{` for a brace)",
            0,
            14,
        ),
        (
            "format('a}b', 1)",
            "format: unmatched `}` in `a}b` (write `}}` for a brace)",
            0,
            16,
        ),
        (
            "fromJSON('{x')",
            "fromJSON: invalid JSON at line 1 column 2 in `{x`: key must be a string",
            0,
            14,
        ),
        (
            "fromJSON('')",
            "fromJSON: invalid JSON at line 1 column 0 in ``: EOF while parsing a value",
            0,
            12,
        ),
        ("hashFiles('bad')", "hashFiles: bad pattern", 0, 16),
        ("matrix[nope]", "unknown context `nope`", 7, 4),
    ];
    for (text, message, offset, len) in table {
        let expected = EvalError {
            offset: *offset,
            len: *len,
            message: (*message).to_owned(),
        };
        assert_eq!(
            eval_with(text, Status::default(), Some(&FakeHasher)),
            Err(expected),
            "{text}"
        );
    }
    let error = eval_with("hashFiles('x')", Status::default(), None).err();
    assert_eq!(
        error.map(|e| e.message),
        Some("hashFiles() cannot read files here".to_owned())
    );
}

const CALL_HINT: &str = "only functions can be called, e.g. `contains(…)`";

#[test]
fn parse_errors() {
    let too_deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
    let too_deep_not = "!".repeat(51) + "a";
    let table: &[(&str, &str, usize, usize, Option<&str>)] = &[
        ("", "empty expression", 0, 0, None),
        ("   ", "empty expression", 0, 3, None),
        (")", "unexpected `)`", 0, 1, None),
        ("a)", "unexpected `)`", 1, 1, None),
        (
            "a b",
            "unexpected `b`",
            2,
            1,
            Some("expected an operator such as `&&`, `||` or `==` before it"),
        ),
        (
            "'abc",
            "unterminated string",
            0,
            4,
            Some("close it with `'` (write `''` for a quote inside)"),
        ),
        (
            "'it''s",
            "unterminated string",
            0,
            6,
            Some("close it with `'` (write `''` for a quote inside)"),
        ),
        (
            "\"abc\\\"",
            "unterminated string",
            0,
            6,
            Some("close it with `\"`"),
        ),
        ("a &&", "expected an expression after `&&`", 2, 2, None),
        ("a && )", "expected an expression after `&&`", 5, 1, None),
        ("a ||", "expected an expression after `||`", 2, 2, None),
        ("a == ", "expected an expression after `==`", 2, 2, None),
        ("a < ]", "expected an expression after `<`", 4, 1, None),
        ("!", "expected an expression after `!`", 0, 1, None),
        ("()", "expected an expression after `(`", 1, 1, None),
        ("(a", "unclosed `(`", 0, 1, Some("add `)`")),
        (
            "(a b",
            "unexpected `b`",
            3,
            1,
            Some("expected `)` to close the `(`"),
        ),
        ("a.", "expected a property name after `.`", 1, 1, None),
        ("a.1", "expected a property name after `.`", 2, 1, None),
        ("a[", "expected an expression after `[`", 1, 1, None),
        ("a[]", "expected an expression after `[`", 2, 1, None),
        ("a[1", "unclosed `[`", 1, 1, Some("add `]`")),
        (
            "a[1 2]",
            "unexpected `2`",
            4,
            1,
            Some("expected `]` to close the `[`"),
        ),
        ("f(1,", "expected an expression after `,`", 3, 1, None),
        ("f(1,)", "expected an expression after `,`", 4, 1, None),
        ("f(1", "unclosed `(`", 1, 1, Some("add `,` or `)`")),
        (
            "f(1 2)",
            "unexpected `2`",
            4,
            1,
            Some("expected `,` or `)` to close the `(`"),
        ),
        ("a.b()", "unexpected `(`", 3, 1, Some(CALL_HINT)),
        ("true()", "unexpected `(`", 4, 1, Some(CALL_HINT)),
        ("(a)(b)", "unexpected `(`", 3, 1, Some(CALL_HINT)),
        ("a = b", "unexpected `=`", 2, 1, Some("use `==` to compare")),
        ("a & b", "unexpected `&`", 2, 1, Some("use `&&` for “and”")),
        ("a | b", "unexpected `|`", 2, 1, Some("use `||` for “or”")),
        ("a + b", "unexpected character `+`", 2, 1, None),
        ("#", "unexpected character `#`", 0, 1, None),
        ("'é' == é", "unexpected character `é`", 7, 1, None),
        ("'é' == )", "expected an expression after `==`", 7, 1, None),
        ("1abc", "invalid number `1abc`", 0, 4, None),
        ("0x", "invalid number `0x`", 0, 2, None),
        ("0xfg", "invalid number `0xfg`", 0, 4, None),
        ("1e999", "number `1e999` is out of range", 0, 5, None),
        (
            "1 -2",
            "unexpected `-2`",
            2,
            2,
            Some("expected an operator such as `&&`, `||` or `==` before it"),
        ),
        (
            r#""a\qb""#,
            "unknown escape `\\q` in string",
            2,
            2,
            Some("known escapes: \\\" \\\\ \\n \\t \\r \\0 \\' \\/"),
        ),
        ("a *", "unexpected `*`", 2, 1, None),
        (
            &too_deep,
            "expression nested too deeply (more than 50 levels)",
            50,
            1,
            Some("split it into simpler expressions"),
        ),
        (
            &too_deep_not,
            "expression nested too deeply (more than 50 levels)",
            50,
            1,
            Some("split it into simpler expressions"),
        ),
    ];
    for (text, message, offset, len, hint) in table {
        let expected = ExprError {
            offset: *offset,
            len: *len,
            message: (*message).to_owned(),
            hint: hint.map(str::to_owned),
        };
        assert_eq!(parse(text).err(), Some(expected), "{text}");
    }
}

#[test]
fn hostile_nesting_is_an_error_not_a_crash() {
    let inputs = [
        "(".repeat(100_000),
        "!".repeat(100_000) + "a",
        "f(".repeat(100_000),
        "a[".repeat(100_000),
        format!("{}1{}", "(".repeat(100_000), ")".repeat(100_000)),
    ];
    for input in &inputs {
        let error = parse(input).err().map(|e| e.message);
        assert_eq!(
            error.as_deref(),
            Some("expression nested too deeply (more than 50 levels)")
        );
    }
    // Just under the limit works.
    let ok = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(eval_ok(&ok), json!(1));
    assert_eq!(eval_ok(&("!".repeat(MAX_DEPTH) + "1")), json!(true));
    let args = format!("{}1{}", "toJSON(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert!(parse(&args).is_ok());
    // Long flat chains are fine: they do not nest.
    let chain = vec!["env.MISSING"; 20_000].join(" || ") + " || 'last'";
    assert_eq!(eval_ok(&chain), json!("last"));
    let path = format!("env{}", ".x".repeat(20_000));
    assert_eq!(eval_ok(&path), json!(null));
    let compare = vec!["1"; 20_000].join(" == ");
    assert_eq!(eval_ok(&compare), json!(true));
}

#[test]
fn exponential_text_growth_is_capped() {
    let table = [
        ("toJSON(", "'\"'", "toJSON: the result is longer than 8 MiB"),
        (
            "format('{0}{0}', ",
            "'ab'",
            "format: the result is longer than 8 MiB",
        ),
    ];
    for (open, inner, message) in table {
        let closers = ")".repeat(open.matches('(').count());
        let depth = MAX_DEPTH / open.matches('(').count();
        let text = format!("{}{inner}{}", open.repeat(depth), closers.repeat(depth));
        let error = eval_with(&text, Status::default(), None).err();
        assert_eq!(error.map(|e| e.message).as_deref(), Some(message), "{text}");
    }
}

#[test]
fn maximum_nesting_fits_a_small_stack() {
    // Every kind of nesting at the limit, parsed, checked and evaluated on a 512 KiB stack.
    // An unoptimised build needs up to about 400 KiB; threads usually get 2 MiB or more.
    let kinds = [
        "(",
        "!",
        "toJSON(",
        "matrix.list[",
        "(!",
        "contains(1, ",
        "join(",
    ];
    let closers = [")", "", ")", "]", ")", ")", ")"];
    let handle = std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            for (open, close) in kinds.iter().zip(closers) {
                let depth = if open.len() == 2 {
                    MAX_DEPTH / 2
                } else {
                    MAX_DEPTH
                };
                let text = format!("{}1{}", open.repeat(depth), close.repeat(depth));
                let expr = parse(&text).map_err(|e| format!("{open}: {e}"))?;
                let _ = check(&expr);
                let _ = expr.context_paths();
                let _ = expr.uses_status_function();
                let contexts = contexts();
                let scope = Scope {
                    contexts: &contexts,
                    status: Status::default(),
                    files: None,
                };
                let _ = evaluate(&expr, &scope);
                let _ = Template::parse(&format!("${{{{ {text} }}}}"));
            }
            Ok::<(), String>(())
        });
    let result = handle
        .map_err(|e| e.to_string())
        .and_then(|h| h.join().map_err(|_| "panicked".to_owned()));
    assert_eq!(result, Ok(Ok(())));
}

#[test]
fn checks() {
    type Expected<'a> = &'a [(&'a str, usize, usize, &'a str)];
    let table: &[(&str, Expected<'_>)] = &[
        ("env.A && matrix.b || needs.x.result == 'ok'", &[]),
        ("Env.A && STEPS.x", &[]),
        ("contains(env.A, 'b') && hashFiles('a', 'b', 'c')", &[]),
        (
            "contians('a', 'b')",
            &[(
                "unknown function `contians`",
                0,
                8,
                "did you mean `contains`?",
            )],
        ),
        (
            "bogus(1)",
            &[(
                "unknown function `bogus`",
                0,
                5,
                "known functions: success, failure, always, cancelled, contains, startsWith, endsWith, format, join, toJSON, fromJSON, hashFiles",
            )],
        ),
        (
            "startsWith('a')",
            &[("`startsWith` takes 2 arguments, got 1", 0, 15, "")],
        ),
        (
            "success(1)",
            &[("`success` takes no arguments, got 1", 0, 10, "")],
        ),
        (
            "join()",
            &[("`join` takes 1 or 2 arguments, got 0", 0, 6, "")],
        ),
        (
            "toJSON(1, 2)",
            &[("`toJSON` takes 1 argument, got 2", 0, 12, "")],
        ),
        (
            "format()",
            &[("`format` takes at least 1 argument, got 0", 0, 8, "")],
        ),
        (
            "evn.FOO",
            &[("unknown context `evn`", 0, 3, "did you mean `env`?")],
        ),
        (
            "success",
            &[(
                "unknown context `success`",
                0,
                7,
                "`success` is a function: write `success()`",
            )],
        ),
        (
            "qqq",
            &[(
                "unknown context `qqq`",
                0,
                3,
                "known contexts: env, matrix, needs, steps, git, keelson, secrets",
            )],
        ),
        (
            "matrx.os == fromJSN(nedds.x)",
            &[
                ("unknown context `matrx`", 0, 5, "did you mean `matrix`?"),
                (
                    "unknown function `fromJSN`",
                    12,
                    7,
                    "did you mean `fromJSON`?",
                ),
                ("unknown context `nedds`", 20, 5, "did you mean `needs`?"),
            ],
        ),
    ];
    for (text, expected) in table {
        let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let expected: Vec<ExprError> = expected
            .iter()
            .map(|(message, offset, len, hint)| ExprError {
                offset: *offset,
                len: *len,
                message: (*message).to_owned(),
                hint: (!hint.is_empty()).then(|| (*hint).to_owned()),
            })
            .collect();
        assert_eq!(check(&expr), expected, "{text}");
    }
}

#[test]
fn status_function_detection() {
    let table = [
        ("success()", true),
        ("always() && env.A", true),
        ("!cancelled()", true),
        ("contains(toJSON(FAILURE()), 'x')", true),
        ("env.A == 'x'", false),
        ("contains(env.success, 'always')", false),
    ];
    for (text, expected) in table {
        let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(expr.uses_status_function(), expected, "{text}");
    }
}

#[test]
fn context_paths() {
    type Paths<'a> = &'a [(&'a [&'a str], usize, usize)];
    let table: &[(&str, Paths<'_>)] = &[
        (
            "needs.build.outputs.ver",
            &[(&["needs", "build", "outputs", "ver"], 0, 23)],
        ),
        (
            "needs['build'].result",
            &[(&["needs", "build", "result"], 0, 21)],
        ),
        ("env", &[(&["env"], 0, 3)]),
        ("ENV.Foo", &[(&["env", "Foo"], 0, 7)]),
        (
            "matrix.list[env.I].x",
            &[(&["matrix", "list"], 0, 11), (&["env", "I"], 12, 5)],
        ),
        ("matrix.list[0].x", &[(&["matrix", "list"], 0, 11)]),
        ("contains(needs.*.result, 'failure')", &[(&["needs"], 9, 5)]),
        (
            "env.A && fromJSON(steps.s.outputs.j).k",
            &[
                (&["env", "A"], 0, 5),
                (&["steps", "s", "outputs", "j"], 18, 17),
            ],
        ),
        ("'lit' == 1", &[]),
    ];
    for (text, expected) in table {
        let expr = parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        let expected: Vec<(Vec<String>, usize, usize)> = expected
            .iter()
            .map(|(path, offset, len)| {
                (
                    path.iter().map(|s| (*s).to_owned()).collect(),
                    *offset,
                    *len,
                )
            })
            .collect();
        assert_eq!(expr.context_paths(), expected, "{text}");
    }
}

#[test]
fn truthiness_and_text() {
    let table: &[(Value, bool, &str)] = &[
        (json!(null), false, ""),
        (json!(false), false, "false"),
        (json!(true), true, "true"),
        (json!(0), false, "0"),
        (json!(-0.0), false, "0"),
        (json!(0.0), false, "0"),
        (json!(3.0), true, "3"),
        (json!(-7), true, "-7"),
        (json!(1.5), true, "1.5"),
        (json!(1e20), true, "1e+20"),
        (json!(1e-7), true, "1e-7"),
        (json!(0.1), true, "0.1"),
        (json!(-2.5e300), true, "-2.5e+300"),
        (json!(u64::MAX), true, "18446744073709551615"),
        (json!(""), false, ""),
        (json!("0"), true, "0"),
        (json!("false"), true, "false"),
        (json!([]), true, "[]"),
        (json!({}), true, "{}"),
        (json!([1, "a", null]), true, "[1,\"a\",null]"),
        (json!({"a": {"b": 1}}), true, "{\"a\":{\"b\":1}}"),
    ];
    for (value, truth, text) in table {
        assert_eq!(truthy(value), *truth, "{value}");
        assert_eq!(to_text(value), *text, "{value}");
    }
}

fn expr(text: &str) -> Expr {
    parse(text).unwrap_or_else(|e| panic!("{text}: {e:?}"))
}

#[test]
fn templates_split() {
    let text = |s: &str| Part::Text(s.to_owned());
    let part = |s: &str, offset: usize, len: usize| Part::Expr {
        expr: expr(s),
        offset,
        len,
    };
    let table: Vec<(&str, Vec<Part>)> = vec![
        ("", vec![]),
        ("plain text", vec![text("plain text")]),
        (
            "costs $5 {not} ${ nor } {{ this }}",
            vec![text("costs $5 {not} ${ nor } {{ this }}")],
        ),
        (
            "a ${{ env.FOO }} b",
            vec![text("a "), part(" env.FOO ", 5, 9), text(" b")],
        ),
        ("${{env.FOO}}", vec![part("env.FOO", 3, 7)]),
        (
            "${{ 1 }}${{ 2 }}",
            vec![part(" 1 ", 3, 3), part(" 2 ", 11, 3)],
        ),
        ("${{ '}}' }}", vec![part(" '}}' ", 3, 6)]),
        (r#"${{ "}}\"}}" }}"#, vec![part(r#" "}}\"}}" "#, 3, 10)]),
        (
            "${{ 'it''s }}' }}!",
            vec![part(" 'it''s }}' ", 3, 12), text("!")],
        ),
        (
            "é ${{ env.FOO }} ü",
            vec![text("é "), part(" env.FOO ", 5, 9), text(" ü")],
        ),
        ("$${{ 1 }}", vec![text("$"), part(" 1 ", 4, 3)]),
    ];
    for (input, expected) in table {
        let template = Template::parse(input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
        assert_eq!(template.parts, expected, "{input}");
        assert_eq!(template.is_literal(), !input.contains("${{"), "{input}");
    }
}

#[test]
fn template_errors() {
    let table: &[(&str, &str, usize, usize)] = &[
        ("x ${{ env.FOO", "unclosed `${{`", 2, 3),
        ("x ${{ env.FOO }", "unclosed `${{`", 2, 3),
        ("${{ }}", "empty expression", 0, 6),
        ("a ${{}} b", "empty expression", 2, 5),
        ("ab ${{ 1 + }}", "unexpected character `+`", 9, 1),
        ("${{ 'abc }}", "unterminated string", 4, 5),
        ("é ${{ 'abc }} ${{ 1 }}", "unterminated string", 6, 5),
        ("ok ${{ 1 }} then ${{ ) }}", "unexpected `)`", 21, 1),
        ("${{ a && }}", "expected an expression after `&&`", 6, 2),
    ];
    for (input, message, offset, len) in table {
        let error = Template::parse(input).err();
        assert_eq!(
            error.map(|e| (e.message, e.offset, e.len)),
            Some(((*message).to_owned(), *offset, *len)),
            "{input}"
        );
    }
}

#[test]
fn templates_render() {
    let contexts = contexts();
    let scope = Scope {
        contexts: &contexts,
        status: Status::default(),
        files: None,
    };
    let table = [
        ("plain", "plain"),
        ("", ""),
        ("v${{ matrix.node }}-${{ env.FOO }}", "v18-bar"),
        ("[${{ env.MISSING }}]", "[]"),
        ("${{ matrix.list }}", "[1,2,3]"),
        ("${{ matrix.half }} ${{ 1.0 }} ${{ true }}", "0.5 1 true"),
        ("${{ format('{0}!', env.FOO) }}", "bar!"),
        ("${{ '}}' }}", "}}"),
    ];
    for (input, expected) in table {
        let template = Template::parse(input).unwrap_or_else(|e| panic!("{input}: {e:?}"));
        assert_eq!(template.render(&scope).as_deref(), Ok(expected), "{input}");
    }
    let template = Template::parse("x ${{ nope.a }}").unwrap_or_default();
    assert_eq!(
        template.render(&scope),
        Err(EvalError {
            offset: 6,
            len: 4,
            message: "unknown context `nope`".to_owned()
        })
    );
    assert_eq!(
        Template::literal("a ${{ b }}").render(&scope).as_deref(),
        Ok("a ${{ b }}")
    );
}
