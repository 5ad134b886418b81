//! Job logs: acknowledged appends keyed by (job, attempt, seq), reads, and archiving a finished
//! attempt's lines out of SQL into the blob store.
//!
//! Invariants: only the job's current attempt, while the job is running, accepts appends, so a
//! late agent never writes into a newer attempt and a finished attempt's lines never change; an
//! attempt's lines live either in `log_lines` or, once archived, in one NDJSON blob recorded in
//! `log_archives` — the archive row is inserted and the rows deleted in one transaction, and
//! readers prefer the archive when they see both.

use std::borrow::Cow;

use serde_json::{Value, json};

use super::{Backend, Dialect, DialectSql, Store};
use crate::blob::BlobStore;
use crate::error::StoreError;
use crate::model::{JobId, LogLine, LogStream, Status, StoredLogLine};

/// NUL characters become U+FFFD: PostgreSQL text cannot hold them.
fn storable_text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Encodes log lines as a JSON array of `[stream, text, job]` triples for the one-statement
/// insert.
fn log_lines_json(lines: &[LogLine]) -> Result<String, StoreError> {
    let triples: Vec<(&str, Cow<'_, str>, Option<&str>)> = lines
        .iter()
        .map(|line| {
            (
                line.stream.as_str(),
                storable_text(&line.text),
                line.job.as_deref(),
            )
        })
        .collect();
    serde_json::to_string(&triples)
        .map_err(|error| StoreError::InvalidInput(format!("log lines cannot be encoded: {error}")))
}

type LogRow = (i64, i64, Option<String>, String, String);

fn line_from_row((attempt, seq, job, stream, text): LogRow) -> Result<StoredLogLine, StoreError> {
    Ok(StoredLogLine {
        attempt,
        seq,
        job,
        stream: LogStream::parse(&stream)?,
        text,
    })
}

/// Serialises one attempt's lines as NDJSON: one `{"seq", "job", "stream", "text"}` object per
/// line.
fn archive_bytes(lines: &[StoredLogLine]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for line in lines {
        let object = json!({
            "seq": line.seq,
            "job": line.job,
            "stream": line.stream.as_str(),
            "text": line.text,
        });
        bytes.extend_from_slice(object.to_string().as_bytes());
        bytes.push(b'\n');
    }
    bytes
}

/// Parses an archived attempt written by [`archive_bytes`].
fn parse_archive(
    bytes: &[u8],
    attempt: i64,
    digest: &str,
) -> Result<Vec<StoredLogLine>, StoreError> {
    let corrupt = |what: String| {
        StoreError::Corrupt(format!("log archive {digest} (attempt {attempt}): {what}"))
    };
    let text = std::str::from_utf8(bytes).map_err(|error| corrupt(error.to_string()))?;
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let value: Value = serde_json::from_str(raw)
            .map_err(|error| corrupt(format!("line {}: {error}", index + 1)))?;
        let seq = value["seq"]
            .as_i64()
            .ok_or_else(|| corrupt(format!("line {}: no `seq`", index + 1)))?;
        let job = match &value["job"] {
            Value::Null => None,
            Value::String(job) => Some(job.clone()),
            _ => {
                return Err(corrupt(format!(
                    "line {}: `job` is not a string",
                    index + 1
                )));
            }
        };
        let stream = value["stream"]
            .as_str()
            .ok_or_else(|| corrupt(format!("line {}: no `stream`", index + 1)))?;
        let text = value["text"]
            .as_str()
            .ok_or_else(|| corrupt(format!("line {}: no `text`", index + 1)))?;
        lines.push(StoredLogLine {
            attempt,
            seq,
            job,
            stream: LogStream::parse(stream)?,
            text: text.to_owned(),
        });
    }
    Ok(lines)
}

