//! Registered agents: who they are, what labels they offer, when they were last heard from.
//!
//! Invariants: an agent's name is unique and registering again under the same name updates the
//! record in place (same id, first registration time kept); labels are stored sorted and without
//! duplicates. A name registered with a token stays bound to it: another token may take the name
//! over only once that token is revoked.

use super::{Backend, Store, labels_json, non_empty};
use crate::error::StoreError;
use crate::model::{Agent, AgentId, UnixMillis};

type AgentRow = (i64, String, String, String, i64, i64, Option<i64>);

/// Columns of an agent, in [`AgentRow`] order.
macro_rules! agent_columns {
    () => {
        "id, name, labels_json, version, registered_at, last_seen, token_id"
    };
}

fn agent_from_row(row: AgentRow) -> Result<Agent, StoreError> {
    let (id, name, labels_json, version, registered_at, last_seen, token_id) = row;
    let labels: Vec<String> = serde_json::from_str(&labels_json)
        .map_err(|error| StoreError::Corrupt(format!("labels of agent `{name}`: {error}")))?;
    Ok(Agent {
        id: AgentId(id),
        name,
        labels,
        version,
        registered_at,
        last_seen,
        token_id,
    })
}

/// Labels sorted, without duplicates, none empty.
fn clean_labels(labels: &[String]) -> Result<Vec<String>, StoreError> {
    let mut sorted_labels = labels.to_vec();
    for label in &sorted_labels {
        non_empty(label, "agent label")?;
    }
    sorted_labels.sort();
    sorted_labels.dedup();
    Ok(sorted_labels)
}

impl Store {
    /// Registers an agent, or updates the labels, version and last-seen time of the agent
    /// already registered under `name`.
    pub async fn upsert_agent(
        &self,
        name: &str,
        labels: &[String],
        version: &str,
        now: UnixMillis,
    ) -> Result<Agent, StoreError> {
        non_empty(name, "agent name")?;
        let sorted_labels = clean_labels(labels)?;
        let sql = concat!(
            "INSERT INTO agents (name, labels_json, version, registered_at, last_seen)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (name) DO UPDATE SET labels_json = excluded.labels_json,
                 version = excluded.version, last_seen = excluded.last_seen
             RETURNING ",
            agent_columns!()
        );
        let row: AgentRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(name)
            .bind(labels_json(&sorted_labels)?)
            .bind(version)
            .bind(now)
            .fetch_one(pool)
            .await)?;
        agent_from_row(row)
    }

    /// Registers an agent with registration token `token_id`, binding the name to it, or updates
    /// the agent already registered under `name` with that token (or with none, or with a
    /// revoked one: the name then moves to `token_id`). [`StoreError::Conflict`] when the name
    /// is bound to another token that is not revoked; nothing changes then.
    pub async fn register_agent(
        &self,
        name: &str,
        labels: &[String],
        version: &str,
        token_id: i64,
        now: UnixMillis,
    ) -> Result<Agent, StoreError> {
        non_empty(name, "agent name")?;
        let sorted_labels = clean_labels(labels)?;
        // One statement: two tokens registering one name at once cannot both win.
        let sql = concat!(
            "INSERT INTO agents (name, labels_json, version, registered_at, last_seen, token_id)
             VALUES ($1, $2, $3, $4, $4, $5)
             ON CONFLICT (name) DO UPDATE SET labels_json = excluded.labels_json,
                 version = excluded.version, last_seen = excluded.last_seen,
                 token_id = excluded.token_id
             WHERE agents.token_id IS NULL OR agents.token_id = excluded.token_id
                OR EXISTS (SELECT 1 FROM agent_tokens t
                           WHERE t.id = agents.token_id AND t.revoked)
             RETURNING ",
            agent_columns!()
        );
        let row: Option<AgentRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(name)
            .bind(labels_json(&sorted_labels)?)
            .bind(version)
            .bind(now)
            .bind(token_id)
            .fetch_optional(pool)
            .await)?;
        match row {
            Some(row) => agent_from_row(row),
            None => Err(StoreError::Conflict {
                entity: "agent",
                key: name.to_string(),
            }),
        }
    }

    /// Records that the agent was heard from at `now`; whether it is registered.
    pub async fn touch_agent(&self, name: &str, now: UnixMillis) -> Result<bool, StoreError> {
        // `last_seen` never goes backwards, whatever order concurrent requests land in.
        let sql = "UPDATE agents
                   SET last_seen = CASE WHEN last_seen < $1 THEN $1 ELSE last_seen END
                   WHERE name = $2";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(now)
            .bind(name)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(updated > 0)
    }

    /// All registered agents, by name.
    pub async fn list_agents(&self) -> Result<Vec<Agent>, StoreError> {
        let sql = concat!("SELECT ", agent_columns!(), " FROM agents ORDER BY name");
        let rows: Vec<AgentRow> =
            on_backend!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        rows.into_iter().map(agent_from_row).collect()
    }

    /// The agent registered under `name`, if any.
    pub async fn agent_by_name(&self, name: &str) -> Result<Option<Agent>, StoreError> {
        let sql = concat!("SELECT ", agent_columns!(), " FROM agents WHERE name = $1");
        let row: Option<AgentRow> =
            on_backend!(self, pool => sqlx::query_as(sql).bind(name).fetch_optional(pool).await)?;
        row.map(agent_from_row).transpose()
    }
}
