//! Unit tests for the masker: rule table, chunking, commands, long lines, concurrency.

use super::forms::patterns_for;
use super::stream::LINE_LIMIT;
use super::*;

/// Feeds `chunks` to a fresh stream of `masker` and returns every emitted line/piece.
fn stream_chunks(masker: &Masker, chunks: &[&[u8]]) -> Vec<String> {
    let mut stream = masker.line_stream();
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend(stream.push(chunk));
    }
    out.extend(stream.finish());
    out
}

fn masker_with(secrets: &[&str]) -> Masker {
    let masker = Masker::new();
    for secret in secrets {
        masker.add_secret(secret).expect("secret accepted");
    }
    masker
}

/// (secrets, input, expected): checked with `mask_str` and, line by line, with a stream.
const TABLE: &[(&[&str], &str, &str)] = &[
    // No secrets: unchanged.
    (&[], "nothing to see", "nothing to see"),
    // Raw value, several times, at the edges.
    (&["hunter22"], "pw=hunter22!", "pw=***!"),
    (&["hunter22"], "hunter22hunter22", "******"),
    (&["hunter22"], "hunter22 x hunter22", "*** x ***"),
    (&["hunter22"], "hunter2", "hunter2"),
    // Overlapping occurrences of different secrets are merged into one region.
    (&["abcd", "cdef"], "xabcdefx", "x***x"),
    (&["abcd", "bcde", "defg"], "abcdefg", "***"),
    // Self-overlapping occurrences of one secret.
    (&["abab"], "xababababx", "x***x"),
    // Longest match wins.
    (&["abcd", "abcdef"], "abcdefgh", "***gh"),
    (&["cdef", "abcdefgh"], "abcdefgh", "***"),
    // Multi-byte UTF-8.
    (&["pässwört"], "login pässwört ok", "login *** ok"),
    (&["🦀🦀"], "a🦀🦀🦀b", "a***b"),
    (&["🦀🦀"], "a🦀🦀 🦀🦀b", "a*** ***b"),
    // Surrounding whitespace is trimmed as an extra variant.
    (&["  spaced  "], "x spaced y", "x *** y"),
    (&["  spaced  "], "x  spaced  y", "x***y"),
    // Base64 (standard), offset 0: the trailing "I=" depends on following bytes.
    (&["hunter22"], "token aHVudGVyMjI= end", "token ***I= end"),
    // Base64 at offsets 1 and 2 ("x" + secret, "xy" + secret).
    (&["hunter22"], "eGh1bnRlcjIy", "eG***"),
    (&["hunter22"], "eHlodW50ZXIyMg==", "eHl***g=="),
    // URL-safe base64 ("??>>??" encodes to "Pz8-Pj8_" vs "Pz8+Pj8/").
    (&["??>>??"], "Pz8-Pj8_ Pz8+Pj8/", "*** ***"),
    // URL-encoding: upper and lower hex, %20 and +.
    (&["a/b c:d"], "q=a%2Fb%20c%3Ad&", "q=***&"),
    (&["a/b c:d"], "q=a%2fb+c%3ad&", "q=***&"),
    (&["a/b c:d"], "q=a%2Fb+c%3Ad&", "q=***&"),
    // JSON escaping.
    (&["pa\"ss\\wd"], r#"{"p":"pa\"ss\\wd"}"#, r#"{"p":"***"}"#),
    (&["tab\there"], r#"{"p":"tab\there"}"#, r#"{"p":"***"}"#),
    // Multi-line: long lines masked on their own, short ones not; encoded whole value masked.
    (
        &["line-one\nab\nline-three\n"],
        "line-one ab line-three",
        "*** ab ***",
    ),
    (
        &["line-one\nab\nline-three\n"],
        r#""line-one\nab\nline-three\n""#,
        r#""***""#,
    ),
    (
        &["line-one\nab\nline-three\n"],
        "x=line-one%0Aab%0Aline-three%0A",
        "x=***",
    ),
    // CRLF multi-line secret: lines without the \r.
    (&["first-line\r\nsecond-line"], "first-line", "***"),
    // A secret containing the mask cannot be re-formed by masking.
    (&["a***"], "aa***", "***"),
    (&["***b"], "***bb", "***"),
];

#[test]
fn table_mask_str() {
    for (secrets, input, expected) in TABLE {
        let masker = masker_with(secrets);
        assert_eq!(
            masker.mask_str(input),
            *expected,
            "secrets {secrets:?}, input {input:?}"
        );
    }
}

#[test]
fn table_stream_every_split() {
    for (secrets, input, expected) in TABLE {
        let masker = masker_with(secrets);
        let text = format!("{input}\n");
        let bytes = text.as_bytes();
        for split in 0..=bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(
                stream_chunks(&masker, &[a, b]),
                vec![expected.to_string()],
                "secrets {secrets:?}, input {input:?}, split {split}"
            );
        }
    }
}

#[test]
fn multi_line_secret_masked_whole_in_mask_str() {
    let masker = masker_with(&["line-one\nab\nline-three"]);
    assert_eq!(masker.mask_str("<line-one\nab\nline-three>"), "<***>");
    assert_eq!(masker.mask_str("ab\n"), "ab\n");
}

#[test]
fn refusals() {
    let masker = Masker::new();
    for (value, len) in [
        ("", 0),
        ("abc", 3),
        (" abc ", 3),
        ("    ", 0),
        ("abc\r", 3),
        ("ab\ncd\nef\n", 2),
        ("\n\n \n", 0),
    ] {
        match masker.add_secret(value) {
            Err(MaskError::TooShort { len: got }) => assert_eq!(got, len, "{value:?}"),
            other => panic!("{value:?}: {other:?}"),
        }
    }
    assert!(matches!(
        masker.add_secret(&"x".repeat(MAX_SECRET_LEN + 1)),
        Err(MaskError::TooLong { .. })
    ));
    assert!(masker.is_empty());
    masker.add_secret("abcd").unwrap();
    masker.add_secret("abcd").unwrap();
    masker.add_secret("ab\nabcd\n").unwrap();
    assert!(!masker.is_empty());
}

#[test]
fn error_messages_and_debug_never_show_values() {
    let masker = Masker::new();
    let err = masker.add_secret("xyz").unwrap_err();
    assert!(!err.to_string().contains("xyz"));
    masker.add_secret("topsecret").unwrap();
    let mut stream = masker.line_stream();
    let _ = stream.push(b"partial topsecr");
    assert!(!format!("{masker:?}").contains("topsecret"));
    assert!(!format!("{stream:?}").contains("topsecr"));
}

#[test]
fn patterns_cover_all_forms() {
    let patterns = patterns_for("a b/c".as_bytes()).unwrap();
    for form in [
        "a b/c",
        "a%20b%2Fc",
        "a+b%2Fc",
        "a%20b%2fc",
        "a+b%2fc",
        "YSBiL2",
        "EgYi9j",
        "hIGIvY",
    ] {
        assert!(
            patterns.contains(&form.as_bytes().to_vec()),
            "{form}: {patterns:?}"
        );
    }
    assert!(patterns.iter().all(|p| p.len() >= MIN_SECRET_LEN));
}

/// Every form of several secrets, embedded in a line, split at every point and at every pair of
/// points, and fed byte by byte.
#[test]
fn every_form_every_split() {
    let secrets = [
        "hunter22",
        "p@ss wörd\"\\%",
        "🦀 crab 🦀",
        "mul-ti\nline\r\nsecret",
    ];
    for secret in secrets {
        let masker = masker_with(&[secret]);
        let patterns = patterns_for(secret.as_bytes()).unwrap();
        for pattern in patterns.iter().filter(|p| !p.contains(&b'\n')) {
            let mut line = b"<< ".to_vec();
            line.extend_from_slice(pattern);
            line.extend_from_slice(b" >>");
            let expected = vec!["<< *** >>".to_owned()];
            let mut text = line.clone();
            text.extend_from_slice(b"\r\n");
            for i in 0..=text.len() {
                let (a, b) = text.split_at(i);
                assert_eq!(stream_chunks(&masker, &[a, b]), expected);
                for j in i..=text.len() {
                    let (b, c) = text[i..].split_at(j - i);
                    assert_eq!(stream_chunks(&masker, &[a, b, c]), expected);
                }
            }
            let bytes: Vec<&[u8]> = text.chunks(1).collect();
            assert_eq!(stream_chunks(&masker, &bytes), expected);
            // Without a terminator, finish() masks it.
            assert_eq!(stream_chunks(&masker, &[&line]), expected);
        }
    }
}

#[test]
fn line_terminators() {
    let masker = Masker::new();
    assert_eq!(
        stream_chunks(&masker, &[b"a\r\nb\n\nc\rd\n", b"tail\r"]),
        ["a", "b", "", "c\rd", "tail\r"]
    );
    assert_eq!(stream_chunks(&masker, &[b"a\r", b"\n"]), ["a"]);
    assert_eq!(stream_chunks(&masker, &[b""]), Vec::<String>::new());
    let mut stream = masker.line_stream();
    assert_eq!(stream.push(b"x\ny"), ["x"]);
    assert_eq!(stream.finish().as_deref(), Some("y"));
    assert_eq!(stream.finish(), None);
}

#[test]
fn invalid_utf8_replaced_after_masking() {
    let masker = masker_with(&["hunter22"]);
    // The secret split from an invalid byte, and a UTF-8 sequence split across chunks.
    let out = stream_chunks(&masker, &[b"\xffhunt", b"er22\xc3", b"\xa9\xe2\n"]);
    assert_eq!(out, ["\u{fffd}***é\u{fffd}"]);
    // A secret containing U+FFFD cannot be formed by the lossy replacement.
    let masker = masker_with(&["\u{fffd}abcd"]);
    assert_eq!(stream_chunks(&masker, &[b"x\xffabcd\n"]), ["x***"]);
}

#[test]
fn add_mask_command() {
    let masker = Masker::new();
    let out = stream_chunks(
        &masker,
        &[
            b"before s3cr3t-val\n  ::add-mask::  s3cr3t-",
            b"val  \r\nafter s3cr3t-val\n::ADD-MASK::abc\n::add-mask::\n",
            b"::add-mask::s3cr3t-val\n",
        ],
    );
    assert_eq!(
        out,
        [
            "before s3cr3t-val",
            "::add-mask::***",
            "after ***",
            "::add-mask:: refused: value shorter than 4 bytes",
            "::add-mask:: refused: value shorter than 4 bytes",
            "::add-mask::***",
        ]
    );
    // As the last, unterminated line; the secret then applies to other streams.
    let masker = Masker::new();
    assert_eq!(
        stream_chunks(&masker, &[b"::add-mask::late-secret"]),
        ["::add-mask::***"]
    );
    assert_eq!(masker.mask_str("a late-secret"), "a ***");
    // Not a command: text before it.
    let masker = Masker::new();
    assert_eq!(
        stream_chunks(&masker, &[b"echo ::add-mask::visible\n"]),
        ["echo ::add-mask::visible"]
    );
    assert!(masker.is_empty());
}

#[test]
fn add_mask_applies_to_other_stream_of_same_masker() {
    let masker = Masker::new();
    let mut stdout = masker.line_stream();
    let mut stderr = masker.line_stream();
    assert_eq!(stderr.push(b"one tok-123456\ntwo tok-"), ["one tok-123456"]);
    assert_eq!(
        stdout.push(b"::add-mask::tok-123456\n"),
        ["::add-mask::***"]
    );
    assert_eq!(stderr.push(b"123456\n"), ["two ***"]);
    assert_eq!(stderr.push(b"three tok-123456\n"), ["three ***"]);
}

#[test]
fn shareable_across_tasks() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Masker>();
    send::<LineStream>();
}

