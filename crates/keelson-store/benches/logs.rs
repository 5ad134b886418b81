//! Log ingestion and archiving throughput of the store on SQLite.
//!
//! Appends 200 MiB of 100-byte lines in 1 MiB batches (as an agent sends them) to a SQLite store
//! in a temporary directory, then archives the attempt into the blob store. The baseline, run
//! in the same process, is the time to serialise the same batches to NDJSON in memory (the work
//! the store cannot avoid); the ratio says how much the database adds on top of it. Run with
//! `cargo bench -p keelson-store --bench logs`; set `KEELSON_BENCH_DATABASE` to a store location
//! (such as a `postgres://` URL) to measure that database instead of a fresh SQLite file.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use keelson_store::{BlobStore, LogLine, LogStream, NewJob, NewRun, Store, StoreError};
use serde::Serialize;

const LINE_BYTES: usize = 100;
const BATCH_BYTES: usize = 1024 * 1024;
const TOTAL_BYTES: usize = 200 * 1024 * 1024;
const LINES_PER_BATCH: usize = BATCH_BYTES / LINE_BYTES;
const BATCHES: usize = TOTAL_BYTES / BATCH_BYTES;
/// Distinct batches generated up front and cycled, so generating text is not timed.
const DISTINCT_BATCHES: usize = 8;
const NOW: i64 = 1_700_000_000_000;

/// One line in the archive's NDJSON form, as the store writes it.
#[derive(Serialize)]
struct NdjsonLine<'line> {
    seq: i64,
    job: Option<&'line str>,
    stream: &'static str,
    text: &'line str,
}

fn batch(index: usize) -> Vec<LogLine> {
    (0..LINES_PER_BATCH)
        .map(|line| {
            let mut text = format!("batch {index:>3} line {line:>6}: compiling keelson ");
            while text.len() < LINE_BYTES {
                text.push(char::from(
                    b'a' + u8::try_from((text.len() + line) % 26).unwrap(),
                ));
            }
            LogLine {
                job: Some("build".to_owned()),
                stream: if line % 7 == 0 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                text,
            }
        })
        .collect()
}

/// The baseline: every batch serialised to NDJSON in memory, once.
fn serialise_all(batches: &[Vec<LogLine>]) -> (Duration, usize) {
    let started = Instant::now();
    let mut total = 0;
    let mut seq = 1_i64;
    for index in 0..BATCHES {
        let lines = &batches[index % batches.len()];
        let mut bytes = Vec::with_capacity(BATCH_BYTES + lines.len() * 56);
        for line in lines {
            let out = NdjsonLine {
                seq,
                job: line.job.as_deref(),
                stream: line.stream.as_str(),
                text: &line.text,
            };
            serde_json::to_writer(&mut bytes, &out).expect("serialisable");
            bytes.push(b'\n');
            seq += 1;
        }
        let body = String::from_utf8(bytes).expect("UTF-8");
        total += std::hint::black_box(body).len();
    }
    (started.elapsed(), total)
}

fn megabytes_per_second(bytes: usize, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), StoreError> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let location = std::env::var("KEELSON_BENCH_DATABASE")
        .unwrap_or_else(|_| dir.path().join("bench.db").display().to_string());
    let store = Store::open(&location).await?;
    let backend = format!("{:?}", store.backend_kind());
    let blobs = BlobStore::new(dir.path().join("blobs"));
    // A name of its own, so a reused database takes another run.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let project_name = format!("bench-{}-{nanos}", std::process::id());
    let project = store
        .create_project(&project_name, "/srv/git/bench.git", NOW)
        .await?;
    let run = NewRun {
        trigger: "manual".to_owned(),
        git_ref: None,
        commit_sha: None,
        jobs: vec![NewJob {
            name: "build".to_owned(),
            labels: Vec::new(),
            max_attempts: 1,
        }],
        vars: Vec::new(),
        concurrency_group: None,
        pipeline_jobs: Vec::new(),
    };
    let (_, jobs) = store.create_run(project.id, &run, NOW).await?;
    let job_id = jobs[0].id;
    let leased = store
        .lease_job("bench-agent", &[], NOW, Duration::from_secs(3600))
        .await?
        .expect("the job is queued");
    let attempt = leased.attempt;

    let batches: Vec<Vec<LogLine>> = (0..DISTINCT_BATCHES).map(batch).collect();
    let text_bytes = BATCHES * LINES_PER_BATCH * LINE_BYTES;
    println!(
        "log ingestion: {BATCHES} batches x {LINES_PER_BATCH} lines x {LINE_BYTES} bytes \
         = {:.1} MB of text",
        text_bytes as f64 / 1e6
    );

    let (serialise_time, ndjson_bytes) = serialise_all(&batches);
    println!(
        "baseline  serialise to NDJSON in memory: {:>8.3} s  {:>8.1} MB/s of text \
         ({:.1} MB of NDJSON)",
        serialise_time.as_secs_f64(),
        megabytes_per_second(text_bytes, serialise_time),
        ndjson_bytes as f64 / 1e6
    );

    let started = Instant::now();
    let mut first_seq = 1_i64;
    for index in 0..BATCHES {
        let lines = &batches[index % batches.len()];
        let acknowledged = store.append_log(job_id, attempt, first_seq, lines).await?;
        first_seq = acknowledged + 1;
    }
    let append_time = started.elapsed();
    assert_eq!(
        usize::try_from(first_seq - 1).unwrap(),
        BATCHES * LINES_PER_BATCH
    );
    println!(
        "store     append_log ({backend:<8}):        {:>8.3} s  {:>8.1} MB/s of text  \
         ({:.1}x the baseline time)",
        append_time.as_secs_f64(),
        megabytes_per_second(text_bytes, append_time),
        append_time.as_secs_f64() / serialise_time.as_secs_f64()
    );

    // A resend of the last batch after a lost acknowledgement: all of it is skipped.
    let started = Instant::now();
    let resent_from = first_seq - i64::try_from(LINES_PER_BATCH).unwrap();
    let lines = &batches[(BATCHES - 1) % batches.len()];
    store
        .append_log(job_id, attempt, resent_from, lines)
        .await?;
    println!(
        "store     resend of one acked batch:    {:>8.3} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    let started = Instant::now();
    let page = store
        .read_log(job_id, Some(attempt), first_seq / 2, 1_000, &blobs)
        .await?;
    assert_eq!(page.len(), 1_000);
    println!(
        "store     read_log 1000 lines mid-log:  {:>8.3} ms",
        started.elapsed().as_secs_f64() * 1e3
    );

    store
        .complete_job(
            job_id,
            "bench-agent",
            attempt,
            keelson_store::Status::Succeeded,
            None,
            NOW + 1,
        )
        .await?;
    let started = Instant::now();
    let digest = store
        .archive_log(job_id, attempt, &blobs)
        .await?
        .expect("the attempt has lines");
    let archive_time = started.elapsed();
    println!(
        "store     archive_log ({} lines):   {:>8.3} s  -> blob {}",
        BATCHES * LINES_PER_BATCH,
        archive_time.as_secs_f64(),
        &digest[..12]
    );
    assert_eq!(store.last_log_seq(job_id, attempt).await?, first_seq - 1);
    store.close().await;
    Ok(())
}
