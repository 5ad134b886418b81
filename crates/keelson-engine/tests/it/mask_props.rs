//! Property tests for the streaming secret masker: secrets in every encoded form, fed in random
//! chunkings, never reach the output; text without secrets passes unchanged.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use keelson_engine::mask::Masker;
use proptest::prelude::*;

/// Characters of secret lines: ASCII, quotes, backslash, `%`, `+`, `/`, `=`, multi-byte UTF-8.
const SIGNIFICANT: &str = "[a-zA-Z0-9\"'%+/=\\\\é日🦀*<>&-]";
/// The same plus spaces and tabs.
const WITH_SPACE: &str = "[a-zA-Z0-9\"'%+/=\\\\é日🦀*<>& \t-]";

/// A line with at least 4 significant bytes (starts and ends with a non-space).
fn long_line() -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("{SIGNIFICANT}{WITH_SPACE}{{2,10}}{SIGNIFICANT}"))
        .expect("valid regex")
}

/// A secret that `add_secret` must accept: one or more lines (joined by `\n` or `\r\n`), at least
/// one of them long, some possibly short or blank, optionally surrounded by whitespace.
fn secret() -> impl Strategy<Value = String> {
    let other = prop_oneof![long_line(), "[a-z ]{0,3}".prop_map(String::from)];
    (
        "[ \t\n]{0,2}",
        long_line(),
        prop::collection::vec((prop_oneof![Just("\n"), Just("\r\n")], other), 0..3),
        "[ \t\n]{0,2}",
    )
        .prop_map(|(lead, first, rest, trail)| {
            let mut s = lead;
            s.push_str(&first);
            for (sep, line) in rest {
                s.push_str(sep);
                s.push_str(&line);
            }
            s.push_str(&trail);
            s
        })
}

/// Random text around the secrets, including line breaks.
fn filler() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 .,:;!?é\t\r\n]{0,16}"
}

fn json_form(s: &str) -> String {
    let quoted = serde_json::to_string(s).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

fn url_form(s: &str, upper: bool, plus: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(b));
            }
            b' ' if plus => out.push('+'),
            _ if upper => out.push_str(&format!("%{b:02X}")),
            _ => out.push_str(&format!("%{b:02x}")),
        }
    }
    out
}

/// The secret's forms as they are embedded in the text, and what must not be in the output
/// (for base64: only the characters determined by the secret's bytes alone).
fn embeddings(secret: &str, prefix: &[u8], suffix: &[u8]) -> Vec<(String, String)> {
    let mut out = vec![(secret.to_owned(), secret.to_owned())];
    let json = json_form(secret);
    out.push((json.clone(), json));
    for upper in [true, false] {
        for plus in [true, false] {
            let url = url_form(secret, upper, plus);
            out.push((url.clone(), url));
        }
    }
    let mut blob = prefix.to_vec();
    blob.extend_from_slice(secret.as_bytes());
    blob.extend_from_slice(suffix);
    let start = (8 * prefix.len()).div_ceil(6);
    let end = 8 * (prefix.len() + secret.len()) / 6;
    for encoded in [STANDARD.encode(&blob), URL_SAFE.encode(&blob)] {
        if end >= start + 4 {
            let stable = encoded[start..end].to_owned();
            out.push((encoded, stable));
        }
    }
    out
}

/// The significant (trimmed) lines of a secret that are masked on their own.
fn masked_lines(secret: &str) -> Vec<&str> {
    secret
        .split('\n')
        .map(str::trim_ascii)
        .filter(|l| l.len() >= 4)
        .collect()
}

/// Splits `text` at the (sorted, deduplicated) `cuts`.
fn chunked<'a>(text: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(text.len())).collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts {
        out.push(&text[at..cut]);
        at = cut;
    }
    out.push(&text[at..]);
    out
}

fn run(masker: &Masker, chunks: &[&[u8]]) -> Vec<String> {
    let mut stream = masker.line_stream();
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(stream.push(chunk));
    }
    out.extend(stream.finish());
    out
}

/// Asserts that no output line contains a masked form (and the joined output not the raw,
/// possibly multi-line secret).
fn assert_no_leak(out: &[String], secret: &str, forbidden: &[String]) -> Result<(), TestCaseError> {
    let joined = out.join("\n");
    prop_assert!(!joined.contains(secret), "raw secret {secret:?} in {out:?}");
    for line in out {
        for form in forbidden {
            prop_assert!(!line.contains(form.as_str()), "{form:?} in line {line:?}");
        }
        for part in masked_lines(secret) {
            prop_assert!(!line.contains(part), "line {part:?} in line {line:?}");
        }
    }
    Ok(())
}