impl Store {
    /// Appends a batch of log lines of `attempt`, numbered from `first_seq` (1-based), and
    /// returns the highest sequence number now stored for that attempt (the acknowledgement).
    /// Lines already stored are skipped, so a re-sent batch is harmless; a batch that starts past
    /// the next expected line is [`StoreError::LogGap`]. Unless the job is running at exactly
    /// this attempt the batch is [`StoreError::LeaseLost`].
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
        let next_sql = "SELECT COALESCE(MAX(seq), 0) + 1 FROM log_lines
                        WHERE job_id = $1 AND attempt = $2";
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
            let expected_seq: i64 = sqlx::query_scalar(next_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_one(&mut *transaction)
                .await?;
            if first_seq > expected_seq {
                return Err(StoreError::LogGap { job_id, expected_seq, first_seq });
            }
            let already_stored = usize::try_from(expected_seq - first_seq).unwrap_or(usize::MAX);
            let new_lines = lines.get(already_stored..).unwrap_or_default();
            let new_line_count = i64::try_from(new_lines.len()).map_err(|_| {
                StoreError::InvalidInput(format!("log batch of {} lines is too large", lines.len()))
            })?;
            if !new_lines.is_empty() {
                sqlx::query(pool.append_log_sql())
                    .bind(job_id.0)
                    .bind(attempt)
                    .bind(expected_seq)
                    .bind(log_lines_json(new_lines)?)
                    .execute(&mut *transaction)
                    .await?;
            }
            transaction.commit().await?;
            Ok(expected_seq + new_line_count - 1)
        })
    }

    /// The highest sequence number stored for this attempt of the job (0 when none), whether
    /// its lines are in SQL or archived.
    pub async fn last_log_seq(&self, job_id: JobId, attempt: i64) -> Result<i64, StoreError> {
        let archived_sql = "SELECT line_count FROM log_archives WHERE job_id = $1 AND attempt = $2";
        let live_sql = "SELECT COALESCE(MAX(seq), 0) FROM log_lines
                        WHERE job_id = $1 AND attempt = $2";
        on_backend!(self, pool => {
            // Rows first, archive second: an archive committed in between is seen by the second
            // query, and archived lines are numbered 1..=line_count.
            let live: i64 = sqlx::query_scalar(live_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_one(pool)
                .await?;
            let archived: Option<i64> = sqlx::query_scalar(archived_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(pool)
                .await?;
            Ok(archived.unwrap_or(live))
        })
    }

    /// The attempts of a job that have log lines (stored or archived), in order.
    pub async fn log_attempts(&self, job_id: JobId) -> Result<Vec<i64>, StoreError> {
        let sql = "SELECT DISTINCT attempt FROM log_lines WHERE job_id = $1
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
    /// attempts are read from `blobs` transparently.
    pub async fn read_log(
        &self,
        job_id: JobId,
        attempt: Option<i64>,
        from_seq: i64,
        limit: u32,
        blobs: &BlobStore,
    ) -> Result<Vec<StoredLogLine>, StoreError> {
        let live_one = "SELECT attempt, seq, pipeline_job, stream, text FROM log_lines
                        WHERE job_id = $1 AND seq >= $2 AND attempt = $4
                        ORDER BY attempt, seq LIMIT $3";
        let live_all = "SELECT attempt, seq, pipeline_job, stream, text FROM log_lines
                        WHERE job_id = $1 AND seq >= $2
                        ORDER BY attempt, seq LIMIT $3";
        let archives_one = "SELECT attempt, digest FROM log_archives
                            WHERE job_id = $1 AND attempt = $2 ORDER BY attempt";
        let archives_all = "SELECT attempt, digest FROM log_archives
                            WHERE job_id = $1 ORDER BY attempt";
        let limit_rows = i64::from(limit);
        let (live, archives): (Vec<LogRow>, Vec<(i64, String)>) = on_backend!(self, pool => {
            // Rows first, archives second (see `last_log_seq`); an attempt seen in both is read
            // from its archive.
            let live = match attempt {
                Some(attempt) => sqlx::query_as(live_one)
                    .bind(job_id.0)
                    .bind(from_seq)
                    .bind(limit_rows)
                    .bind(attempt)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query_as(live_all)
                    .bind(job_id.0)
                    .bind(from_seq)
                    .bind(limit_rows)
                    .fetch_all(pool)
                    .await?,
            };
            let archives = match attempt {
                Some(attempt) => sqlx::query_as(archives_one)
                    .bind(job_id.0)
                    .bind(attempt)
                    .fetch_all(pool)
                    .await?,
                None => sqlx::query_as(archives_all).bind(job_id.0).fetch_all(pool).await?,
            };
            (live, archives)
        });
        let mut lines = Vec::new();
        for (archived_attempt, digest) in &archives {
            let bytes = blobs.get(digest).await?;
            lines.extend(
                parse_archive(&bytes, *archived_attempt, digest)?
                    .into_iter()
                    .filter(|line| line.seq >= from_seq),
            );
        }
        for row in live {
            if archives.iter().all(|(archived, _)| *archived != row.0) {
                lines.push(line_from_row(row)?);
            }
        }
        lines.sort_by_key(|line| (line.attempt, line.seq));
        lines.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(lines)
    }

    /// Moves one finished attempt's log out of SQL: writes its lines as NDJSON (one
    /// `{"seq", "job", "stream", "text"}` object per line) into `blobs`, then in one transaction
    /// records the blob in `log_archives` and deletes the rows. Returns the blob's digest, or
    /// `None` when the attempt has no lines. Archiving an archived attempt returns the recorded
    /// digest and changes nothing. [`StoreError::LogStillOpen`] while the job is running at this
    /// attempt (it may still append).
    pub async fn archive_log(
        &self,
        job_id: JobId,
        attempt: i64,
        blobs: &BlobStore,
    ) -> Result<Option<String>, StoreError> {
        let existing_sql = "SELECT digest FROM log_archives WHERE job_id = $1 AND attempt = $2";
        let lines_sql = "SELECT attempt, seq, pipeline_job, stream, text FROM log_lines
                         WHERE job_id = $1 AND attempt = $2 ORDER BY seq";
        let job = self.get_job(job_id).await?;
        if job.status == Status::Running && job.attempt == attempt {
            return Err(StoreError::LogStillOpen { job_id, attempt });
        }
        let (existing, rows): (Option<String>, Vec<LogRow>) = on_backend!(self, pool => {
            let existing = sqlx::query_scalar(existing_sql)
                .bind(job_id.0)
                .bind(attempt)
                .fetch_optional(pool)
                .await?;
            let rows = match existing {
                Some(_) => Vec::new(),
                None => sqlx::query_as(lines_sql)
                    .bind(job_id.0)
                    .bind(attempt)
                    .fetch_all(pool)
                    .await?,
            };
            (existing, rows)
        });
        if let Some(digest) = existing {
            return Ok(Some(digest));
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let lines = rows
            .into_iter()
            .map(line_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let bytes = archive_bytes(&lines);
        let digest = blobs.put(&bytes).await?;
        let line_count = i64::try_from(lines.len()).unwrap_or(i64::MAX);
        let byte_count = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
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
            let (stored_count, stored_max): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COALESCE(MAX(seq), 0) FROM log_lines
                 WHERE job_id = $1 AND attempt = $2",
            )
            .bind(job_id.0)
            .bind(attempt)
            .fetch_one(&mut *transaction)
            .await?;
            if stored_count != line_count || stored_max != line_count {
                // Lines changed under us; the job state says they cannot, so refuse rather than
                // delete anything the blob does not hold.
                return Err(StoreError::Corrupt(format!(
                    "log of job {job_id} attempt {attempt} changed while it was archived \
                     ({line_count} lines written, {stored_count} stored up to seq {stored_max})"
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
            sqlx::query("DELETE FROM log_lines WHERE job_id = $1 AND attempt = $2")
                .bind(job_id.0)
                .bind(attempt)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            Ok(Some(digest))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{archive_bytes, parse_archive};
    use crate::model::{LogStream, StoredLogLine};

    #[test]
    fn archive_format_round_trips_awkward_text() {
        let lines: Vec<StoredLogLine> = [
            (Some("build"), LogStream::Stdout, "plain"),
            (None, LogStream::System, ""),
            (
                Some("test"),
                LogStream::Stderr,
                "quote \" newline-free \\ ✓ \u{1b}[0m",
            ),
        ]
        .into_iter()
        .enumerate()
        .map(|(index, (job, stream, text))| StoredLogLine {
            attempt: 3,
            seq: i64::try_from(index).unwrap() + 1,
            job: job.map(str::to_owned),
            stream,
            text: text.to_owned(),
        })
        .collect();
        let bytes = archive_bytes(&lines);
        assert_eq!(bytes.iter().filter(|byte| **byte == b'\n').count(), 3);
        assert_eq!(parse_archive(&bytes, 3, "d").unwrap(), lines);
    }

    #[test]
    fn a_damaged_archive_is_corrupt_not_a_panic() {
        for bad in [
            &b"{\"seq\": 1}\n"[..],
            b"not json\n",
            b"{\"seq\":1,\"job\":7,\"stream\":\"stdout\",\"text\":\"x\"}\n",
            b"\xff\xfe",
        ] {
            assert!(parse_archive(bad, 1, "d").is_err(), "{bad:?}");
        }
    }
}
