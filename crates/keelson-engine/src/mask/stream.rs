//! [`LineStream`]: splits one output stream into lines and masks each complete line, handling
//! `::add-mask::` commands and over-long lines.

use std::fmt;
use std::sync::Arc;

use super::{
    MAX_SECRET_LEN, MaskError, Masker, Snapshot, convert_clean, finalize, find_intervals, render,
};

/// A line without a newline longer than this is emitted in pieces of at most this many bytes.
pub const LINE_LIMIT: usize = 64 * 1024;

/// The command prefix (matched ASCII case-insensitively after optional leading whitespace).
const ADD_MASK: &[u8] = b"::add-mask::";

/// What an accepted `::add-mask::` line is replaced with.
const ADD_MASK_ACCEPTED: &str = "::add-mask::***";

/// A per-output-stream line splitter and masker.
///
/// - Lines end at `\n`; one `\r` directly before the `\n` is removed too. A lone `\r` is content.
///   The final unterminated line returned by [`LineStream::finish`] is returned as is.
/// - Matching is on bytes of the complete line, so chunk boundaries (inside secrets, UTF-8
///   sequences or `\r\n`) do not matter. Invalid UTF-8 is replaced lossily after masking.
/// - A line whose content, after optional leading ASCII whitespace, starts with `::add-mask::`
///   (ASCII case-insensitive) is a command: the rest of the line, trimmed of surrounding ASCII
///   whitespace, is registered with the shared [`Masker`] (it applies to the following lines of
///   every stream) and the line is replaced by `::add-mask::***`. If the value is refused, the
///   line is replaced by `::add-mask:: refused: value shorter than 4 bytes` (or `... value longer
///   than 65536 bytes`). The value is never output.
/// - A line that grows beyond [`LINE_LIMIT`] bytes without a newline is emitted in pieces of at
///   most [`LINE_LIMIT`] bytes. At least (longest pattern − 1) bytes are kept back, so every
///   occurrence that is not complete yet lies entirely in the kept-back part, and a piece never
///   ends inside a match unless that match starts the piece and is itself too long (then the
///   part after the cut is masked too, as `***` starting the next piece). Pieces end on UTF-8
///   character boundaries where possible. An `::add-mask::` line that grows beyond the limit is
///   refused and discarded up to its newline.
pub struct LineStream {
    masker: Masker,
    snap: Arc<Snapshot>,
    /// The current line's bytes not emitted yet (never contains `\n`).
    buf: Vec<u8>,
    /// The first `carry` bytes of `buf` belong to a match cut by the previous piece.
    carry: usize,
    /// Part of the current line has already been emitted as a piece.
    continued: bool,
    /// Everything emitted of the current line so far was whitespace, so it may still be a
    /// command.
    cmd_possible: bool,
    /// Dropping an over-long `::add-mask::` line up to its newline.
    discarding: bool,
}

impl LineStream {
    pub(super) fn new(masker: Masker) -> LineStream {
        let snap = masker.snapshot();
        LineStream {
            masker,
            snap,
            buf: Vec::new(),
            carry: 0,
            continued: false,
            cmd_possible: true,
            discarding: false,
        }
    }