#[test]
fn concurrent_streams_on_threads() {
    let masker = Masker::new();
    let (tx, rx) = std::sync::mpsc::channel();
    let adder = {
        let masker = masker.clone();
        std::thread::spawn(move || {
            let mut stream = masker.line_stream();
            let out = stream.push(b"::add-mask::thread-secret\n");
            tx.send(()).unwrap();
            out
        })
    };
    let reader = {
        let masker = masker.clone();
        std::thread::spawn(move || {
            let mut stream = masker.line_stream();
            let mut out = stream.push(b"partial thread-sec");
            rx.recv().unwrap();
            out.extend(stream.push(b"ret\n"));
            out
        })
    };
    assert_eq!(adder.join().unwrap(), ["::add-mask::***"]);
    assert_eq!(reader.join().unwrap(), ["partial ***"]);
    // Many threads adding while others stream: no panics, every later line masked.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let masker = masker.clone();
            std::thread::spawn(move || {
                let secret = format!("secret-number-{i}");
                masker.add_secret(&secret).unwrap();
                let mut stream = masker.line_stream();
                let line = format!("value {secret} end\n");
                stream.push(line.as_bytes())
            })
        })
        .collect();
    for handle in handles {
        assert_eq!(handle.join().unwrap(), ["value *** end"]);
    }
}

