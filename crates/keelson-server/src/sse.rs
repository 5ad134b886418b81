//! Live run status and logs as Server-Sent Events: `GET /api/v1/runs/{run}/events`.
//!
//! The stream starts with the run (`event: run`) and every stored log line (`event: log`), then
//! follows live changes; each log line is sent once, in (attempt, seq) order, even when the live
//! bus overflows (the stream then re-reads the store). It ends after the run's final state.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::Stream;
use keelson_api::{LogLineInfo, Role};
use keelson_store::RunId;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use crate::api::{LogQuery, read_run_log, run_for};
use crate::auth::Caller;
use crate::convert::run_info;
use crate::error::Answer;
use crate::state::{AppState, LiveEvent};

fn json_event(kind: &str, value: &impl serde::Serialize) -> Event {
    Event::default()
        .event(kind)
        .data(serde_json::to_string(value).unwrap_or_else(|_| "{}".into()))
}

/// `GET /api/v1/runs/{run}/events`.
pub async fn run_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<i64>,
) -> Answer<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let (run, _) = run_for(&state, &caller, id, Role::Viewer).await?;
    let (sender, receiver) = mpsc::channel::<Event>(256);
    let mut live = state.subscribe();
    tokio::spawn(async move {
        let mut last: (i64, i64) = (0, 0);
        let send_backlog = |last: (i64, i64), state: AppState, run_id: RunId| async move {
            let run = state.store().get_run(run_id).await.ok()?;
            let lines = read_run_log(
                &state,
                &run,
                &LogQuery {
                    job: None,
                    attempt: None,
                    after: None,
                    limit: Some(100_000),
                },
            )
            .await
            .ok()?;
            Some(
                lines
                    .into_iter()
                    .filter(|line| (line.attempt, line.seq) > last)
                    .collect::<Vec<LogLineInfo>>(),
            )
        };
        // The last lines, then `end`: once the viewer was sent the run's final state.
        let finish = |last: (i64, i64), state: AppState, sender: mpsc::Sender<Event>| async move {
            // Give the final log batch a moment to land.
            tokio::time::sleep(Duration::from_millis(200)).await;
            if let Some(rest) = send_backlog(last, state, run.id).await {
                for line in rest {
                    let _ = sender.send(json_event("log", &line)).await;
                }
            }
            let _ = sender.send(Event::default().event("end").data("{}")).await;
        };
        let Some(ended) = send_run(&state, run.id, &sender).await else {
            return;
        };
        let Some(backlog) = send_backlog(last, state.clone(), run.id).await else {
            return;
        };
        for line in backlog {
            last = (line.attempt, line.seq);
            if sender.send(json_event("log", &line)).await.is_err() {
                return;
            }
        }
        if ended {
            finish(last, state.clone(), sender.clone()).await;
            return;
        }
        loop {
            let event = tokio::select! {
                event = live.recv() => event,
                () = sender.closed() => return,
            };
            match event {
                Ok(LiveEvent::Log { run_id, lines }) if run_id == run.id.0 => {
                    for line in lines.iter() {
                        if (line.attempt, line.seq) > last {
                            last = (line.attempt, line.seq);
                            if sender.send(json_event("log", line)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                Ok(LiveEvent::RunChanged { run_id }) if run_id == run.id.0 => {
                    // Whether the run ended is judged on the very state just sent: a second
                    // read could see an end the viewer was never sent.
                    let Some(ended) = send_run(&state, run.id, &sender).await else {
                        return;
                    };
                    if ended {
                        finish(last, state.clone(), sender.clone()).await;
                        return;
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(_)) => {
                    // Missed events may include the run's own changes: send its state again.
                    let Some(ended) = send_run(&state, run.id, &sender).await else {
                        return;
                    };
                    let Some(rest) = send_backlog(last, state.clone(), run.id).await else {
                        return;
                    };
                    for line in rest {
                        last = (line.attempt, line.seq);
                        if sender.send(json_event("log", &line)).await.is_err() {
                            return;
                        }
                    }
                    if ended {
                        finish(last, state.clone(), sender.clone()).await;
                        return;
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|event| (Ok(event), receiver))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// Sends the run's current state; whether that state is final, `None` when the run cannot be
/// read or the viewer went away.
async fn send_run(state: &AppState, run_id: RunId, sender: &mpsc::Sender<Event>) -> Option<bool> {
    let run = state.store().get_run(run_id).await.ok()?;
    let project = state.store().get_project(run.project_id).await.ok()?;
    let jobs = state
        .store()
        .list_pipeline_jobs(run.id)
        .await
        .unwrap_or_default();
    sender
        .send(json_event("run", &run_info(&run, &project.name, &jobs)))
        .await
        .ok()?;
    Some(run.status.is_terminal())
}