    /// Feeds raw bytes (arbitrary chunking, may split UTF-8 sequences, secrets, and lines
    /// anywhere). Returns the complete lines now available, masked, without their line
    /// terminator (`\n` or `\r\n`), plus pieces of over-long lines.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            let newline = rest.iter().position(|&b| b == b'\n');
            if self.discarding {
                match newline {
                    Some(i) => {
                        rest = &rest[i + 1..];
                        self.reset_line();
                        continue;
                    }
                    None => break,
                }
            }
            let Some(i) = newline else {
                self.buf.extend_from_slice(rest);
                self.emit_pieces(&mut out);
                break;
            };
            let (line, tail) = (&rest[..i], &rest[i + 1..]);
            if self.buf.is_empty() {
                self.end_line(line, true, &mut out);
            } else {
                let mut buf = std::mem::take(&mut self.buf);
                buf.extend_from_slice(line);
                self.end_line(&buf, true, &mut out);
                buf.clear();
                self.buf = buf;
            }
            rest = tail;
        }
        out
    }

    /// End of stream: the final partial line, masked, if any. The stream is reset and may be
    /// reused.
    pub fn finish(&mut self) -> Option<String> {
        if self.discarding {
            self.buf.clear();
            self.reset_line();
            return None;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut out = Vec::new();
        if buf.is_empty() {
            self.reset_line();
        } else {
            self.end_line(&buf, false, &mut out);
        }
        self.buf = buf;
        self.buf.clear();
        out.pop()
    }

    /// The number of bytes buffered of the current line.
    #[cfg(test)]
    pub(super) fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn reset_line(&mut self) {
        self.carry = 0;
        self.continued = false;
        self.cmd_possible = true;
        self.discarding = false;
    }

    /// Picks up secrets added since the last line (by any stream or caller).
    fn refresh(&mut self) {
        if self.masker.generation() != self.snap.generation {
            self.snap = self.masker.snapshot();
        }
    }

    /// Completes the current line, whose unemitted bytes are `line`.
    fn end_line(&mut self, line: &[u8], terminated: bool, out: &mut Vec<String>) {
        let line = match line {
            [head @ .., b'\r'] if terminated => head,
            _ => line,
        };
        let carry = self.carry;
        let continued = self.continued;
        let cmd_possible = self.cmd_possible;
        self.reset_line();
        if cmd_possible && let Some(value) = command_value(line) {
            out.push(self.add_mask(value));
            return;
        }
        if continued && line.is_empty() {
            return;
        }
        self.refresh();
        let intervals = find_intervals(&self.snap, line, carry);
        out.push(if intervals.is_empty() {
            convert_clean(&self.snap, line)
        } else {
            finalize(&self.snap, render(line, &intervals))
        });
    }

    /// Registers the value of an `::add-mask::` command; returns the replacement line.
    fn add_mask(&mut self, value: &[u8]) -> String {
        match self.masker.add_secret_bytes(value.trim_ascii()) {
            Ok(()) => ADD_MASK_ACCEPTED.to_owned(),
            Err(err) => refusal(&err),
        }
    }

    /// Emits pieces of the current line while it is longer than [`LINE_LIMIT`].
    fn emit_pieces(&mut self, out: &mut Vec<String>) {
        let mut off = 0;
        while self.buf.len() - off > LINE_LIMIT {
            let rest = &self.buf[off..];
            let n = rest.len();
            // Keep at least the last byte: it may be the `\r` of a `\r\n` split across chunks.
            let mut max_cut = LINE_LIMIT.min(n - 1);
            if self.cmd_possible {
                let trimmed = rest.trim_ascii_start();
                if starts_with_ignore_case(trimmed, ADD_MASK) {
                    out.push(refusal(&MaskError::TooLong {
                        len: n,
                        max: MAX_SECRET_LEN,
                    }));
                    self.buf.clear();
                    self.discarding = true;
                    return;
                }
                if !trimmed.is_empty() && starts_with_ignore_case(ADD_MASK, trimmed) {
                    // Could still become a command: emit only the leading whitespace.
                    max_cut = max_cut.min(n - trimmed.len());
                }
            }
            if self.masker.generation() != self.snap.generation {
                self.snap = self.masker.snapshot();
            }
            let snap = Arc::clone(&self.snap);
            // Every occurrence not complete yet starts at or after n - (max_len - 1).
            max_cut = max_cut.min(n.saturating_sub(snap.max_len.saturating_sub(1)));
            if max_cut == 0 {
                break;
            }
            // Occurrences starting before max_cut end before max_cut + max_len.
            let window = &rest[..n.min(max_cut + snap.max_len)];
            let intervals = find_intervals(&snap, window, self.carry);
            let (cut, carry) = choose_cut(rest, &intervals, max_cut);
            if cut == 0 {
                break;
            }
            let head = &rest[..cut];
            let piece = if intervals.is_empty() {
                convert_clean(&snap, head)
            } else {
                finalize(&snap, render(head, &intervals))
            };
            if self.cmd_possible && !head.iter().all(u8::is_ascii_whitespace) {
                self.cmd_possible = false;
            }
            off += cut;
            self.carry = carry;
            self.continued = true;
            out.push(piece);
        }
        self.buf.drain(..off);
    }
}

impl fmt::Debug for LineStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print buffered output: it is not masked yet.
        f.debug_struct("LineStream")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

/// Where to end the next piece, at most `max_cut`, and how many bytes after it are still part of
/// a match (`intervals` are the masked regions of the start of `rest`).
fn choose_cut(rest: &[u8], intervals: &[(usize, usize)], max_cut: usize) -> (usize, usize) {
    let inside = |c: usize| intervals.iter().find(|&&(a, b)| a < c && c < b).copied();
    let mut cut = max_cut;
    if let Some((start, end)) = inside(cut) {
        if start == 0 {
            // One masked region from the start of the piece past the cut: cut inside it and
            // mask its remainder at the start of the next piece.
            return (cut, end - cut);
        }
        cut = start;
    }
    let boundary = char_start(rest, cut);
    if boundary > 0 && boundary < cut && inside(boundary).is_none() {
        cut = boundary;
    }
    (cut, 0)
}

/// The start of the UTF-8 sequence that `cut` is inside of, or `cut` if it is on a boundary.
fn char_start(bytes: &[u8], cut: usize) -> usize {
    let is_continuation = |b: u8| b & 0xC0 == 0x80;
    if cut >= bytes.len() || !is_continuation(bytes[cut]) {
        return cut;
    }
    for back in 1..=3 {
        let Some(i) = cut.checked_sub(back) else {
            break;
        };
        if !is_continuation(bytes[i]) {
            return if bytes[i] >= 0xC0 { i } else { cut };
        }
    }
    cut
}

/// The value of an `::add-mask::VALUE` line.
fn command_value(line: &[u8]) -> Option<&[u8]> {
    let trimmed = line.trim_ascii_start();
    starts_with_ignore_case(trimmed, ADD_MASK).then(|| &trimmed[ADD_MASK.len()..])
}

fn starts_with_ignore_case(hay: &[u8], prefix: &[u8]) -> bool {
    hay.len() >= prefix.len() && hay[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// The line replacing a refused `::add-mask::` command. Never contains the value.
fn refusal(err: &MaskError) -> String {
    match err {
        MaskError::TooShort { .. } => "::add-mask:: refused: value shorter than 4 bytes".to_owned(),
        MaskError::TooLong { max, .. } => {
            format!("::add-mask:: refused: value longer than {max} bytes")
        }
        other => format!("::add-mask:: refused: {other}"),
    }
}
