//! Streaming secret masker: every byte of step output passes through here before it reaches the
//! terminal, log files or JSON events.
//!
//! # Masking rules
//!
//! A secret registered with [`Masker::add_secret`] (or by a step printing a `::add-mask::VALUE`
//! line) is accepted only if at least one of its lines has [`MIN_SECRET_LEN`] (4) or more
//! *significant* bytes, i.e. after trimming surrounding ASCII whitespace (a single-line value is
//! one line); otherwise it is refused with [`MaskError::TooShort`], whose `len` is the longest
//! significant line length. Values longer than [`MAX_SECRET_LEN`] bytes are refused with
//! [`MaskError::TooLong`].
//!
//! For an accepted secret, these *variants* are masked, each only if it is at least 4 bytes:
//! - the raw value;
//! - the value with surrounding ASCII whitespace trimmed (so `"token\n"` read from a file also
//!   masks `token`);
//! - for a value containing `\n`: every line, split on `\n` and trimmed of surrounding ASCII
//!   whitespace (including `\r`). Empty and whitespace-only lines are ignored; lines with fewer
//!   than 4 significant bytes are not masked on their own, but the whole value (and its encoded
//!   forms) still is.
//!
//! Each variant is masked in these *forms*:
//! - its raw bytes;
//! - its JSON-string escaping exactly as `serde_json` produces it, without the quotes;
//! - its URL-encoding: every byte except the unreserved `A-Z a-z 0-9 - . _ ~` percent-encoded,
//!   in the four combinations of upper/lower-case hex and space as `%20`/`+`;
//! - its standard and URL-safe base64 encodings as they appear inside a larger base64 blob: the
//!   variant is encoded at byte offsets 0, 1 and 2 and only the characters whose bits all come
//!   from the variant are kept (the characters that depend on neighbouring bytes are dropped); a
//!   form is used only if that stable part has at least 4 characters.
//!
//! Matching is done on bytes with an Aho-Corasick automaton (leftmost-longest) over all patterns
//! of all secrets. Every occurrence of every pattern is masked, including overlapping ones: the
//! longest match at every start position is found and overlapping matches are merged into one
//! region; each region becomes a single [`MASK`] (adjacent, non-overlapping matches give one
//! [`MASK`] each). Masking is repeated on its own output until no pattern occurs any more (so a
//! secret such as `a***` cannot be re-formed by the mask itself); after 16 rounds the whole text is
//! replaced by [`MASK`]. Invalid UTF-8 is replaced lossily only after masking (and the result is
//! masked once more if the replacement changed anything).
//!
//! [`LineStream`] masks per line, see its documentation for line splitting, `::add-mask::`
//! commands and over-long lines.
//!
//! Known limits: a secret added while part of a line has already been emitted (as a piece of an
//! over-long line) does not apply retroactively to that part; base64 wrapped across lines, other
//! encodings (hex, `\uXXXX`-escaped non-ASCII, partially percent-encoded) and secrets split across
//! lines of output are not recognised; the repeat-until-clean pass runs per emitted piece, so an
//! occurrence re-formed by a mask exactly at a piece boundary of an over-long line is not caught
//! (it reveals no secret bytes).

mod forms;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Input, MatchKind};

pub use stream::LineStream;

/// What a masked region is replaced with.
pub const MASK: &str = "***";

/// The minimum number of significant bytes of a secret (or of one line of a multi-line secret).
pub const MIN_SECRET_LEN: usize = 4;

/// The maximum length in bytes of one secret value.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// Above this many pattern bytes in total, a contiguous NFA is used instead of a DFA to keep
/// memory bounded.
const DFA_MAX_PATTERN_BYTES: usize = 4096;

/// Masking rounds before giving up and masking the whole text.
const MAX_MASK_ROUNDS: usize = 16;

/// Why a secret was not registered. The messages never contain the secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MaskError {
    /// No line of the value has at least [`MIN_SECRET_LEN`] significant bytes; `len` is the
    /// longest significant (whitespace-trimmed) line length.
    #[error(
        "secret value too short to mask: {len} significant bytes, at least {MIN_SECRET_LEN} required"
    )]
    TooShort {
        /// The longest significant line length, in bytes.
        len: usize,
    },
    /// The value is longer than [`MAX_SECRET_LEN`].
    #[error("secret value too long to mask: {len} bytes, at most {max} allowed")]
    TooLong {
        /// The value's length, in bytes.
        len: usize,
        /// The maximum length, in bytes.
        max: usize,
    },
    /// The matcher could not be built (only for pathologically large pattern sets).
    #[error("could not build the secret matcher: {0}")]
    Build(#[from] aho_corasick::BuildError),
}

/// Shared, cloneable set of secrets (`Arc` inside). Secrets can be added at run time and apply to
/// all streams from then on.
#[derive(Clone, Default)]
pub struct Masker {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: RwLock<State>,
    /// Equal to `state.snapshot.generation`; lets streams detect changes without locking.
    generation: AtomicU64,
}

#[derive(Default)]
struct State {
    patterns: Vec<Vec<u8>>,
    snapshot: Arc<Snapshot>,
}

/// An immutable matcher over all patterns registered at one point in time.
#[derive(Default)]
pub(crate) struct Snapshot {
    ac: Option<AhoCorasick>,
    max_len: usize,
    generation: u64,
}

impl Masker {
    /// An empty masker.
    pub fn new() -> Masker {
        Masker::default()
    }

