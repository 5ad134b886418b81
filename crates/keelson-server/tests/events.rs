//! The run event stream (`GET /api/v1/runs/{run}/events`) through the real router on SQLite, with
//! an agent driven by hand: the stream's last `run` event before `end` carries the run's final
//! state (also when a pipeline job's progress and the job's completion land back to back), each
//! log line comes once and in order, and a stream opened on a finished run replays it and ends.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Server;

const ADMIN: &str = "kt_events-admin-bootstrap-token-000000";
const PIPELINE: &str = "jobs:
  build:
    steps:
      - run: echo build
  ship:
    needs: [build]
    steps:
      - run: echo ship
";

/// An open event stream, read event by event.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(server: &Server, run: i64) -> Events {
        let response = server
            .api
            .client
            .get(format!("{}/api/v1/runs/{run}/events", server.api.url))
            .bearer_auth(server.admin)
            .send()
            .await
            .expect("open the event stream");
        assert_eq!(response.status(), 200);
        Events {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (kind and JSON data), `None` when the stream ended; panics after `limit`.
    async fn next(&mut self, limit: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_string();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).expect("event data is JSON");
                return Some((kind, data));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}; read: {}", self.buffer))
                .expect("read the event stream");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }

    /// Every event up to and including `end`.
    async fn until_end(&mut self) -> Vec<(String, Value)> {
        let mut events = Vec::new();
        while let Some(event) = self.next(Duration::from_secs(10)).await {
            let end = event.0 == "end";
            events.push(event);
            if end {
                return events;
            }
        }
        panic!("the stream closed without `end`: {events:?}");
    }
}

fn last_run_state(events: &[(String, Value)]) -> String {
    events
        .iter()
        .rev()
        .find(|(kind, _)| kind == "run")
        .map(|(_, run)| run["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

fn log_seqs(events: &[(String, Value)]) -> Vec<i64> {
    events
        .iter()
        .filter(|(kind, _)| kind == "log")
        .map(|(_, line)| line["seq"].as_i64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_ends_on_the_final_run_state_and_replays_a_finished_run() {
    let server = Server::start(ADMIN, PIPELINE).await;
    server.project("shop").await;
    let agent = server.agent("runner").await;
    let admin = Some(ADMIN);
    let mut last_run = 0;
    // Several rounds: the progress that cancels the pipeline jobs and the completion that ends
    // the run land back to back, and the stream must not end on the state between them.
    for round in 0..6 {
        let run = server
            .api
            .ok("POST", "/api/v1/projects/shop/runs", admin, json!({}))
            .await;
        let run_id = run["id"].as_i64().unwrap();
        last_run = run_id;
        let (job, attempt) = server.lease(&agent, "runner").await;
        let mut events = Events::open(&server, run_id).await;
        let (kind, first) = events.next(Duration::from_secs(10)).await.unwrap();
        assert_eq!(kind, "run", "the stream starts with the run: {first}");
        let now = now_ms();
        server
            .job_post(
                &agent,
                job,
                "progress",
                json!({"attempt": attempt, "updates": [
                    {"job": "build", "state": "running", "at": now}
                ]}),
            )
            .await;
        server
            .job_post(
                &agent,
                job,
                "logs",
                json!({"attempt": attempt, "first_seq": 1, "lines": [
                    {"job": "build", "stream": "stdout", "text": format!("round {round}")},
                    {"job": "build", "stream": "stderr", "text": "second line"},
                ]}),
            )
            .await;
        server
            .api
            .ok(
                "POST",
                &format!("/api/v1/runs/{run_id}/cancel"),
                admin,
                json!({}),
            )
            .await;
        // No read of the stream between these two.
        server
            .job_post(
                &agent,
                job,
                "progress",
                json!({"attempt": attempt, "updates": [
                    {"job": "build", "state": "cancelled", "reason": "cancelled", "at": now + 1},
                    {"job": "ship", "state": "cancelled", "reason": "cancelled", "at": now + 1},
                ]}),
            )
            .await;
        server
            .job_post(
                &agent,
                job,
                "complete",
                json!({"attempt": attempt, "state": "cancelled", "last_seq": 2}),
            )
            .await;
        let seen = events.until_end().await;
        assert_eq!(
            last_run_state(&seen),
            "cancelled",
            "round {round}: the last run event before `end`: {seen:?}"
        );
        assert_eq!(log_seqs(&seen), vec![1, 2], "round {round}: {seen:?}");
    }

    // A finished run: its state, its log, then `end` at once.
    let mut events = Events::open(&server, last_run).await;
    let seen = events.until_end().await;
    assert_eq!(seen[0].0, "run", "{seen:?}");
    assert_eq!(last_run_state(&seen), "cancelled", "{seen:?}");
    assert_eq!(log_seqs(&seen), vec![1, 2], "{seen:?}");
    let texts: Vec<&str> = seen
        .iter()
        .filter(|(kind, _)| kind == "log")
        .map(|(_, line)| line["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["round 5", "second line"]);
    assert_eq!(
        events.next(Duration::from_secs(5)).await,
        None,
        "the stream closes after `end`"
    );
    // Without a token there is no stream.
    let (status, _) = server
        .api
        .call(
            "GET",
            &format!("/api/v1/runs/{last_run}/events"),
            None,
            None,
        )
        .await;
    assert_eq!(status, 401);
    server.running.stop().await.unwrap();
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
