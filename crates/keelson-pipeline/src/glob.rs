//! Ref-name globs for the `on.push` filters (`branches`, `branches-ignore`, `tags`).
//!
//! Syntax: `*` matches any run of characters except `/` (within one path segment), `**` any run
//! including `/`, `?` one character other than `/`, `[abc]` / `[a-z]` / `[!abc]` (or `[^abc]`) one
//! character of (or not of) a class, and `\` makes the next character literal. Everything else
//! matches itself.
//!
//! Invariants: a [`Glob`] only exists for a pattern that parsed; matching never fails and runs in
//! time proportional to pattern length × text length (no backtracking blow-up on hostile input).

use std::fmt;

/// One element of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**`: any run of characters.
    DoubleStar,
    /// `?`: one character other than `/`.
    One,
    /// `[…]`: one character (never `/`) inside (or, when negated, outside) the ranges.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A compiled ref-name pattern.
#[derive(Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: String,
    tokens: Vec<Token>,
}

/// Why a pattern does not parse, at a character offset of the pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GlobError {
    /// Character offset into the pattern where the problem starts.
    pub offset: usize,
    /// Length in characters of the offending part (at least 1).
    pub len: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl GlobError {
    fn new(offset: usize, len: usize, message: impl Into<String>, hint: &str) -> GlobError {
        GlobError {
            offset,
            len: len.max(1),
            message: message.into(),
            hint: Some(hint.to_owned()),
        }
    }
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at character {})", self.message, self.offset)
    }
}

impl std::error::Error for GlobError {}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.pattern)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl Glob {
    /// Compiles `pattern`. An empty pattern, an unclosed or empty `[` class, a reversed range,
    /// `/` inside a class and a trailing `\` are errors.
    pub fn parse(pattern: &str) -> Result<Glob, GlobError> {
        let chars: Vec<char> = pattern.chars().collect();
        if chars.is_empty() {
            return Err(GlobError::new(
                0,
                1,
                "empty pattern",
                "write a name such as `main`, or `*` for every name",
            ));
        }
        let mut tokens = Vec::new();
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            match c {
                '*' => {
                    let run = chars[i..].iter().take_while(|&&c| c == '*').count();
                    tokens.push(if run == 1 {
                        Token::Star
                    } else {
                        Token::DoubleStar
                    });
                    i += run;
                }
                '?' => {
                    tokens.push(Token::One);
                    i += 1;
                }
                '\\' => match chars.get(i + 1) {
                    Some(&next) => {
                        tokens.push(Token::Literal(next));
                        i += 2;
                    }
                    None => {
                        return Err(GlobError::new(
                            i,
                            1,
                            "the pattern ends with a lone `\\`",
                            "`\\` makes the next character literal; write `\\\\` for a backslash",
                        ));
                    }
                },
                '[' => {
                    let (token, end) = parse_class(&chars, i)?;
                    tokens.push(token);
                    i = end;
                }
                _ => {
                    tokens.push(Token::Literal(c));
                    i += 1;
                }
            }
        }
        Ok(Glob {
            pattern: pattern.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether the pattern has no wildcard or class (it matches exactly one name).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        // `next[j]`: whether tokens[i + 1..] match text[j..]; `row[j]` the same for tokens[i..].
        // Filled from the end of the pattern and the end of the text.
        let mut next = vec![false; text.len() + 1];
        next[text.len()] = true;
        let mut row = vec![false; text.len() + 1];
        for token in self.tokens.iter().rev() {
            for j in (0..=text.len()).rev() {
                let here = text.get(j).copied();
                row[j] = match token {
                    Token::Literal(c) => here == Some(*c) && next[j + 1],
                    Token::One => here.is_some_and(|c| c != '/') && next[j + 1],
                    Token::Class { negated, ranges } => here.is_some_and(|c| {
                        c != '/'
                            && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                            && next[j + 1]
                    }),
                    Token::Star => next[j] || (here.is_some_and(|c| c != '/') && row[j + 1]),
                    Token::DoubleStar => next[j] || (here.is_some() && row[j + 1]),
                };
            }
            std::mem::swap(&mut next, &mut row);
        }
        next[0]
    }
}

/// Parses the class starting at `chars[open] == '['`; returns the token and the index after `]`.
fn parse_class(chars: &[char], open: usize) -> Result<(Token, usize), GlobError> {
    let unclosed = || {
        GlobError::new(
            open,
            1,
            "unclosed `[` character class",
            "close the class with `]`, or write `\\[` for a literal `[`",
        )
    };
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(unclosed());
        };
        if c == ']' && !first {
            break;
        }
        first = false;
        let (lo, after) = class_char(chars, i).ok_or_else(unclosed)?;
        if lo == '/' {
            return Err(GlobError::new(
                i,
                1,
                "`/` inside a character class never matches",
                "a class matches one character within a path segment; write `/` outside it",
            ));
        }
        i = after;
        // A range `a-z`, unless the `-` is the last character before `]`.
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            let (hi, after) = class_char(chars, i + 1).ok_or_else(unclosed)?;
            if hi < lo || hi == '/' || (lo < '/' && '/' < hi) {
                let message = if hi < lo {
                    format!("the range `{lo}-{hi}` is reversed")
                } else {
                    format!("the range `{lo}-{hi}` includes `/`, which a class never matches")
                };
                return Err(GlobError::new(
                    i - 1,
                    after - (i - 1),
                    message,
                    "write ranges low to high within a segment, e.g. `[a-z]` or `[0-9]`",
                ));
            }
            ranges.push((lo, hi));
            i = after;
        } else {
            ranges.push((lo, lo));
        }
    }
    Ok((Token::Class { negated, ranges }, i + 1))
}

