//! Triggers: what starts runs of a project (webhooks, schedules, …).
//!
//! Invariants: the store does not interpret a trigger's configuration or state (JSON owned by the
//! caller) and holds its secret only sealed (encrypted by the caller); deleting a project deletes
//! its triggers.

use super::{Backend, Store, non_empty};
use crate::error::{StoreError, missing_or_conflict};
use crate::model::{ProjectId, Trigger, TriggerId, UnixMillis};

type TriggerRow = (
    i64,
    i64,
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
);

/// Columns of a trigger, in [`TriggerRow`] order.
macro_rules! trigger_columns {
    () => {
        "id, project_id, kind, config_json, secret_sealed, state_json, created_at"
    };
}

fn trigger_from_row(row: TriggerRow) -> Trigger {
    let (id, project_id, kind, config_json, secret_sealed, state_json, created_at) = row;
    Trigger {
        id: TriggerId(id),
        project_id: ProjectId(project_id),
        kind,
        config_json,
        secret_sealed,
        state_json,
        created_at,
    }
}

fn valid_json(text: &str, what: &str) -> Result<(), StoreError> {
    serde_json::from_str::<serde_json::Value>(text)
        .map(|_| ())
        .map_err(|error| StoreError::InvalidInput(format!("{what} is not valid JSON: {error}")))
}

impl Store {
    /// Creates a trigger of `kind` for a project. `config_json` must be valid JSON
    /// ([`StoreError::InvalidInput`]); [`StoreError::NotFound`] for an unknown project.
    pub async fn create_trigger(
        &self,
        project_id: ProjectId,
        kind: &str,
        config_json: &str,
        secret_sealed: Option<&str>,
        now: UnixMillis,
    ) -> Result<Trigger, StoreError> {
        non_empty(kind, "trigger kind")?;
        valid_json(config_json, "trigger configuration")?;
        let sql = concat!(
            "INSERT INTO triggers (project_id, kind, config_json, secret_sealed, created_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING ",
            trigger_columns!()
        );
        let row: TriggerRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .bind(kind)
            .bind(config_json)
            .bind(secret_sealed)
            .bind(now)
            .fetch_one(pool)
            .await)
        .map_err(|error| {
            let key = project_id.to_string();
            missing_or_conflict(error, "project", &key, "trigger", &key)
        })?;
        Ok(trigger_from_row(row))
    }

    /// The triggers of a project, oldest first.
    pub async fn list_triggers(&self, project_id: ProjectId) -> Result<Vec<Trigger>, StoreError> {
        let sql = concat!(
            "SELECT ",
            trigger_columns!(),
            " FROM triggers WHERE project_id = $1 ORDER BY id"
        );
        let rows: Vec<TriggerRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(project_id.0)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(trigger_from_row).collect())
    }

    /// The triggers of every project with this kind (e.g. all `cron` triggers for the
    /// scheduler), oldest first.
    pub async fn list_triggers_of_kind(&self, kind: &str) -> Result<Vec<Trigger>, StoreError> {
        let sql = concat!(
            "SELECT ",
            trigger_columns!(),
            " FROM triggers WHERE kind = $1 ORDER BY id"
        );
        let rows: Vec<TriggerRow> =
            on_backend!(self, pool => sqlx::query_as(sql).bind(kind).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(trigger_from_row).collect())
    }

    /// The trigger with this id; [`StoreError::NotFound`] if there is none.
    pub async fn get_trigger(&self, trigger_id: TriggerId) -> Result<Trigger, StoreError> {
        let sql = concat!(
            "SELECT ",
            trigger_columns!(),
            " FROM triggers WHERE id = $1"
        );
        let row: Option<TriggerRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(trigger_id.0)
            .fetch_optional(pool)
            .await)?;
        row.map(trigger_from_row)
            .ok_or_else(|| StoreError::not_found("trigger", trigger_id))
    }

    /// Deletes a trigger of a project; `false` when the project has no such trigger (another
    /// project's trigger is never deleted).
    pub async fn delete_trigger(
        &self,
        project_id: ProjectId,
        trigger_id: TriggerId,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM triggers WHERE id = $1 AND project_id = $2";
        let deleted = on_backend!(self, pool => sqlx::query(sql)
            .bind(trigger_id.0)
            .bind(project_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted > 0)
    }

    /// Replaces a trigger's state (valid JSON, else [`StoreError::InvalidInput`]);
    /// [`StoreError::NotFound`] for an unknown trigger.
    pub async fn set_trigger_state(
        &self,
        trigger_id: TriggerId,
        state_json: &str,
    ) -> Result<(), StoreError> {
        valid_json(state_json, "trigger state")?;
        let sql = "UPDATE triggers SET state_json = $1 WHERE id = $2";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(state_json)
            .bind(trigger_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        if updated == 0 {
            return Err(StoreError::not_found("trigger", trigger_id));
        }
        Ok(())
    }
}
