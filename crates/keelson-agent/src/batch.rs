//! The log buffer of one attempt: numbers lines, decides when a batch is due and what it holds,
//! and forgets lines only once the server acknowledged them.
//!
//! Invariants:
//! - Sequence numbers start at 1 and grow by one per line; a line keeps its number forever, so a
//!   resent batch has the same `first_seq` and the server can drop what it already stored.
//! - A line leaves the buffer only through [`LogBuffer::ack`]; nothing else forgets a line.
//! - A batch always starts at the oldest unacknowledged line, holds at least one line and at most
//!   `max_batch_bytes` (a single line larger than that travels alone).
//! - A batch is due when the oldest unacknowledged line has waited `flush_interval`, when the
//!   unacknowledged lines reach `max_batch_bytes`, or when the buffer is closing (final flush).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use keelson_api::AgentLogLine;

/// Rough JSON overhead of one line on the wire (field names, quotes, stream), counted in the
/// batch size so many short lines do not make an oversized request.
const LINE_OVERHEAD: usize = 48;

struct Buffered {
    seq: i64,
    line: AgentLogLine,
    size: usize,
    pushed_at: Instant,
}

/// A batch to send: `lines` are numbered `first_seq`, `first_seq + 1`, ….
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Sequence number of the first line.
    pub first_seq: i64,
    /// The lines, in order.
    pub lines: Vec<AgentLogLine>,
}

/// Unacknowledged log lines of one attempt.
pub struct LogBuffer {
    lines: VecDeque<Buffered>,
    bytes: usize,
    next_seq: i64,
    acked_seq: i64,
    flush_interval: Duration,
    max_batch_bytes: usize,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("buffered", &self.lines.len())
            .field("bytes", &self.bytes)
            .field("next_seq", &self.next_seq)
            .field("acked_seq", &self.acked_seq)
            .finish()
    }
}

impl LogBuffer {
    /// An empty buffer; the first line pushed gets sequence number 1.
    pub fn new(flush_interval: Duration, max_batch_bytes: usize) -> LogBuffer {
        LogBuffer {
            lines: VecDeque::new(),
            bytes: 0,
            next_seq: 1,
            acked_seq: 0,
            flush_interval,
            max_batch_bytes: max_batch_bytes.max(1),
        }
    }

    /// Adds a line at the end; returns its sequence number.
    pub fn push(&mut self, line: AgentLogLine, now: Instant) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = line_size(&line);
        self.bytes += size;
        self.lines.push_back(Buffered {
            seq,
            line,
            size,
            pushed_at: now,
        });
        seq
    }

    /// Whether no line waits for an acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The number of the last line pushed (0 before any).
    pub fn last_seq(&self) -> i64 {
        self.next_seq - 1
    }

    /// The highest acknowledged sequence number (0 before any).
    pub fn acked_seq(&self) -> i64 {
        self.acked_seq
    }

    /// When the oldest unacknowledged line becomes due by age, if any line waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.lines
            .front()
            .map(|oldest| oldest.pushed_at + self.flush_interval)
    }

    /// Whether a batch should be sent now. `closing`: no more lines will come.
    pub fn is_due(&self, now: Instant, closing: bool) -> bool {
        let Some(deadline) = self.deadline() else {
            return false;
        };
        closing || self.bytes >= self.max_batch_bytes || deadline <= now
    }

    /// The batch to send: the oldest unacknowledged lines up to `max_batch_bytes`.
    pub fn batch(&self) -> Option<Batch> {
        let first = self.lines.front()?;
        let mut size = 0;
        let mut lines = Vec::new();
        for buffered in &self.lines {
            if !lines.is_empty() && size + buffered.size > self.max_batch_bytes {
                break;
            }
            size += buffered.size;
            lines.push(buffered.line.clone());
        }
        Some(Batch {
            first_seq: first.seq,
            lines,
        })
    }

    /// Forgets every line up to and including `acked_seq`. Returns whether anything new was
    /// acknowledged (an acknowledgement never moves backwards).
    pub fn ack(&mut self, acked_seq: i64) -> bool {
        let acked_seq = acked_seq.min(self.last_seq());
        if acked_seq <= self.acked_seq {
            return false;
        }
        self.acked_seq = acked_seq;
        while let Some(front) = self.lines.front() {
            if front.seq > acked_seq {
                break;
            }
            self.bytes -= front.size;
            self.lines.pop_front();
        }
        true
    }
}

fn line_size(line: &AgentLogLine) -> usize {
    line.text.len() + line.job.as_ref().map_or(0, String::len) + LINE_OVERHEAD
}

