//! ANSI SGR colour sequences in log text → HTML `<span class>`es.
//!
//! Invariants:
//! - The output is safe to insert into HTML: every character of the text is escaped, and only
//!   `<span class="…">` / `</span>` tags with class names from a fixed set are produced.
//! - Spans never nest: each run of text with a non-default style gets one span.
//! - Only SGR sequences (`ESC [ … m`) affect the output: 8/16 foreground and background colours,
//!   bold and the resets. Every other escape sequence (cursor moves, erases, OSC titles and links,
//!   256/true-colour arguments) and control characters other than tab are dropped.
//! - The class names match those `static/run.js` produces for live lines and `static/ui.css`
//!   colours: `ansi-bold`, `ansi-<colour>`, `ansi-bright-<colour>`, `ansi-bg-<colour>`,
//!   `ansi-bg-bright-<colour>`.

use std::fmt::Write as _;

const COLOURS: [&str; 8] = [
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
];

/// The current text style: colours as 0–15 (8–15 are the bright ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    foreground: Option<u8>,
    background: Option<u8>,
}

impl Style {
    fn classes(self) -> String {
        let mut classes = Vec::new();
        if self.bold {
            classes.push("ansi-bold".to_string());
        }
        if let Some(colour) = self.foreground {
            classes.push(colour_class("ansi-", colour));
        }
        if let Some(colour) = self.background {
            classes.push(colour_class("ansi-bg-", colour));
        }
        classes.join(" ")
    }

    /// Applies the parameters of one SGR sequence.
    fn apply(&mut self, parameters: &str) {
        let codes: Vec<Option<u16>> = parameters
            .split([';', ':'])
            .map(|code| {
                if code.is_empty() {
                    Some(0)
                } else {
                    code.parse().ok()
                }
            })
            .collect();
        let mut index = 0;
        while index < codes.len() {
            let Some(code) = codes[index] else {
                index += 1;
                continue;
            };
            match code {
                0 => *self = Style::default(),
                1 => self.bold = true,
                22 => self.bold = false,
                30..=37 => self.foreground = Some((code - 30) as u8),
                39 => self.foreground = None,
                40..=47 => self.background = Some((code - 40) as u8),
                49 => self.background = None,
                90..=97 => self.foreground = Some((code - 90) as u8 + 8),
                100..=107 => self.background = Some((code - 100) as u8 + 8),
                // Extended colours: skip their arguments (`5;n` or `2;r;g;b`), keep the style.
                38 | 48 => {
                    index += match codes.get(index + 1) {
                        Some(Some(5)) => 2,
                        Some(Some(2)) => 4,
                        _ => 0,
                    };
                }
                _ => {}
            }
            index += 1;
        }
    }
}

fn colour_class(prefix: &str, colour: u8) -> String {
    let name = COLOURS[usize::from(colour % 8)];
    if colour >= 8 {
        format!("{prefix}bright-{name}")
    } else {
        format!("{prefix}{name}")
    }
}

/// Escapes `text` for HTML element content and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    push_escaped(&mut out, text);
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
}

/// One piece of a line: text (unescaped) in a style.
struct Piece {
    style: Style,
    text: String,
}

/// Splits `line` into styled pieces, dropping escape sequences and control characters.
fn pieces(line: &str) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    let mut style = Style::default();
    let mut characters = line.chars().peekable();
    let push = |style: Style, character: char, out: &mut Vec<Piece>| match out.last_mut() {
        Some(last) if last.style == style => last.text.push(character),
        _ => out.push(Piece {
            style,
            text: character.to_string(),
        }),
    };
    while let Some(character) = characters.next() {
        match character {
            '\u{1b}' => match characters.next() {
                // CSI: parameter and intermediate bytes, then one final byte in `@`..=`~`.
                Some('[') => {
                    let mut parameters = String::new();
                    let mut terminator = None;
                    for next in characters.by_ref() {
                        if ('@'..='~').contains(&next) {
                            terminator = Some(next);
                            break;
                        }
                        parameters.push(next);
                    }
                    if terminator == Some('m')
                        && parameters
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ';' || c == ':')
                    {
                        style.apply(&parameters);
                    }
                }
                // OSC (titles, hyperlinks): up to BEL or ST (`ESC \`).
                Some(']') => {
                    while let Some(next) = characters.next() {
                        if next == '\u{7}' {
                            break;
                        }
                        if next == '\u{1b}' && characters.peek() == Some(&'\\') {
                            characters.next();
                            break;
                        }
                    }
                }
                // nF escapes (`ESC ( B`): intermediate bytes, then one final byte.
                Some(' '..='/') => {
                    for next in characters.by_ref() {
                        if !(' '..='/').contains(&next) {
                            break;
                        }
                    }
                }
                // Any other escape: the one character after ESC goes with it.
                _ => {}
            },
            '\t' => push(style, '\t', &mut out),
            other if other.is_control() => {}
            other => push(style, other, &mut out),
        }
    }
    out
}

