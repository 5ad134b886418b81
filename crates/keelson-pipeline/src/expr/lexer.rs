//! Splits expression text into tokens, one at a time, with character offsets.

use super::ExprError;

/// What a token is.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
    Comma,
    Star,
    Bang,
    Lt,
    Le,
    Gt,
    Ge,
    EqEq,
    Ne,
    AndAnd,
    OrOr,
    Eof,
}

/// A token and the characters it covers.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Token {
    pub tok: Tok,
    pub offset: usize,
    pub len: usize,
}

impl Token {
    pub fn end(&self) -> usize {
        self.offset + self.len
    }
}

/// Builds an error without hint.
pub(super) fn error(offset: usize, len: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        offset,
        len,
        message: message.into(),
        hint: None,
    }
}

fn error_hint(offset: usize, len: usize, message: impl Into<String>, hint: &str) -> ExprError {
    ExprError {
        hint: Some(hint.to_owned()),
        ..error(offset, len, message)
    }
}

/// Longest source excerpt quoted in a message.
const EXCERPT: usize = 32;

/// `chars[offset..offset + len]` as a string, shortened with `…` when long.
pub(super) fn excerpt(chars: &[char], offset: usize, len: usize) -> String {
    let start = offset.min(chars.len());
    let end = offset.saturating_add(len).min(chars.len());
    let slice = &chars[start..end];
    if slice.len() > EXCERPT {
        let mut text: String = slice[..EXCERPT - 1].iter().collect();
        text.push('…');
        text
    } else {
        slice.iter().collect()
    }
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Reads tokens from the characters of an expression.
pub(super) struct Lexer<'c> {
    chars: &'c [char],
    pos: usize,
}