/// Feeds `text` in chunks of `size` bytes.
fn stream_sized(masker: &Masker, text: &[u8], size: usize) -> Vec<String> {
    let chunks: Vec<&[u8]> = text.chunks(size).collect();
    stream_chunks(masker, &chunks)
}

#[test]
fn long_line_emitted_in_pieces() {
    let masker = Masker::new();
    let line = "x".repeat(3 * LINE_LIMIT + 17);
    for size in [1000, 4096, LINE_LIMIT + 1, line.len()] {
        let mut stream = masker.line_stream();
        let mut pieces = Vec::new();
        for chunk in line.as_bytes().chunks(size) {
            pieces.extend(stream.push(chunk));
            assert!(stream.buffered() <= LINE_LIMIT + size);
        }
        assert!(pieces.len() >= 3);
        pieces.extend(stream.finish());
        assert!(pieces.iter().all(|p| p.len() <= LINE_LIMIT));
        assert_eq!(pieces.concat(), line);
    }
}

#[test]
fn long_line_never_splits_secret() {
    let secrets = ["hunter22", "p@ss wörd\"\\%", "🦀 crab 🦀"];
    let masker = masker_with(&secrets);
    // The longest and the shortest pattern of each secret.
    let patterns: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| {
            let mut all = patterns_for(s.as_bytes()).unwrap();
            all.sort_by_key(Vec::len);
            [all[0].clone(), all[all.len() - 1].clone()]
        })
        .collect();
    for pattern in &patterns {
        // Place the pattern around the first cut and around later cuts.
        for at in (LINE_LIMIT - pattern.len() - 2..LINE_LIMIT + 2).chain([2 * LINE_LIMIT - 95]) {
            let mut line = vec![b'.'; 2 * LINE_LIMIT + 1000];
            line.splice(at..at, pattern.iter().copied());
            let expected = masker.mask_str(std::str::from_utf8(&line).unwrap());
            for size in [7919, LINE_LIMIT + 1, line.len()] {
                let mut text = line.clone();
                text.push(b'\n');
                let pieces = stream_sized(&masker, &text, size);
                assert!(pieces.len() >= 2);
                assert_eq!(pieces.concat(), expected, "at {at}, size {size}");
            }
        }
    }
}

