//! Job logs: acknowledged appends keyed by (job, attempt, seq), reads, and archiving a finished
//! attempt's log out of SQL into the blob store.
//!
//! Storage: each accepted batch is one `log_chunks` row holding its new lines, numbered
//! `first_seq..=last_seq`, already in the archive's NDJSON form (one
//! `{"seq", "job", "stream", "text"}` object per line, each ending in `\n`). Archiving an attempt
//! is therefore the concatenation of its chunk bodies in `first_seq` order, streamed into the
//! blob store without re-serialising any line.
//!
//! Invariants: only the job's current attempt, while the job is running, accepts appends, so a
//! late agent never writes into a newer attempt and a finished attempt's lines never change; an
//! attempt's chunks are contiguous and never overlap (chunk `k + 1` starts at `last_seq + 1` of
//! chunk `k`, the first at 1), because an append stores only the lines past the attempt's highest
//! stored seq and refuses a batch that would leave a gap; an attempt's lines live either in
//! `log_chunks` or, once archived, in one NDJSON blob recorded in `log_archives` — the archive
//! row is inserted and the chunks deleted in one transaction, and readers prefer the archive
//! when they see both.

use std::borrow::Cow;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{Backend, Dialect, DialectSql, Store};
use crate::blob::{BlobError, BlobStore};
use crate::error::StoreError;
use crate::model::{JobId, LogLine, LogStream, Status, StoredLogLine};

/// The most chunks one query fetches while reading or archiving (chunks hold up to ~1 MiB).
/// A read starts with one chunk per query and doubles up to this, since a page of a log is
/// usually found in the first chunk it touches.
const CHUNK_PAGE: i64 = 8;

/// NUL characters become U+FFFD, as they always have: a log line never carries a NUL.
fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// One line as written into a chunk body and an archive (field order is the format).
#[derive(Serialize)]
struct NdjsonLineOut<'line> {
    seq: i64,
    job: Option<&'line str>,
    stream: &'static str,
    text: &'line str,
}

/// One line as read back from a chunk body or an archive.
#[derive(Deserialize)]
struct NdjsonLineIn {
    seq: i64,
    job: Option<String>,
    stream: String,
    text: String,
}

/// Serialises `lines`, numbered from `first_seq`, as NDJSON in one pass into one buffer.
fn chunk_body(first_seq: i64, lines: &[LogLine]) -> Result<String, StoreError> {
    let capacity: usize = lines
        .iter()
        .map(|line| line.text.len() + line.job.as_ref().map_or(0, String::len) + 56)
        .sum();
    let mut bytes = Vec::with_capacity(capacity);
    for (seq, line) in (first_seq..).zip(lines) {
        let text = storable_text(&line.text);
        let out = NdjsonLineOut {
            seq,
            job: line.job.as_deref(),
            stream: line.stream.as_str(),
            text: &text,
        };
        serde_json::to_writer(&mut bytes, &out).map_err(|error| {
            StoreError::InvalidInput(format!("log line {seq} cannot be encoded: {error}"))
        })?;
        bytes.push(b'\n');
    }
    String::from_utf8(bytes)
        .map_err(|error| StoreError::InvalidInput(format!("log lines are not UTF-8: {error}")))
}

/// `body` without its first `count` NDJSON lines (empty when it has no more).
fn skip_lines(body: &str, count: usize) -> &str {
    if count == 0 {
        return body;
    }
    match body.match_indices('\n').nth(count - 1) {
        Some((newline, _)) => &body[newline + 1..],
        None => "",
    }
}

/// Where parsed lines come from, for error messages.
enum LogSource<'a> {
    Chunk { job_id: JobId, first_seq: i64 },
    Archive { digest: &'a str },
}

impl LogSource<'_> {
    fn corrupt(&self, attempt: i64, what: String) -> StoreError {
        match self {
            LogSource::Chunk { job_id, first_seq } => StoreError::Corrupt(format!(
                "log chunk of job {job_id} attempt {attempt} from seq {first_seq}: {what}"
            )),
            LogSource::Archive { digest } => {
                StoreError::Corrupt(format!("log archive {digest} (attempt {attempt}): {what}"))
            }
        }
    }
}