/// Reference line splitter for text without secrets.
fn plain_lines(text: &[u8]) -> Vec<String> {
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let last = lines.pop().unwrap_or_default();
    let mut out: Vec<String> = lines
        .into_iter()
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect();
    if !last.is_empty() {
        out.push(String::from_utf8_lossy(last).into_owned());
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn secret_in_every_form_never_leaks(
        secret in secret(),
        fillers in prop::collection::vec(filler(), 12),
        prefix in prop::collection::vec(any::<u8>(), 0..5),
        suffix in prop::collection::vec(any::<u8>(), 0..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let masker = Masker::new();
        prop_assert!(masker.add_secret(&secret).is_ok(), "refused {secret:?}");
        let forms = embeddings(&secret, &prefix, &suffix);
        let mut text = String::new();
        for (i, (embedded, _)) in forms.iter().enumerate() {
            text.push_str(&fillers[i % fillers.len()]);
            text.push_str(embedded);
        }
        text.push_str(&fillers[fillers.len() - 1]);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        let out = run(&masker, &chunked(text.as_bytes(), &cuts));
        let forbidden: Vec<String> = forms
            .into_iter()
            .map(|(_, f)| f)
            .filter(|f| !f.contains('\n'))
            .collect();
        assert_no_leak(&out, &secret, &forbidden)?;
        // mask_str on the whole text as well.
        let masked = masker.mask_str(&text);
        prop_assert!(!masked.contains(&secret));
        for form in &forbidden {
            prop_assert!(!masked.contains(form.as_str()));
        }
    }

    #[test]
    fn byte_by_byte_equals_single_chunk(
        secret in secret(),
        before in filler(),
        after in filler(),
    ) {
        let masker = Masker::new();
        masker.add_secret(&secret).unwrap();
        let text = format!("{before}{secret}{after}\n{}", json_form(&secret));
        let whole = run(&masker, &[text.as_bytes()]);
        let bytes: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
        prop_assert_eq!(run(&masker, &bytes), whole.clone());
        assert_no_leak(&whole, &secret, &[json_form(&secret)])?;
    }

    #[test]
    fn overlapping_secrets_masked_as_one_region(
        x in "[a-zA-Z0-9%+/=é日🦀-]{2,5}",
        y in "[a-zA-Z0-9%+/=é日🦀-]{1,3}",
        z in "[a-zA-Z0-9%+/=é日🦀-]{2,5}",
        before in "[ .,;]{0,5}",
        after in "[ .,;]{0,5}",
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let (first, second) = (format!("{x}{y}"), format!("{y}{z}"));
        prop_assume!(first.len() >= 4 && second.len() >= 4);
        let masker = Masker::new();
        masker.add_secret(&first).unwrap();
        masker.add_secret(&second).unwrap();
        let text = format!("{before}{x}{y}{z}{after}\n");
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        let out = run(&masker, &chunked(text.as_bytes(), &cuts));
        prop_assert_eq!(out, vec![format!("{before}***{after}")]);
    }

    #[test]
    fn add_mask_command_never_shows_value(
        value in long_line(),
        before in filler(),
        cuts in prop::collection::vec(any::<usize>(), 0..6),
    ) {
        let masker = Masker::new();
        let text = format!(
            "{before}\n  ::add-mask::{value}\r\nuse {value} and {} and {}\n",
            json_form(&value),
            url_form(&value, true, false),
        );
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        let out = run(&masker, &chunked(text.as_bytes(), &cuts));
        prop_assert!(out.iter().any(|l| l == "::add-mask::***"), "{out:?}");
        assert_no_leak(&out, &value, &[json_form(&value), url_form(&value, true, false)])?;
    }

    #[test]
    fn text_without_secrets_passes_unchanged(
        text in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(b'\n'), Just(b'\r'), Just(0xC3), Just(0xA9)],
            0..200,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let lower = String::from_utf8_lossy(&text).to_ascii_lowercase();
        prop_assume!(!lower.contains("::add-mask::"));
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        let out = run(&Masker::new(), &chunked(&text, &cuts));
        prop_assert_eq!(out, plain_lines(&text));
    }

    #[test]
    fn text_disjoint_from_secret_passes_unchanged(
        secret in "[XYZ]{4,12}",
        text in "[ .,;:!?()@#$^&|é日\t\r\n]{0,200}",
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        // The secret's forms contain X, Y or Z or consist of base64 characters; the text has
        // neither.
        let masker = Masker::new();
        masker.add_secret(&secret).unwrap();
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (text.len() + 1)).collect();
        let out = run(&masker, &chunked(text.as_bytes(), &cuts));
        prop_assert_eq!(out, plain_lines(text.as_bytes()));
        prop_assert_eq!(masker.mask_str(&text), text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn long_lines_never_split_a_secret(
        secret in long_line(),
        offset in 60usize..110,
        chunk in prop_oneof![1usize..16, 16usize..4096, 60_000usize..70_000],
        form in 0usize..8,
    ) {
        let masker = Masker::new();
        masker.add_secret(&secret).unwrap();
        let forms = embeddings(&secret, b"", b"");
        let (embedded, forbidden) = forms[form % forms.len()].clone();
        // The first copy starts within 40 bytes of the first piece boundary (64 KiB).
        let mut text = ".".repeat(64 * 1024 - 100 + offset);
        text.push_str(&embedded);
        text.push_str(&".".repeat(300));
        text.push_str(&embedded);
        // Longer than the limit plus one chunk, so pieces are emitted before the newline.
        text.push_str(&".".repeat(70_000));
        text.push('\n');
        let chunks: Vec<&[u8]> = text.as_bytes().chunks(chunk).collect();
        let out = run(&masker, &chunks);
        prop_assert!(out.len() >= 2);
        let joined = out.concat();
        prop_assert!(!joined.contains(&secret));
        prop_assert!(!joined.contains(&forbidden));
        prop_assert_eq!(joined, masker.mask_str(text.trim_end()));
    }
}