#[test]
fn long_run_of_overlapping_matches_is_bounded_and_masked() {
    let masker = masker_with(&["aaaa"]);
    let line = "a".repeat(4 * LINE_LIMIT);
    let mut stream = masker.line_stream();
    let mut pieces = Vec::new();
    for chunk in line.as_bytes().chunks(10_000) {
        pieces.extend(stream.push(chunk));
        assert!(stream.buffered() <= LINE_LIMIT + 10_000);
    }
    pieces.extend(stream.finish());
    assert!(pieces.len() >= 3);
    assert!(
        pieces.iter().all(|p| p.chars().all(|c| c == '*')),
        "{pieces:?}"
    );
}

#[test]
fn match_cut_by_a_piece_is_masked_in_the_next_piece() {
    // One masked region from the start of the line past the cut: the piece ends inside it and
    // the rest of the region starts the next piece as `***`.
    let masker = masker_with(&["aaaa"]);
    let line = format!("{}{}", "a".repeat(LINE_LIMIT + 2), "b".repeat(100));
    let pieces = stream_chunks(&masker, &[line.as_bytes(), b"\n"]);
    assert_eq!(
        pieces,
        ["***".to_owned(), format!("***{}", "b".repeat(100))]
    );
}

#[test]
fn long_line_pieces_end_on_char_boundaries() {
    let masker = Masker::new();
    let line = "é".repeat(2 * LINE_LIMIT);
    for offset in 0..3 {
        let text = format!("{}{line}\n", "x".repeat(offset));
        let pieces = stream_sized(&masker, text.as_bytes(), 999);
        assert!(pieces.iter().all(|p| !p.contains('\u{fffd}')));
        assert_eq!(pieces.concat(), text.trim_end());
    }
}

