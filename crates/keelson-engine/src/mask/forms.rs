//! Derives the byte patterns that mask one secret: its variants (raw, trimmed, per line) and the
//! encoded forms of each variant (base64 at all three alignments, URL-encoding, JSON escaping).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use super::{MAX_SECRET_LEN, MIN_SECRET_LEN, MaskError};

/// Returns every pattern (each at least [`MIN_SECRET_LEN`] bytes long, deduplicated, sorted) that
/// must be masked for `value`, or the reason the value is refused.
///
/// Variants of the value: the raw value; the value with surrounding ASCII whitespace trimmed; and,
/// when the value contains `\n`, every line (split on `\n`, surrounding ASCII whitespace including
/// `\r` trimmed). Variants shorter than [`MIN_SECRET_LEN`] bytes are dropped. Each remaining
/// variant contributes its raw bytes, its JSON-string escaping, its four URL-encodings and the
/// stable parts of its standard and URL-safe base64 encodings at byte offsets 0, 1 and 2.
pub(super) fn patterns_for(value: &[u8]) -> Result<Vec<Vec<u8>>, MaskError> {
    if value.len() > MAX_SECRET_LEN {
        return Err(MaskError::TooLong {
            len: value.len(),
            max: MAX_SECRET_LEN,
        });
    }
    // The significant length: the longest line after trimming. For a single-line value this is
    // simply the trimmed value.
    let longest = value
        .split(|&b| b == b'\n')
        .map(|line| line.trim_ascii().len())
        .max()
        .unwrap_or(0);
    if longest < MIN_SECRET_LEN {
        return Err(MaskError::TooShort { len: longest });
    }

    let mut variants: Vec<&[u8]> = vec![value, value.trim_ascii()];
    if value.contains(&b'\n') {
        variants.extend(value.split(|&b| b == b'\n').map(<[u8]>::trim_ascii));
    }
    variants.retain(|v| v.len() >= MIN_SECRET_LEN);
    variants.sort_unstable();
    variants.dedup();

    let mut patterns = Vec::new();
    for variant in variants {
        patterns.push(variant.to_vec());
        if let Some(json) = json_escaped(variant) {
            patterns.push(json);
        }
        for upper in [true, false] {
            for plus in [true, false] {
                patterns.push(url_encoded(variant, upper, plus));
            }
        }
        for offset in 0..3 {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                patterns.extend(base64_stable(variant, offset, engine));
            }
        }
    }
    patterns.retain(|p| p.len() >= MIN_SECRET_LEN);
    patterns.sort_unstable();
    patterns.dedup();
    Ok(patterns)
}

/// The value as `serde_json` escapes it inside a JSON string, without the quotes. `None` for
/// bytes that are not UTF-8 (they cannot appear in JSON as such).
pub(super) fn json_escaped(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?;
    let quoted = serde_json::to_string(text).ok()?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    Some(inner.as_bytes().to_vec())
}

/// Percent-encodes every byte except the RFC 3986 unreserved characters (`A-Z a-z 0-9 - . _ ~`).
/// `upper` selects the hex case; `plus` encodes a space as `+` instead of `%20`.
pub(super) fn url_encoded(value: &[u8], upper: bool, plus: bool) -> Vec<u8> {
    let digits: &[u8; 16] = if upper {
        b"0123456789ABCDEF"
    } else {
        b"0123456789abcdef"
    };
    let mut out = Vec::with_capacity(value.len() * 3);
    for &b in value {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b);
        } else if b == b' ' && plus {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[
                b'%',
                digits[usize::from(b >> 4)],
                digits[usize::from(b & 0xf)],
            ]);
        }
    }
    out
}

/// The part of the base64 encoding of `value` that is the same wherever `value` sits inside a
/// larger base64-encoded blob at a byte offset ≡ `offset` (mod 3): only the characters whose six
/// bits all come from `value`. `None` if that part is shorter than [`MIN_SECRET_LEN`].
pub(super) fn base64_stable(
    value: &[u8],
    offset: usize,
    engine: &base64::engine::GeneralPurpose,
) -> Option<Vec<u8>> {
    let mut input = vec![0u8; offset];
    input.extend_from_slice(value);
    let encoded = engine.encode(&input);
    // Character i covers input bits [6i, 6i + 6); the value occupies bits
    // [8 * offset, 8 * (offset + len)).
    let start = (8 * offset).div_ceil(6);
    let end = 8 * (offset + value.len()) / 6;
    if end < start + MIN_SECRET_LEN {
        return None;
    }
    Some(encoded.as_bytes()[start..end].to_vec())
}