/// Converts one log line with ANSI escapes to escaped HTML with `<span class>`es.
pub fn to_html(line: &str) -> String {
    let mut out = String::with_capacity(line.len() + 16);
    for piece in pieces(line) {
        if piece.style == Style::default() {
            push_escaped(&mut out, &piece.text);
        } else {
            let _ = write!(out, "<span class=\"{}\">", piece.style.classes());
            push_escaped(&mut out, &piece.text);
            out.push_str("</span>");
        }
    }
    out
}

/// The text of a line without any escape sequences or control characters (not escaped).
pub fn strip(line: &str) -> String {
    pieces(line).into_iter().map(|piece| piece.text).collect()
}

#[cfg(test)]
mod tests {
    use super::{escape_html, strip, to_html};

    #[test]
    fn sgr_sequences_become_spans() {
        let cases: &[(&str, &str)] = &[
            ("plain", "plain"),
            ("", ""),
            (
                "\x1b[32mline 1\x1b[0m",
                "<span class=\"ansi-green\">line 1</span>",
            ),
            (
                "\x1b[31merr\x1b[m ok",
                "<span class=\"ansi-red\">err</span> ok",
            ),
            (
                "\x1b[1;33mwarn\x1b[0m",
                "<span class=\"ansi-bold ansi-yellow\">warn</span>",
            ),
            (
                "\x1b[1mB\x1b[34mBB\x1b[22mb",
                "<span class=\"ansi-bold\">B</span><span class=\"ansi-bold ansi-blue\">BB</span><span class=\"ansi-blue\">b</span>",
            ),
            ("\x1b[92mhi", "<span class=\"ansi-bright-green\">hi</span>"),
            (
                "\x1b[41;97m X \x1b[49m.",
                "<span class=\"ansi-bright-white ansi-bg-red\"> X </span><span class=\"ansi-bright-white\">.</span>",
            ),
            (
                "\x1b[104mb\x1b[0m",
                "<span class=\"ansi-bg-bright-blue\">b</span>",
            ),
            (
                "\x1b[35ma\x1b[39mb",
                "<span class=\"ansi-magenta\">a</span>b",
            ),
            // 256-colour and true-colour arguments are skipped, not read as codes.
            ("\x1b[38;5;1mx", "x"),
            ("\x1b[38;2;1;32;1mx", "x"),
            ("\x1b[38;5;196;1mx", "<span class=\"ansi-bold\">x</span>"),
            // Unknown codes are ignored; an empty parameter list resets.
            ("\x1b[5;36mx\x1b[my", "<span class=\"ansi-cyan\">x</span>y"),
            // A reset in the middle of the parameters.
            ("\x1b[31;0;32mx", "<span class=\"ansi-green\">x</span>"),
            // Codes out of range do not panic.
            ("\x1b[99999999999mx", "x"),
        ];
        for (input, expected) in cases {
            assert_eq!(to_html(input), *expected, "input {input:?}");
        }
    }

    #[test]
    fn other_escapes_and_controls_are_dropped() {
        let cases: &[(&str, &str)] = &[
            ("\x1b[2Kcleared", "cleared"),
            ("a\x1b[10;20Hb", "ab"),
            ("\x1b[?25lhidden cursor\x1b[?25h", "hidden cursor"),
            ("\x1b]0;title\x07text", "text"),
            ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
            ("\x1b(Bx", "x"),
            ("progress\r50%\r100%", "progress50%100%"),
            ("tab\there", "tab\there"),
            ("bell\x07", "bell"),
            // Truncated sequences at the end of a line.
            ("x\x1b", "x"),
            ("x\x1b[", "x"),
            ("x\x1b[31", "x"),
            ("x\x1b]unterminated", "x"),
        ];
        for (input, expected) in cases {
            assert_eq!(to_html(input), *expected, "input {input:?}");
            assert_eq!(strip(input), *expected, "strip {input:?}");
        }
    }

    #[test]
    fn html_is_escaped_inside_and_outside_spans() {
        let cases: &[(&str, &str)] = &[
            (
                "<script>alert(1)</script>",
                "&lt;script&gt;alert(1)&lt;/script&gt;",
            ),
            ("a & b \"c\" 'd'", "a &amp; b &quot;c&quot; &#39;d&#39;"),
            (
                "\x1b[31m<b>&amp;</b>",
                "<span class=\"ansi-red\">&lt;b&gt;&amp;amp;&lt;/b&gt;</span>",
            ),
            // A CSI ends at its first final byte (`i` here); the rest is text, escaped.
            ("\x1b[<img src=x>mx", "mg src=x&gt;mx"),
        ];
        for (input, expected) in cases {
            assert_eq!(to_html(input), *expected, "input {input:?}");
        }
        assert_eq!(escape_html("<&>\"'"), "&lt;&amp;&gt;&quot;&#39;");
    }
}