#[test]
fn long_line_crlf_split_across_chunks() {
    let masker = Masker::new();
    let mut text = vec![b'y'; LINE_LIMIT + 10];
    text.push(b'\r');
    let pieces = stream_chunks(&masker, &[&text, b"\nnext\n"]);
    assert_eq!(pieces.len(), 3);
    assert_eq!(pieces[0].len() + pieces[1].len(), LINE_LIMIT + 10);
    assert_eq!(pieces[2], "next");
}

#[test]
fn long_add_mask_line_refused_and_discarded() {
    let masker = Masker::new();
    let value = "v".repeat(2 * LINE_LIMIT);
    let text = format!("  ::add-mask::{value}\nafter\n");
    for size in [100, 5000, text.len()] {
        let out = stream_sized(&masker, text.as_bytes(), size);
        assert_eq!(
            out,
            [
                "::add-mask:: refused: value longer than 65536 bytes",
                "after"
            ],
            "size {size}"
        );
    }
    // Leading whitespace beyond the limit is emitted, the command is still recognized.
    let text = format!(
        "{}::add-mask::ws-secret\nws-secret\n",
        " ".repeat(LINE_LIMIT + 5)
    );
    let out = stream_sized(&masker, text.as_bytes(), 1000);
    assert!(out.iter().all(|l| !l.contains("ws-secret")), "{out:?}");
    assert_eq!(out.last().map(String::as_str), Some("***"));
}

#[test]
fn finish_masks_long_buffer() {
    let masker = masker_with(&["hunter22"]);
    let mut line = "z".repeat(LINE_LIMIT + 3);
    line.push_str("hunter22");
    let mut stream = masker.line_stream();
    let mut pieces = stream.push(line.as_bytes());
    pieces.extend(stream.finish());
    assert_eq!(
        pieces.concat(),
        format!("{}***", "z".repeat(LINE_LIMIT + 3))
    );
}

/// Not a benchmark; guards against pathological slowness in debug builds.
#[test]
fn many_lines_with_and_without_secrets() {
    let text = "the quick brown fox jumps over the lazy dog 0123456789\n".repeat(20_000);
    let empty = Masker::new();
    let lines = stream_sized(&empty, text.as_bytes(), 8192);
    assert_eq!(lines.len(), 20_000);
    let masker = masker_with(&["hunter22", "lazy dog 0123"]);
    let lines = stream_sized(&masker, text.as_bytes(), 8192);
    assert!(
        lines
            .iter()
            .all(|l| l == "the quick brown fox jumps over the ***456789")
    );
}