/// Parses NDJSON lines whose first line is `first_seq` (every next one numbered one higher; a
/// line saying otherwise is corrupt) and appends those numbered `from_seq` or more to `out`
/// until it holds `limit` lines. Lines before `from_seq` are skipped without being parsed.
fn parse_lines(
    text: &str,
    attempt: i64,
    first_seq: i64,
    from_seq: i64,
    limit: usize,
    source: &LogSource<'_>,
    out: &mut Vec<StoredLogLine>,
) -> Result<(), StoreError> {
    let skipped = usize::try_from(from_seq.saturating_sub(first_seq)).unwrap_or(0);
    for (index, raw) in text.split_terminator('\n').enumerate().skip(skipped) {
        if out.len() >= limit {
            break;
        }
        let expected_seq = i64::try_from(index)
            .ok()
            .and_then(|index| first_seq.checked_add(index))
            .ok_or_else(|| source.corrupt(attempt, "too many lines".to_owned()))?;
        let line: NdjsonLineIn = serde_json::from_str(raw)
            .map_err(|error| source.corrupt(attempt, format!("line {}: {error}", index + 1)))?;
        if line.seq != expected_seq {
            return Err(source.corrupt(
                attempt,
                format!(
                    "line {} has seq {}, expected {expected_seq}",
                    index + 1,
                    line.seq
                ),
            ));
        }
        out.push(StoredLogLine {
            attempt,
            seq: line.seq,
            job: line.job,
            stream: LogStream::parse(&line.stream)?,
            text: line.text,
        });
    }
    Ok(())
}

/// A chunk row: attempt, first seq, last seq, NDJSON body.
type ChunkRow = (i64, i64, i64, String);

/// What [`Store::stage_archive`] wrote.
struct StagedArchive {
    digest: String,
    line_count: i64,
    byte_count: i64,
    chunk_count: i64,
}

