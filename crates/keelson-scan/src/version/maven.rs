//! Maven ordering (`ComparableVersion`): tokens split at `.`, `-` and digit/letter transitions,
//! trailing "null" tokens trimmed, known qualifiers ordered
//! `alpha < beta < milestone < rc < snapshot < "" < sp`, unknown qualifiers after them.

use std::cmp::Ordering;

use super::{cmp_numbers, is_number, normalize_number};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// The first token of the version.
    Start,
    Dot,
    Hyphen,
}

#[derive(Debug, Clone)]
struct Token {
    prefix: Prefix,
    value: String,
    /// Padding added to the shorter version during comparison.
    is_null: bool,
}

const KEYWORDS: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

fn keyword_rank(value: &str) -> usize {
    KEYWORDS
        .iter()
        .position(|k| *k == value)
        .unwrap_or(KEYWORDS.len())
}

impl Token {
    fn is_trimmable(&self) -> bool {
        matches!(self.value.as_str(), "0" | "" | "final" | "ga")
    }

    /// `.qualifier < -qualifier < -number < .number`
    fn kind_rank(&self) -> u8 {
        match (is_number(&self.value), self.prefix) {
            (true, Prefix::Hyphen) => 2,
            (true, _) => 3,
            (false, Prefix::Hyphen) => 1,
            (false, _) => 0,
        }
    }

    fn equal(&self, other: &Token) -> bool {
        self.prefix == other.prefix
            && if is_number(&self.value) && is_number(&other.value) {
                cmp_numbers(&self.value, &other.value).is_eq()
            } else {
                self.value == other.value
            }
    }

    fn less_than(&self, other: &Token) -> bool {
        if self.prefix != other.prefix {
            return self.kind_rank() < other.kind_rank();
        }
        let (v_num, w_num) = (is_number(&self.value), is_number(&other.value));
        if v_num && w_num {
            return cmp_numbers(&self.value, &other.value).is_lt();
        }
        if v_num && !self.is_null {
            return false;
        }
        if w_num && !other.is_null {
            return true;
        }
        let (l, r) = (keyword_rank(&self.value), keyword_rank(&other.value));
        if l == KEYWORDS.len() && r == KEYWORDS.len() {
            return self.value < other.value;
        }
        l < r
    }

    /// The padding token matching `other`'s prefix.
    fn null_for(other: &Token) -> Token {
        let value = match other.prefix {
            Prefix::Hyphen => "",
            // `sp` is the only qualifier after the empty one, so it is padded with "".
            _ if other.value == "sp" => "",
            _ => "0",
        };
        Token {
            prefix: if other.prefix == Prefix::Hyphen {
                Prefix::Hyphen
            } else {
                Prefix::Dot
            },
            value: value.to_owned(),
            is_null: true,
        }
    }
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut bodies = Vec::new();
    let mut prefix = Prefix::Start;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '.' || c == '-' {
            bodies.push((prefix, &s[start..i]));
            prefix = if c == '.' {
                Prefix::Dot
            } else {
                Prefix::Hyphen
            };
            start = i + 1;
        }
    }
    bodies.push((prefix, &s[start..]));
    let mut tokens = Vec::new();
    for (prefix, body) in bodies {
        // Split at digit/non-digit transitions; later pieces count as hyphen-separated.
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut previous: Option<bool> = None;
        for (i, c) in body.char_indices() {
            let digit = c.is_ascii_digit();
            if previous.is_some_and(|p| p != digit) {
                pieces.push(&body[start..i]);
                start = i;
            }
            previous = Some(digit);
        }
        pieces.push(&body[start..]);
        let count = pieces.len();
        for (j, piece) in pieces.into_iter().enumerate() {
            let token_prefix = if j > 0 { Prefix::Hyphen } else { prefix };
            let mut value = piece.to_lowercase();
            if value.is_empty() {
                value = "0".to_owned();
            }
            let followed_by_number = j + 1 < count;
            value = match value.as_str() {
                "cr" => "rc".to_owned(),
                "ga" | "final" | "release" => String::new(),
                "a" if followed_by_number => "alpha".to_owned(),
                "b" if followed_by_number => "beta".to_owned(),
                "m" if followed_by_number => "milestone".to_owned(),
                v if is_number(v) => normalize_number(v).to_owned(),
                _ => value,
            };
            tokens.push(Token {
                prefix: token_prefix,
                value,
                is_null: false,
            });
        }
    }
    trim(&mut tokens);
    tokens
}

/// Removes trailing null tokens, at the end and before each remaining hyphen, from end to start.
fn trim(tokens: &mut Vec<Token>) {
    let mut i = tokens.len() as isize - 1;
    while i > 0 {
        let idx = i as usize;
        if tokens[idx].is_trimmable() {
            tokens.remove(idx);
            i -= 1;
            continue;
        }
        while i >= 0 && tokens[i as usize].prefix != Prefix::Hyphen {
            i -= 1;
        }
        i -= 1;
    }
}

pub(super) fn compare(a: &str, b: &str) -> Ordering {
    let a = tokenize(a);
    let b = tokenize(b);
    if a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.equal(y)) {
        return Ordering::Equal;
    }
    let less = |v: &[Token], w: &[Token]| -> bool {
        for i in 0..v.len().max(w.len()) {
            let left = v.get(i).cloned().unwrap_or_else(|| Token::null_for(&w[i]));
            let right = w.get(i).cloned().unwrap_or_else(|| Token::null_for(&v[i]));
            if left.equal(&right) {
                continue;
            }
            return left.less_than(&right);
        }
        false
    };
    if less(&a, &b) {
        Ordering::Less
    } else if less(&b, &a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}
