//! Push webhooks: `POST /hooks/{provider}/{project}` for GitHub, GitLab and Gitea/Forgejo.
//! Not token-authenticated: each delivery must verify against the secret of one of the project's
//! webhook triggers for that provider (HMAC-SHA256 signature or GitLab's secret token).
//! Unverified deliveries are refused with 401 and counted by `keelson_webhook_deliveries_total`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;

use crate::error::{Answer, Failure};
use crate::scheduler::{StartRequest, Started, start_run};
use crate::state::AppState;
use crate::webhook::{Provider, WebhookEvent, parse_push, verify};

/// `POST /hooks/{provider}/{project}`.
pub async fn deliver(
    State(state): State<AppState>,
    Path((provider_name, project_name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer<(StatusCode, Json<serde_json::Value>)> {
    let Ok(provider) = provider_name.parse::<Provider>() else {
        return Err(Failure::not_found(
            "webhooks are /hooks/{github|gitlab|gitea}/{project}",
        ));
    };
    let refuse = |state: &AppState| {
        state
            .metrics()
            .webhook(provider.as_str(), "rejected_signature");
        Failure::unauthenticated("the delivery's signature does not verify")
    };
    // Unknown project and wrong secret answer alike, so deliveries cannot probe project names.
    let Some(project) = state.store().project_by_name(&project_name).await? else {
        return Err(refuse(&state));
    };
    let mut verified = false;
    for trigger in state.store().list_triggers(project.id).await? {
        if trigger.kind != "webhook" {
            continue;
        }
        let spec: keelson_api::TriggerSpec =
            serde_json::from_str(&trigger.config_json).map_err(Failure::internal)?;
        let keelson_api::TriggerSpec::Webhook { provider: p, .. } = spec else {
            continue;
        };
        if p != provider.as_str() {
            continue;
        }
        let Some(sealed) = &trigger.secret_sealed else {
            continue;
        };
        let secret = state.secrets().open(sealed).map_err(Failure::internal)?;
        if verify(provider, &headers, &body, &secret).is_ok() {
            verified = true;
            break;
        }
    }
    if !verified {
        tracing::warn!(provider = provider.as_str(), project = %project.name, "webhook refused: signature");
        return Err(refuse(&state));
    }
    let event = match parse_push(provider, &headers, &body) {
        Ok(event) => event,
        Err(error) => {
            state
                .metrics()
                .webhook(provider.as_str(), "invalid_payload");
            return Err(Failure::invalid(error.to_string()));
        }
    };
    let push = match event {
        WebhookEvent::Push(push) => push,
        WebhookEvent::Ping => {
            state.metrics().webhook(provider.as_str(), "ping");
            return Ok((StatusCode::OK, Json(json!({"result": "pong"}))));
        }
        WebhookEvent::Ignored { event } => {
            state.metrics().webhook(provider.as_str(), "ignored");
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"result": "ignored", "event": event})),
            ));
        }
    };
    if push.deleted {
        state.metrics().webhook(provider.as_str(), "ignored");
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"result": "ignored", "reason": "ref deleted"})),
        ));
    }
    let started = start_run(
        &state,
        &project,
        StartRequest {
            trigger: "push".into(),
            git_ref: Some(push.git_ref.clone()),
            commit_sha: Some(push.after.clone()),
            vars: Default::default(),
        },
    )
    .await;
    match started {
        Ok(Started::Run(run)) => {
            state.metrics().webhook(provider.as_str(), "accepted");
            tracing::info!(provider = provider.as_str(), project = %project.name, run = run.number, git_ref = %push.git_ref, "push started a run");
            Ok((
                StatusCode::CREATED,
                Json(json!({"result": "started", "run_id": run.id.0, "number": run.number})),
            ))
        }
        Ok(Started::Filtered { git_ref }) => {
            state.metrics().webhook(provider.as_str(), "filtered");
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({"result": "filtered", "ref": git_ref})),
            ))
        }
        Err(failure) => {
            state.metrics().webhook(provider.as_str(), "error");
            Err(failure)
        }
    }
}