    /// Registers a secret; see the [module documentation](self) for exactly what is masked.
    ///
    /// Returns [`MaskError::TooShort`] if no line of the value has at least 4 significant
    /// (whitespace-trimmed) bytes, [`MaskError::TooLong`] above [`MAX_SECRET_LEN`]. Registering
    /// the same value twice is a no-op.
    pub fn add_secret(&self, value: &str) -> Result<(), MaskError> {
        self.add_secret_bytes(value.as_bytes())
    }

    /// [`Masker::add_secret`] for raw bytes (used for `::add-mask::` values, which need not be
    /// UTF-8).
    pub(crate) fn add_secret_bytes(&self, value: &[u8]) -> Result<(), MaskError> {
        let new = forms::patterns_for(value)?;
        let mut state = self
            .shared
            .state
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let mut patterns = state.patterns.clone();
        patterns.extend(new);
        patterns.sort_unstable();
        patterns.dedup();
        if patterns.len() == state.patterns.len() {
            return Ok(());
        }
        let total: usize = patterns.iter().map(Vec::len).sum();
        let kind = (total > DFA_MAX_PATTERN_BYTES).then_some(AhoCorasickKind::ContiguousNFA);
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(kind)
            .build(&patterns)?;
        let generation = state.snapshot.generation + 1;
        state.snapshot = Arc::new(Snapshot {
            max_len: ac.max_pattern_len(),
            ac: Some(ac),
            generation,
        });
        state.patterns = patterns;
        self.shared.generation.store(generation, Ordering::Release);
        Ok(())
    }

    /// Masks a complete string (error messages, expression results, ...). Unlike [`LineStream`],
    /// patterns containing newlines (multi-line secrets) match here too.
    pub fn mask_str(&self, text: &str) -> String {
        let snap = self.snapshot();
        let intervals = find_intervals(&snap, text.as_bytes(), 0);
        if intervals.is_empty() {
            return text.to_owned();
        }
        finalize(&snap, render(text.as_bytes(), &intervals))
    }

    /// A per-output-stream line splitter and masker.
    pub fn line_stream(&self) -> LineStream {
        LineStream::new(self.clone())
    }

    /// Whether no secret has been registered.
    pub fn is_empty(&self) -> bool {
        self.snapshot().ac.is_none()
    }

    /// The current matcher.
    fn snapshot(&self) -> Arc<Snapshot> {
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(&state.snapshot)
    }

    /// The generation of the current matcher, without locking.
    fn generation(&self) -> u64 {
        self.shared.generation.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secrets themselves.
        let patterns = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .patterns
            .len();
        f.debug_struct("Masker")
            .field("patterns", &patterns)
            .finish_non_exhaustive()
    }
}

/// The regions of `hay` to mask: every occurrence of every pattern, overlapping occurrences
/// merged, sorted, plus `[0, forced)` (the rest of a match cut by an earlier piece).
fn find_intervals(snap: &Snapshot, hay: &[u8], forced: usize) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let forced = forced.min(hay.len());
    if forced > 0 {
        out.push((0, forced));
    }
    let Some(ac) = &snap.ac else {
        return out;
    };
    let mut pos = 0;
    while pos < hay.len() {
        // Leftmost-longest from `pos`: the longest match at the first position >= pos that has
        // one. Restarting one past its start finds every start position, hence every
        // occurrence of every pattern is inside a reported match.
        let Some(m) = ac.find(Input::new(hay).span(pos..hay.len())) else {
            break;
        };
        match out.last_mut() {
            Some(last) if m.start() < last.1 => last.1 = last.1.max(m.end()),
            _ => out.push((m.start(), m.end())),
        }
        pos = m.start() + 1;
    }
    out
}

/// `bytes` with every interval (sorted, disjoint, possibly extending past the end) replaced by
/// [`MASK`].
fn render(bytes: &[u8], intervals: &[(usize, usize)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    for &(start, end) in intervals {
        if start >= bytes.len() {
            break;
        }
        out.extend_from_slice(&bytes[at..start]);
        out.extend_from_slice(MASK.as_bytes());
        at = end.min(bytes.len());
    }
    out.extend_from_slice(&bytes[at..]);
    out
}

/// Masks `bytes` (already masked once) until no pattern occurs, then converts to a string,
/// replacing invalid UTF-8 lossily, and masks again if that changed anything.
fn finalize(snap: &Snapshot, bytes: Vec<u8>) -> String {
    match String::from_utf8(remask(snap, bytes)) {
        Ok(text) => text,
        Err(err) => {
            let lossy = String::from_utf8_lossy(err.as_bytes()).into_owned();
            let masked = remask(snap, lossy.into_bytes());
            String::from_utf8(masked)
                .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
        }
    }
}

/// Repeats masking until no pattern occurs (at most [`MAX_MASK_ROUNDS`] rounds, then the whole
/// text is masked).
fn remask(snap: &Snapshot, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..MAX_MASK_ROUNDS {
        let intervals = find_intervals(snap, &bytes, 0);
        if intervals.is_empty() {
            return bytes;
        }
        // Every pattern is at least MIN_SECRET_LEN > MASK.len() bytes, so each round shrinks the
        // text and this terminates.
        bytes = render(&bytes, &intervals);
    }
    if find_intervals(snap, &bytes, 0).is_empty() {
        bytes
    } else {
        MASK.as_bytes().to_vec()
    }
}

/// Converts bytes in which no pattern occurs. If they are not UTF-8, the lossy replacement is
/// masked again (a secret could contain U+FFFD).
fn convert_clean(snap: &Snapshot, bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) if snap.ac.is_none() => String::from_utf8_lossy(bytes).into_owned(),
        Err(_) => finalize(snap, bytes.to_vec()),
    }
}