/// The (possibly `\`-escaped) class member at `i` and the index after it.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '\\' => chars.get(i + 1).map(|&c| (c, i + 2)),
        &c => Some((c, i + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_documented() {
        for (pattern, text, expect) in [
            ("main", "main", true),
            ("main", "mainline", false),
            ("main", "mai", false),
            ("*", "main", true),
            ("*", "feature/x", false),
            ("*", "", true),
            ("feature/*", "feature/login", true),
            ("feature/*", "feature/a/b", false),
            ("feature/*", "feature/", true),
            ("feature/**", "feature/a/b", true),
            ("feature/**", "feature", false),
            ("**", "a/b/c", true),
            ("**/fix", "team/a/fix", true),
            ("**/fix", "fix", false),
            ("release-?", "release-1", true),
            ("release-?", "release-12", false),
            ("a?b", "a/b", false),
            ("v[0-9].*", "v1.2", true),
            ("v[0-9].*", "vx.2", false),
            ("v[!0-9]", "vx", true),
            ("v[^0-9]", "v5", false),
            ("[!a]", "/", false),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("\\*", "*", true),
            ("\\*", "x", false),
            ("*-rc*", "v1-rc2", true),
            ("*a*a*a*a*a*a*a*a*b", &"a".repeat(200), false),
            ("dependabot/**", "dependabot/npm/left-pad-1.0", true),
            ("résumé-*", "résumé-2", true),
        ] {
            let glob = Glob::parse(pattern).unwrap();
            assert_eq!(glob.matches(text), expect, "`{pattern}` against `{text}`");
        }
    }

    #[test]
    fn malformed_patterns_are_errors_at_the_offending_character() {
        for (pattern, offset, len, fragment) in [
            ("", 0, 1, "empty pattern"),
            ("release/[0-9", 8, 1, "unclosed `[`"),
            ("[", 0, 1, "unclosed `[`"),
            ("[!", 0, 1, "unclosed `[`"),
            ("v[9-0]", 2, 3, "reversed"),
            ("a[/]", 2, 1, "`/` inside"),
            ("a[+-9]", 2, 3, "includes `/`"),
            ("abc\\", 3, 1, "lone `\\`"),
        ] {
            let error = Glob::parse(pattern).unwrap_err();
            assert_eq!(
                (error.offset, error.len),
                (offset, len),
                "`{pattern}`: {error}"
            );
            assert!(error.message.contains(fragment), "`{pattern}`: {error}");
            assert!(error.hint.is_some());
        }
    }

    #[test]
    fn literal_patterns_are_recognised() {
        assert!(Glob::parse("main").unwrap().is_literal());
        assert!(Glob::parse("a\\*").unwrap().is_literal());
        assert!(!Glob::parse("v*").unwrap().is_literal());
    }
}