fn staging_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    move |source| {
        StoreError::Blob(BlobError::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Store {
    /// Appends a batch of log lines of `attempt`, numbered from `first_seq` (1-based), and
    /// returns the highest sequence number now stored for that attempt (the acknowledgement).
    /// Lines already stored are skipped, so a re-sent batch is harmless; a batch that starts past
    /// the next expected line is [`StoreError::LogGap`]. Unless the job is running at exactly
    /// this attempt the batch is [`StoreError::LeaseLost`]. The new lines are stored as one
    /// chunk.
    pub async fn append_log(
        &self,
        job_id: JobId,
        attempt: i64,
        first_seq: i64,
        lines: &[LogLine],
    ) -> Result<i64, StoreError> {
        if first_seq < 1 {
            return Err(StoreError::InvalidInput(format!(
                "log sequence numbers start at 1, got {first_seq}"
            )));
        }
        let fits = i64::try_from(lines.len())
            .ok()
            .and_then(|count| first_seq.checked_add(count))
            .is_some();
        if !fits {
            return Err(StoreError::InvalidInput(format!(
                "a log batch of {} lines from seq {first_seq} runs past the largest sequence number",
                lines.len()
            )));
        }
        // Chunks are contiguous, so the one starting last ends last.
        let last_sql = "SELECT last_seq FROM log_chunks WHERE job_id = $1 AND attempt = $2
                        ORDER BY first_seq DESC LIMIT 1";
        let insert_sql = "INSERT INTO log_chunks (job_id, attempt, first_seq, last_seq, body)
                          VALUES ($1, $2, $3, $4, $5)";
        // Line `i` of the batch is seq `first_seq + i` whatever is already stored, so the whole
        // batch is serialised before the write lock is taken; the stored prefix of a resend is
        // then cut off at a line boundary.
        let batch_body = chunk_body(first_seq, lines)?;
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let job: Option<(String, i64)> = sqlx::query_as(pool.lock_job_sql())
                .bind(job_id.0)
                .fetch_optional(&mut *transaction)
                .await?;
            let Some((status, current_attempt)) = job else {
                return Err(StoreError::not_found("job", job_id));
            };
            if Status::parse(&status)? != Status::Running || current_attempt != attempt {
                return Err(StoreError::LeaseLost { job_id, attempt });
            }
            let last_stored: Option<i64> = sqlx::query_scalar(last_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(&mut *transaction)
                .await?;
            let expected_seq = last_stored.unwrap_or(0) + 1;
            if first_seq > expected_seq {
                return Err(StoreError::LogGap { job_id, expected_seq, first_seq });
            }
            let already_stored = usize::try_from(expected_seq - first_seq).unwrap_or(usize::MAX);
            let new_lines = lines.get(already_stored..).unwrap_or_default();
            let new_line_count = i64::try_from(new_lines.len()).map_err(|_| {
                StoreError::InvalidInput(format!("log batch of {} lines is too large", lines.len()))
            })?;
            let last_seq = expected_seq + new_line_count - 1;
            if !new_lines.is_empty() {
                let body = skip_lines(&batch_body, already_stored);
                sqlx::query(insert_sql)
                    .bind(job_id.0)
                    .bind(attempt)
                    .bind(expected_seq)
                    .bind(last_seq)
                    .bind(body)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
            Ok(last_seq)
        })
    }

    /// The highest sequence number stored for this attempt of the job (0 when none), whether
    /// its lines are in SQL or archived.
    pub async fn last_log_seq(&self, job_id: JobId, attempt: i64) -> Result<i64, StoreError> {
        let archived_sql = "SELECT line_count FROM log_archives WHERE job_id = $1 AND attempt = $2";
        let live_sql = "SELECT last_seq FROM log_chunks WHERE job_id = $1 AND attempt = $2
                        ORDER BY first_seq DESC LIMIT 1";
        on_backend!(self, pool => {
            // Chunks first, archive second: an archive committed in between is seen by the
            // second query, and archived lines are numbered 1..=line_count.
            let live: Option<i64> = sqlx::query_scalar(live_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(pool)
                .await?;
            let archived: Option<i64> = sqlx::query_scalar(archived_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(pool)
                .await?;
            Ok(archived.or(live).unwrap_or(0))
        })
    }

    /// The attempts of a job that have log lines (stored or archived), in order.
    pub async fn log_attempts(&self, job_id: JobId) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT DISTINCT attempt FROM log_chunks WHERE job_id = $1
                   UNION SELECT attempt FROM log_archives WHERE job_id = $1
                   ORDER BY attempt";
        let attempts: Vec<i64> = on_backend!(self, pool => sqlx::query_scalar(sql)
            .bind(job_id.0)
            .fetch_all(pool)
            .await)?;
        Ok(attempts)
    }

    /// Up to `limit` log lines of a job with `seq >= from_seq`, ordered by attempt then seq:
    /// of one attempt, or of every attempt when `attempt` is `None` (then `from_seq` applies
    /// within each attempt; page through one attempt at a time to follow a long log). Archived
    /// attempts are read from `blobs` transparently. Only the chunks holding wanted lines are
    /// fetched, a few at a time.
    pub async fn read_log(
        &self,
        job_id: JobId,
        attempt: Option<i64>,
        from_seq: i64,
        limit: u32,
        blobs: &BlobStore,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        // Keyset pages over (attempt, first_seq), skipping chunks that end before `from_seq`.
        let live_one = "SELECT attempt, first_seq, last_seq, body FROM log_chunks
                        WHERE job_id = $1 AND last_seq >= $2 AND attempt = $3 AND first_seq > $4
                        ORDER BY first_seq LIMIT $5";
        let live_all = "SELECT attempt, first_seq, last_seq, body FROM log_chunks
                        WHERE job_id = $1 AND last_seq >= $2
                          AND (attempt > $3 OR (attempt = $3 AND first_seq > $4))
                        ORDER BY attempt, first_seq LIMIT $5";
        let archives_one = "SELECT attempt, digest FROM log_archives
                            WHERE job_id = $1 AND attempt = $2 ORDER BY attempt";
        let archives_all = "SELECT attempt, digest FROM log_archives
                            WHERE job_id = $1 ORDER BY attempt";
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        // Chunks first, archives second (see `last_log_seq`); an attempt seen in both is read
        // from its archive. Archiving deletes all of an attempt's chunks at once, after its
        // archive row exists, so an attempt whose chunks vanish between two pages is archived.
        let mut live = Vec::new();
        let mut cursor = (attempt.unwrap_or(0), 0_i64);
        let mut page_size = 1_i64;
        while live.len() < limit {
            let page: Vec<ChunkRow> = on_backend!(self, pool => match attempt {
                Some(attempt) => sqlx::query_as(live_one)
                    .bind(job_id.0)
                    .bind(from_seq)
                    .bind(attempt)
                    .bind(cursor.1)
                    .bind(page_size)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query_as(live_all)
                    .bind(job_id.0)
                    .bind(from_seq)
                    .bind(cursor.0)
                    .bind(cursor.1)
                    .bind(page_size)
                    .fetch_all(pool)
                    .await?,
            });
            let last_page = page.len() < usize::try_from(page_size).unwrap_or(usize::MAX);
            page_size = (page_size * 2).min(CHUNK_PAGE);
            for (chunk_attempt, first_seq, _last_seq, body) in page {
                cursor = (chunk_attempt, first_seq);
                let source = LogSource::Chunk { job_id, first_seq };
                parse_lines(
                    &body,
                    chunk_attempt,
                    first_seq,
                    from_seq,
                    limit,
                    &source,
                    &mut live,
                )?;
                if live.len() >= limit {
                    break;
                }
            }
            if last_page {
                break;
            }
        }
        let archives: Vec<(i64, String)> = on_backend!(self, pool => match attempt {
            Some(attempt) => sqlx::query_as(archives_one)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_all(pool)
                .await?,
            None => sqlx::query_as(archives_all).bind(job_id.0).fetch_all(pool).await?,
        });
        let mut lines = Vec::new();
        for (archived_attempt, digest) in &archives {
            let bytes = blobs.get(digest).await?;
            let source = LogSource::Archive { digest };
            let text = std::str::from_utf8(&bytes)
                .map_err(|error| source.corrupt(*archived_attempt, error.to_string()))?;
            let mut archived = Vec::new();
            parse_lines(
                text,
                *archived_attempt,
                1,
                from_seq,
                limit,
                &source,
                &mut archived,
            )?;
            lines.append(&mut archived);
        }
        lines.extend(live.into_iter().filter(|line| {
            archives
                .iter()
                .all(|(archived, _)| *archived != line.attempt)
        }));
        lines.sort_by_key(|line| (line.attempt, line.seq));
        lines.truncate(limit);
        Ok(lines)
    }

    /// Moves one finished attempt's log out of SQL: streams its chunk bodies, in order, as one
    /// NDJSON blob (one `{"seq", "job", "stream", "text"}` object per line) into `blobs`, then
    /// in one transaction records the blob in `log_archives` and deletes the chunks. Returns the
    /// blob's digest, or `None` when the attempt has no lines. Archiving an archived attempt
    /// returns the recorded digest and changes nothing. [`StoreError::LogStillOpen`] while the
    /// job is running at this attempt (it may still append); [`StoreError::Corrupt`] when the
    /// stored chunks do not number the lines 1, 2, 3, … without gaps or overlaps.
    pub async fn archive_log(
        &self,
        job_id: JobId,
        attempt: i64,
        blobs: &BlobStore,
    ) -> Result<Option<String>, StoreError> {
        let existing_sql = "SELECT digest FROM log_archives WHERE job_id = $1 AND attempt = $2";
        let job = self.get_job(job_id).await?;
        if job.status == Status::Running && job.attempt == attempt {
            return Err(StoreError::LogStillOpen { job_id, attempt });
        }
        let existing: Option<String> = on_backend!(self, pool => sqlx::query_scalar(existing_sql)
            .bind(job_id.0)
            .bind(attempt)
            .fetch_optional(pool)
            .await?);
        if let Some(digest) = existing {
            return Ok(Some(digest));
        }
        let staging = blobs.staging_path().await?;
        let staged = match self.stage_archive(job_id, attempt, &staging).await {
            Ok(Some(staged)) => staged,
            Ok(None) => return Ok(None),
            Err(error) => {
                // Best effort: a half-written staging file is garbage either way.
                let _ = tokio::fs::remove_file(&staging).await;
                return Err(error);
            }
        };
        if let Err(error) = blobs.put_file(&staging, &staged.digest).await {
            let _ = tokio::fs::remove_file(&staging).await;
            return Err(error.into());
        }
        let StagedArchive {
            digest,
            line_count,
            byte_count,
            chunk_count,
        } = staged;
        on_backend!(self, pool => {
            let mut transaction = pool.begin_write().await?;
            let job: Option<(String, i64)> = sqlx::query_as(pool.lock_job_sql())
                .bind(job_id.0)
                .fetch_optional(&mut *transaction)
                .await?;
            let Some((status, current_attempt)) = job else {
                return Err(StoreError::not_found("job", job_id));
            };
            if Status::parse(&status)? == Status::Running && current_attempt == attempt {
                return Err(StoreError::LogStillOpen { job_id, attempt });
            }
            // Another archiver may have won the race while the blob was written.
            let raced: Option<String> = sqlx::query_scalar(existing_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(&mut *transaction)
                .await?;
            if let Some(digest) = raced {
                return Ok(Some(digest));
            }
            let (stored_chunks, stored_max): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COALESCE(MAX(last_seq), 0) FROM log_chunks
                 WHERE job_id = $1 AND attempt = $2",
            )
            .bind(job_id.0)
            .bind(attempt)
            .fetch_one(&mut *transaction)
            .await?;
            if stored_chunks != chunk_count || stored_max != line_count {
                // Lines changed under us; the job state says they cannot, so refuse rather than
                // delete anything the blob does not hold.
                return Err(StoreError::Corrupt(format!(
                    "log of job {job_id} attempt {attempt} changed while it was archived \
                     ({line_count} lines in {chunk_count} chunks written, {stored_chunks} chunks \
                     stored up to seq {stored_max})"
                )));
            }
            sqlx::query(
                "INSERT INTO log_archives (job_id, attempt, digest, line_count, byte_count)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(job_id.0)
            .bind(attempt)
            .bind(&digest)
            .bind(line_count)
            .bind(byte_count)
            .execute(&mut *transaction)
            .await?;
            sqlx::query("DELETE FROM log_chunks WHERE job_id = $1 AND attempt = $2")
                .bind(job_id.0)
                .bind(attempt)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(Some(digest))
        })
    }

    /// Writes the attempt's chunk bodies, in order, to the new file `staging`, hashing them on
    /// the way, a page of chunks at a time. `None` (and no file) when the attempt has no chunks.
    async fn stage_archive(
        &self,
        job_id: JobId,
        attempt: i64,
        staging: &Path,
    ) -> Result<Option<StagedArchive>, StoreError> {
        let page_sql = "SELECT attempt, first_seq, last_seq, body FROM log_chunks
                        WHERE job_id = $1 AND attempt = $2 AND first_seq > $3
                        ORDER BY first_seq LIMIT $4";
        let mut file: Option<tokio::fs::File> = None;
        let mut hasher = Sha256::new();
        let mut next_seq = 1_i64;
        let mut byte_count = 0_i64;
        let mut chunk_count = 0_i64;
        loop {
            let page: Vec<ChunkRow> = on_backend!(self, pool => sqlx::query_as(page_sql)
                .bind(job_id.0)
                .bind(attempt)
                .bind(next_seq - 1)
                .bind(CHUNK_PAGE)
                .fetch_all(pool)
                .await?);
            let last_page = page.len() < usize::try_from(CHUNK_PAGE).unwrap_or(usize::MAX);
            for (_, first_seq, last_seq, body) in page {
                let line_count = body.bytes().filter(|byte| *byte == b'\n').count();
                let contiguous = first_seq == next_seq
                    && last_seq >= first_seq
                    && i64::try_from(line_count).ok() == Some(last_seq - first_seq + 1);
                if !contiguous {
                    return Err(StoreError::Corrupt(format!(
                        "log of job {job_id} attempt {attempt}: chunk {first_seq}..={last_seq} \
                         with {line_count} lines does not continue at seq {next_seq}"
                    )));
                }
                let writer = match &mut file {
                    Some(writer) => writer,
                    None => file.insert(
                        tokio::fs::File::create_new(staging)
                            .await
                            .map_err(staging_error("creating", staging))?,
                    ),
                };
                writer
                    .write_all(body.as_bytes())
                    .await
                    .map_err(staging_error("writing", staging))?;
                hasher.update(body.as_bytes());
                byte_count += i64::try_from(body.len()).unwrap_or(i64::MAX);
                chunk_count += 1;
                next_seq = last_seq + 1;
            }
            if last_page {
                break;
            }
        }
        let Some(mut writer) = file else {
            return Ok(None);
        };
        writer
            .flush()
            .await
            .map_err(staging_error("writing", staging))?;
        drop(writer);
        Ok(Some(StagedArchive {
            digest: hex::encode(hasher.finalize()),
            line_count: next_seq - 1,
            byte_count,
            chunk_count,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{LogSource, chunk_body, parse_lines, skip_lines};
    use crate::model::{JobId, LogLine, LogStream, StoredLogLine};

    const SOURCE: LogSource<'static> = LogSource::Archive { digest: "d" };

    fn awkward_lines() -> Vec<LogLine> {
        [
            (Some("build"), LogStream::Stdout, "plain"),
            (None, LogStream::System, ""),
            (
                Some("test"),
                LogStream::Stderr,
                "quote \" newline\nand \\ ✓ \u{1b}[0m \u{7f}",
            ),
        ]
        .into_iter()
        .map(|(job, stream, text)| LogLine {
            job: job.map(str::to_owned),
            stream,
            text: text.to_owned(),
        })
        .collect()
    }

    #[test]
    fn chunk_format_round_trips_awkward_text() {
        let lines = awkward_lines();
        let body = chunk_body(7, &lines).unwrap();
        assert_eq!(body.bytes().filter(|byte| *byte == b'\n').count(), 3);
        let mut parsed = Vec::new();
        parse_lines(&body, 3, 7, 1, usize::MAX, &SOURCE, &mut parsed).unwrap();
        let expected: Vec<StoredLogLine> = (7..)
            .zip(&lines)
            .map(|(seq, line)| StoredLogLine {
                attempt: 3,
                seq,
                job: line.job.clone(),
                stream: line.stream,
                text: line.text.clone(),
            })
            .collect();
        assert_eq!(parsed, expected);

        let mut tail = Vec::new();
        parse_lines(&body, 3, 7, 8, 1, &SOURCE, &mut tail).unwrap();
        assert_eq!(tail, expected[1..2], "from_seq skips, limit stops");
    }

    /// The archive format is unchanged from the per-row era: one compact object per line with
    /// the fields in this order, so old and new archives read alike.
    #[test]
    fn chunk_body_is_the_archive_ndjson_format() {
        let body = chunk_body(1, &awkward_lines()[..2]).unwrap();
        assert_eq!(
            body,
            "{\"seq\":1,\"job\":\"build\",\"stream\":\"stdout\",\"text\":\"plain\"}\n\
             {\"seq\":2,\"job\":null,\"stream\":\"system\",\"text\":\"\"}\n"
        );
    }

    #[test]
    fn skipping_lines_cuts_at_line_boundaries() {
        let body = chunk_body(4, &awkward_lines()).unwrap();
        assert_eq!(skip_lines(&body, 0), body);
        let mut parsed = Vec::new();
        parse_lines(skip_lines(&body, 2), 1, 6, 1, 10, &SOURCE, &mut parsed).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].text, awkward_lines()[2].text);
        assert_eq!(skip_lines(&body, 3), "");
        assert_eq!(skip_lines(&body, 9), "");
    }

    #[test]
    fn nul_becomes_the_replacement_character() {
        let line = LogLine {
            job: None,
            stream: LogStream::Stdout,
            text: "a\0b".to_owned(),
        };
        let body = chunk_body(1, &[line]).unwrap();
        let mut parsed = Vec::new();
        parse_lines(&body, 1, 1, 1, 10, &SOURCE, &mut parsed).unwrap();
        assert_eq!(parsed[0].text, "a\u{FFFD}b");
    }

    #[test]
    fn damaged_stored_lines_are_corrupt_not_a_panic() {
        let chunk = LogSource::Chunk {
            job_id: JobId(1),
            first_seq: 1,
        };
        for bad in [
            "{\"seq\": 1}\n",
            "not json\n",
            "{\"seq\":1,\"job\":7,\"stream\":\"stdout\",\"text\":\"x\"}\n",
            "{\"seq\":1,\"job\":null,\"stream\":\"nowhere\",\"text\":\"x\"}\n",
            "{\"seq\":2,\"job\":null,\"stream\":\"stdout\",\"text\":\"numbered wrong\"}\n",
        ] {
            let mut out = Vec::new();
            assert!(
                parse_lines(bad, 1, 1, 1, 10, &chunk, &mut out).is_err(),
                "{bad:?}"
            );
        }
        let mut out = Vec::new();
        let error = parse_lines("x\n", 1, i64::MAX, 1, 10, &chunk, &mut out).unwrap_err();
        assert!(error.to_string().contains("corrupt"), "{error}");
    }
}