#[cfg(test)]
mod tests {
    use keelson_api::LogStream;

    use super::*;

    fn line(text: &str) -> AgentLogLine {
        AgentLogLine {
            job: Some("build".to_owned()),
            stream: LogStream::Stdout,
            text: text.to_owned(),
        }
    }

    fn texts(batch: &Batch) -> Vec<&str> {
        batch.lines.iter().map(|l| l.text.as_str()).collect()
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn sequence_numbers_start_at_one() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let now = Instant::now();
        assert_eq!(buffer.last_seq(), 0);
        assert_eq!(buffer.push(line("a"), now), 1);
        assert_eq!(buffer.push(line("b"), now), 2);
        assert_eq!(buffer.last_seq(), 2);
    }

    #[test]
    fn due_one_interval_after_the_first_unsent_line() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let start = Instant::now();
        assert!(!buffer.is_due(start, false));
        buffer.push(line("a"), start);
        buffer.push(line("b"), start + Duration::from_millis(900));
        assert!(!buffer.is_due(start + Duration::from_millis(999), false));
        assert!(buffer.is_due(start + SECOND, false));
        assert_eq!(buffer.deadline(), Some(start + SECOND));
    }

    #[test]
    fn due_at_once_when_the_bytes_reach_the_limit() {
        let mut buffer = LogBuffer::new(SECOND, 3 * (LINE_OVERHEAD + 6));
        let now = Instant::now();
        buffer.push(line("1"), now);
        buffer.push(line("2"), now);
        assert!(!buffer.is_due(now, false));
        buffer.push(line("3"), now);
        assert!(buffer.is_due(now, false));
    }

    #[test]
    fn closing_flushes_whatever_is_left() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let now = Instant::now();
        assert!(!buffer.is_due(now, true));
        buffer.push(line("tail"), now);
        assert!(buffer.is_due(now, true));
    }

    #[test]
    fn batches_stop_at_the_byte_limit_but_hold_at_least_one_line() {
        let per_line = LINE_OVERHEAD + "build".len() + 1;
        let mut buffer = LogBuffer::new(SECOND, 2 * per_line);
        let now = Instant::now();
        for text in ["a", "b", "c"] {
            buffer.push(line(text), now);
        }
        let batch = buffer.batch().expect("lines wait");
        assert_eq!(batch.first_seq, 1);
        assert_eq!(texts(&batch), ["a", "b"]);

        let mut tiny = LogBuffer::new(SECOND, 1);
        tiny.push(line("a line longer than the limit"), now);
        tiny.push(line("next"), now);
        let batch = tiny.batch().expect("lines wait");
        assert_eq!(texts(&batch), ["a line longer than the limit"]);
    }

    #[test]
    fn an_unacknowledged_batch_is_resent_with_the_same_first_seq() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let now = Instant::now();
        buffer.push(line("a"), now);
        buffer.push(line("b"), now);
        let first = buffer.batch().expect("lines wait");
        // The send failed: nothing acknowledged, a new line arrived meanwhile.
        buffer.push(line("c"), now);
        let again = buffer.batch().expect("lines wait");
        assert_eq!(again.first_seq, first.first_seq);
        assert_eq!(texts(&again), ["a", "b", "c"]);
    }

    #[test]
    fn acks_drop_exactly_the_acknowledged_lines() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let now = Instant::now();
        for text in ["a", "b", "c", "d"] {
            buffer.push(line(text), now);
        }
        assert!(buffer.ack(2));
        let batch = buffer.batch().expect("lines wait");
        assert_eq!(batch.first_seq, 3);
        assert_eq!(texts(&batch), ["c", "d"]);
        // Stale and repeated acks change nothing.
        assert!(!buffer.ack(1));
        assert!(!buffer.ack(2));
        assert_eq!(buffer.acked_seq(), 2);
        // An ack beyond what was sent is clamped.
        assert!(buffer.ack(99));
        assert!(buffer.is_empty());
        assert_eq!(buffer.acked_seq(), 4);
        assert_eq!(buffer.push(line("e"), now), 5);
    }

    #[test]
    fn the_deadline_follows_the_oldest_unacknowledged_line() {
        let mut buffer = LogBuffer::new(SECOND, 1 << 20);
        let start = Instant::now();
        buffer.push(line("a"), start);
        buffer.push(line("b"), start + Duration::from_millis(500));
        buffer.ack(1);
        assert_eq!(buffer.deadline(), Some(start + Duration::from_millis(1500)));
        buffer.ack(2);
        assert_eq!(buffer.deadline(), None);
    }
}