impl<'c> Lexer<'c> {
    pub fn new(chars: &'c [char]) -> Lexer<'c> {
        Lexer { chars, pos: 0 }
    }

    fn peek_at(&self, pos: usize) -> Option<char> {
        self.chars.get(pos).copied()
    }

    fn token(&mut self, tok: Tok, start: usize, len: usize) -> Result<Token, ExprError> {
        self.pos = start + len;
        Ok(Token {
            tok,
            offset: start,
            len,
        })
    }

    /// The next token; [`Tok::Eof`] (with length 0) at the end, forever.
    pub fn next_token(&mut self) -> Result<Token, ExprError> {
        while self.peek_at(self.pos).is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.peek_at(start) else {
            return self.token(Tok::Eof, start, 0);
        };
        let next = self.peek_at(start + 1);
        match c {
            '(' => self.token(Tok::LParen, start, 1),
            ')' => self.token(Tok::RParen, start, 1),
            '[' => self.token(Tok::LBracket, start, 1),
            ']' => self.token(Tok::RBracket, start, 1),
            '.' => self.token(Tok::Dot, start, 1),
            ',' => self.token(Tok::Comma, start, 1),
            '*' => self.token(Tok::Star, start, 1),
            '!' if next == Some('=') => self.token(Tok::Ne, start, 2),
            '!' => self.token(Tok::Bang, start, 1),
            '<' if next == Some('=') => self.token(Tok::Le, start, 2),
            '<' => self.token(Tok::Lt, start, 1),
            '>' if next == Some('=') => self.token(Tok::Ge, start, 2),
            '>' => self.token(Tok::Gt, start, 1),
            '=' if next == Some('=') => self.token(Tok::EqEq, start, 2),
            '=' => Err(error_hint(
                start,
                1,
                "unexpected `=`",
                "use `==` to compare",
            )),
            '&' if next == Some('&') => self.token(Tok::AndAnd, start, 2),
            '&' => Err(error_hint(start, 1, "unexpected `&`", "use `&&` for “and”")),
            '|' if next == Some('|') => self.token(Tok::OrOr, start, 2),
            '|' => Err(error_hint(start, 1, "unexpected `|`", "use `||` for “or”")),
            '\'' => self.single_quoted(start),
            '"' => self.double_quoted(start),
            '0'..='9' => self.number(start),
            '-' if next.is_some_and(|d| d.is_ascii_digit()) => self.number(start),
            c if is_ident_start(c) => {
                let mut end = start + 1;
                while self.peek_at(end).is_some_and(is_ident_continue) {
                    end += 1;
                }
                let name = self.chars[start..end].iter().collect();
                self.token(Tok::Ident(name), start, end - start)
            }
            c => Err(error(
                start,
                1,
                format!("unexpected character `{}`", c.escape_debug()),
            )),
        }
    }

    fn unterminated(&self, start: usize) -> ExprError {
        error_hint(
            start,
            self.chars.len() - start,
            "unterminated string",
            if self.chars[start] == '\'' {
                "close it with `'` (write `''` for a quote inside)"
            } else {
                "close it with `\"`"
            },
        )
    }

    /// `'…'` with `''` for a quote.
    fn single_quoted(&mut self, start: usize) -> Result<Token, ExprError> {
        let mut text = String::new();
        let mut pos = start + 1;
        loop {
            match self.peek_at(pos) {
                None => return Err(self.unterminated(start)),
                Some('\'') if self.peek_at(pos + 1) == Some('\'') => {
                    text.push('\'');
                    pos += 2;
                }
                Some('\'') => break,
                Some(c) => {
                    text.push(c);
                    pos += 1;
                }
            }
        }
        self.token(Tok::Str(text), start, pos + 1 - start)
    }

    /// `"…"` with backslash escapes.
    fn double_quoted(&mut self, start: usize) -> Result<Token, ExprError> {
        let mut text = String::new();
        let mut pos = start + 1;
        loop {
            match self.peek_at(pos) {
                None => return Err(self.unterminated(start)),
                Some('"') => break,
                Some('\\') => {
                    let escaped = match self.peek_at(pos + 1) {
                        None => return Err(self.unterminated(start)),
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('0') => '\0',
                        Some(c @ ('"' | '\\' | '\'' | '/')) => c,
                        Some(c) => {
                            return Err(error_hint(
                                pos,
                                2,
                                format!("unknown escape `\\{}` in string", c.escape_debug()),
                                "known escapes: \\\" \\\\ \\n \\t \\r \\0 \\' \\/",
                            ));
                        }
                    };
                    text.push(escaped);
                    pos += 2;
                }
                Some(c) => {
                    text.push(c);
                    pos += 1;
                }
            }
        }
        self.token(Tok::Str(text), start, pos + 1 - start)
    }

    fn digits(&self, mut pos: usize, radix: u32) -> usize {
        while self.peek_at(pos).is_some_and(|c| c.is_digit(radix)) {
            pos += 1;
        }
        pos
    }

    /// Decimal (`-1`, `1.5`, `2e-3`) or hexadecimal (`0xff`) numbers.
    fn number(&mut self, start: usize) -> Result<Token, ExprError> {
        let negative = self.chars[start] == '-';
        let digits_start = if negative { start + 1 } else { start };
        let is_hex = self.peek_at(digits_start) == Some('0')
            && matches!(self.peek_at(digits_start + 1), Some('x' | 'X'));
        let mut end;
        let value = if is_hex {
            end = self.digits(digits_start + 2, 16);
            let value = self.chars[digits_start + 2..end]
                .iter()
                .filter_map(|c| c.to_digit(16))
                .fold(0.0_f64, |acc, d| acc * 16.0 + f64::from(d));
            (end > digits_start + 2).then_some(value)
        } else {
            end = self.digits(digits_start, 10);
            if self.peek_at(end) == Some('.')
                && self.peek_at(end + 1).is_some_and(|c| c.is_ascii_digit())
            {
                end = self.digits(end + 1, 10);
            }
            if matches!(self.peek_at(end), Some('e' | 'E')) {
                let sign = usize::from(matches!(self.peek_at(end + 1), Some('+' | '-')));
                if self
                    .peek_at(end + 1 + sign)
                    .is_some_and(|c| c.is_ascii_digit())
                {
                    end = self.digits(end + 1 + sign, 10);
                }
            }
            let text: String = self.chars[digits_start..end].iter().collect();
            text.parse::<f64>().ok()
        };
        let trailing = self
            .peek_at(end)
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if trailing {
            while self
                .peek_at(end)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                end += 1;
            }
        }
        let len = end - start;
        match value {
            Some(value) if !trailing => {
                if value.is_finite() {
                    self.token(Tok::Num(if negative { -value } else { value }), start, len)
                } else {
                    Err(error(
                        start,
                        len,
                        format!(
                            "number `{}` is out of range",
                            excerpt(self.chars, start, len)
                        ),
                    ))
                }
            }
            _ => Err(error(
                start,
                len,
                format!("invalid number `{}`", excerpt(self.chars, start, len)),
            )),
        }
    }
}
