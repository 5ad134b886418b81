//! Users, project membership, API tokens, agent registration tokens and browser sessions.
//!
//! Invariants: the store never sees a plain secret — passwords, tokens and session ids arrive
//! as hashes computed by the caller and are stored in `*_hash` columns, and no method returns a
//! token's hash; roles are one of [`PROJECT_ROLES`], checked here and by a `CHECK` constraint;
//! lookups by hash return expired tokens and sessions too, with their expiry, so the caller
//! decides (and can tell "expired" from "unknown").

use super::{Backend, Store, non_empty};
use crate::error::{StoreError, conflict_or_database, missing_or_conflict};
use crate::model::{
    AgentToken, AgentTokenId, ApiToken, ApiTokenId, NewApiToken, PROJECT_ROLES, ProjectId, Session,
    UnixMillis, User, UserId,
};

type UserRow = (i64, String, Option<String>, bool, i64);

type ApiTokenRow = (
    i64,
    i64,
    String,
    Option<i64>,
    Option<String>,
    i64,
    Option<i64>,
    Option<i64>,
);

type AgentTokenRow = (i64, String, i64, bool);

/// Columns of a user, in [`UserRow`] order.
macro_rules! user_columns {
    () => {
        "id, name, password_hash, server_admin, created_at"
    };
}

fn user_from_row((id, name, password_hash, server_admin, created_at): UserRow) -> User {
    User {
        id: UserId(id),
        name,
        password_hash,
        server_admin,
        created_at,
    }
}

fn api_token_from_row(row: ApiTokenRow) -> ApiToken {
    let (id, user_id, name, project_id, max_role, created_at, expires_at, last_used_at) = row;
    ApiToken {
        id: ApiTokenId(id),
        user_id: UserId(user_id),
        name,
        project_id: project_id.map(ProjectId),
        max_role,
        created_at,
        expires_at,
        last_used_at,
    }
}

fn agent_token_from_row((id, name, created_at, revoked): AgentTokenRow) -> AgentToken {
    AgentToken {
        id: AgentTokenId(id),
        name,
        created_at,
        revoked,
    }
}

fn known_role(role: &str) -> Result<(), StoreError> {
    if PROJECT_ROLES.contains(&role) {
        return Ok(());
    }
    Err(StoreError::InvalidInput(format!(
        "unknown role `{role}`: expected one of {}",
        PROJECT_ROLES.join(", ")
    )))
}

impl Store {
    // ----- users -----

    /// Creates a user. A taken name is [`StoreError::Conflict`].
    pub async fn create_user(
        &self,
        name: &str,
        password_hash: Option<&str>,
        server_admin: bool,
        now: UnixMillis,
    ) -> Result<User, StoreError> {
        non_empty(name, "user name")?;
        if let Some(hash) = password_hash {
            non_empty(hash, "password hash")?;
        }
        let sql = "INSERT INTO users (name, password_hash, server_admin, created_at)
                   VALUES ($1, $2, $3, $4)
                   RETURNING id, name, password_hash, server_admin, created_at";
        let row: UserRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(name)
            .bind(password_hash)
            .bind(server_admin)
            .bind(now)
            .fetch_one(pool)
            .await)
        .map_err(|error| conflict_or_database(error, "user", name))?;
        Ok(user_from_row(row))
    }

    /// The user called `name`, if any.
    pub async fn user_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE name = $1");
        let row: Option<UserRow> =
            on_backend!(self, pool => sqlx::query_as(sql).bind(name).fetch_optional(pool).await)?;
        Ok(row.map(user_from_row))
    }

    /// The user with this id; [`StoreError::NotFound`] if there is none.
    pub async fn get_user(&self, user_id: UserId) -> Result<User, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1");
        let row: Option<UserRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(user_id.0)
            .fetch_optional(pool)
            .await)?;
        row.map(user_from_row)
            .ok_or_else(|| StoreError::not_found("user", user_id))
    }

    /// All users, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let sql = concat!("SELECT ", user_columns!(), " FROM users ORDER BY name");
        let rows: Vec<UserRow> =
            on_backend!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(user_from_row).collect())
    }

    /// Replaces a user's password hash; [`StoreError::NotFound`] for an unknown user.
    pub async fn set_password_hash(
        &self,
        user_id: UserId,
        password_hash: &str,
    ) -> Result<(), StoreError> {
        non_empty(password_hash, "password hash")?;
        let sql = "UPDATE users SET password_hash = $1 WHERE id = $2";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(password_hash)
            .bind(user_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        if updated == 0 {
            return Err(StoreError::not_found("user", user_id));
        }
        Ok(())
    }

    /// How many users exist (zero on a fresh server, before the first administrator).
    pub async fn user_count(&self) -> Result<i64, StoreError> {
        let sql = "SELECT COUNT(*) FROM users";
        let count: i64 = on_backend!(self, pool => sqlx::query_scalar(sql).fetch_one(pool).await)?;
        Ok(count)
    }

    // ----- project members -----

    /// Gives a user `role` (one of [`PROJECT_ROLES`], else [`StoreError::InvalidInput`]) in a
    /// project, replacing any role they had. [`StoreError::NotFound`] for an unknown project or
    /// user.
    pub async fn set_member(
        &self,
        project_id: ProjectId,
        user_id: UserId,
        role: &str,
    ) -> Result<(), StoreError> {
        known_role(role)?;
        let sql = "INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)
                   ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role";
        let key = format!("project {project_id} or user {user_id}");
        on_backend!(self, pool => sqlx::query(sql)
            .bind(project_id.0)
            .bind(user_id.0)
            .bind(role)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(|error| missing_or_conflict(error, "project or user", &key, "member", &key))?;
        Ok(())
    }

    /// Removes a user from a project; whether they were a member.
    pub async fn remove_member(
        &self,
        project_id: ProjectId,
        user_id: UserId,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM project_members WHERE project_id = $1 AND user_id = $2";
        let deleted = on_backend!(self, pool => sqlx::query(sql)
            .bind(project_id.0)
            .bind(user_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted > 0)
    }

    /// The user's role in the project, if they are a member.
    pub async fn member_role(
        &self,
        project_id: ProjectId,
        user_id: UserId,
    ) -> Result<Option<String>, StoreError> {
        let sql = "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2";
        let role: Option<String> = on_backend!(self, pool => sqlx::query_scalar(sql)
            .bind(project_id.0)
            .bind(user_id.0)
            .fetch_optional(pool)
            .await)?;
        Ok(role)
    }

    /// The members of a project with their roles, by user name.
    pub async fn list_members(
        &self,
        project_id: ProjectId,
    ) -> Result<Vec<(User, String)>, StoreError> {
        let sql = "SELECT u.id, u.name, u.password_hash, u.server_admin, u.created_at, m.role
                   FROM project_members m JOIN users u ON u.id = m.user_id
                   WHERE m.project_id = $1 ORDER BY u.name";
        let rows: Vec<(i64, String, Option<String>, bool, i64, String)> = on_backend!(self, pool => sqlx::query_as(sql)
                .bind(project_id.0)
                .fetch_all(pool)
                .await)?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, password_hash, server_admin, created_at, role)| {
                    (
                        user_from_row((id, name, password_hash, server_admin, created_at)),
                        role,
                    )
                },
            )
            .collect())
    }

    // ----- API tokens -----

    /// Stores a new API token (its hash only). [`StoreError::NotFound`] for an unknown user or
    /// project, [`StoreError::InvalidInput`] for an unknown `max_role` or an empty name,
    /// [`StoreError::Conflict`] when the hash is already stored.
    pub async fn create_api_token(
        &self,
        new_token: &NewApiToken,
        now: UnixMillis,
    ) -> Result<ApiToken, StoreError> {
        non_empty(&new_token.name, "token name")?;
        non_empty(&new_token.token_hash, "token hash")?;
        if let Some(role) = &new_token.max_role {
            known_role(role)?;
        }
        let sql = "INSERT INTO api_tokens (user_id, name, token_hash, project_id, max_role,
                                           created_at, expires_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   RETURNING id, user_id, name, project_id, max_role, created_at, expires_at,
                             last_used_at";
        let row: ApiTokenRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(new_token.user_id.0)
            .bind(&new_token.name)
            .bind(&new_token.token_hash)
            .bind(new_token.project_id.map(|project_id| project_id.0))
            .bind(&new_token.max_role)
            .bind(now)
            .bind(new_token.expires_at)
            .fetch_one(pool)
            .await)
        .map_err(|error| {
            missing_or_conflict(
                error,
                "user or project",
                &format!("user {}", new_token.user_id),
                "api token",
                &new_token.name,
            )
        })?;
        Ok(api_token_from_row(row))
    }

    /// The API token with this hash and its owner, if any — expired tokens included (check
    /// [`ApiToken::expires_at`]).
    pub async fn api_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<(ApiToken, User)>, StoreError> {
        let sql = "SELECT t.id, t.user_id, t.name, t.project_id, t.max_role, t.created_at,
                          t.expires_at, t.last_used_at,
                          u.id, u.name, u.password_hash, u.server_admin, u.created_at
                   FROM api_tokens t JOIN users u ON u.id = t.user_id
                   WHERE t.token_hash = $1";
        type Row = (
            i64,
            i64,
            String,
            Option<i64>,
            Option<String>,
            i64,
            Option<i64>,
            Option<i64>,
            i64,
            String,
            Option<String>,
            bool,
            i64,
        );
        let row: Option<Row> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|row| {
            let token =
                api_token_from_row((row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7));
            let user = user_from_row((row.8, row.9, row.10, row.11, row.12));
            (token, user)
        }))
    }

    /// Records that a token was used at `now`; whether the token exists.
    pub async fn touch_api_token(
        &self,
        token_id: ApiTokenId,
        now: UnixMillis,
    ) -> Result<bool, StoreError> {
        let sql = "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(now)
            .bind(token_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(updated > 0)
    }

    /// A user's API tokens, oldest first.
    pub async fn list_api_tokens(&self, user_id: UserId) -> Result<Vec<ApiToken>, StoreError> {
        let sql = "SELECT id, user_id, name, project_id, max_role, created_at, expires_at,
                          last_used_at
                   FROM api_tokens WHERE user_id = $1 ORDER BY id";
        let rows: Vec<ApiTokenRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(user_id.0)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(api_token_from_row).collect())
    }

    /// Deletes one of `user_id`'s tokens; `false` when the user has no such token (another
    /// user's token is never deleted).
    pub async fn delete_api_token(
        &self,
        user_id: UserId,
        token_id: ApiTokenId,
    ) -> Result<bool, StoreError> {
        let sql = "DELETE FROM api_tokens WHERE id = $1 AND user_id = $2";
        let deleted = on_backend!(self, pool => sqlx::query(sql)
            .bind(token_id.0)
            .bind(user_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted > 0)
    }

    // ----- agent registration tokens -----

    /// Stores a new agent registration token (its hash only). [`StoreError::Conflict`] when the
    /// hash is already stored.
    pub async fn create_agent_token(
        &self,
        name: &str,
        token_hash: &str,
        now: UnixMillis,
    ) -> Result<AgentToken, StoreError> {
        non_empty(name, "agent token name")?;
        non_empty(token_hash, "agent token hash")?;
        let sql = "INSERT INTO agent_tokens (name, token_hash, created_at) VALUES ($1, $2, $3)
                   RETURNING id, name, created_at, revoked";
        let row: AgentTokenRow = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(name)
            .bind(token_hash)
            .bind(now)
            .fetch_one(pool)
            .await)
        .map_err(|error| conflict_or_database(error, "agent token", name))?;
        Ok(agent_token_from_row(row))
    }

    /// The agent token with this hash, if any — revoked ones included (check
    /// [`AgentToken::revoked`]).
    pub async fn agent_token_by_hash(
        &self,
        token_hash: &str,
    ) -> Result<Option<AgentToken>, StoreError> {
        let sql = "SELECT id, name, created_at, revoked FROM agent_tokens WHERE token_hash = $1";
        let row: Option<AgentTokenRow> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(token_hash)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(agent_token_from_row))
    }

    /// Revokes an agent token (it stays listed); whether the token exists.
    pub async fn revoke_agent_token(&self, token_id: AgentTokenId) -> Result<bool, StoreError> {
        let sql = "UPDATE agent_tokens SET revoked = TRUE WHERE id = $1";
        let updated = on_backend!(self, pool => sqlx::query(sql)
            .bind(token_id.0)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(updated > 0)
    }

    /// All agent tokens, oldest first.
    pub async fn list_agent_tokens(&self) -> Result<Vec<AgentToken>, StoreError> {
        let sql = "SELECT id, name, created_at, revoked FROM agent_tokens ORDER BY id";
        let rows: Vec<AgentTokenRow> =
            on_backend!(self, pool => sqlx::query_as(sql).fetch_all(pool).await)?;
        Ok(rows.into_iter().map(agent_token_from_row).collect())
    }

    // ----- browser sessions -----

    /// Stores a session (the hashes of its id and CSRF token). [`StoreError::NotFound`] for an
    /// unknown user, [`StoreError::Conflict`] when the session hash is already stored.
    pub async fn create_session(
        &self,
        session_hash: &str,
        user_id: UserId,
        csrf_hash: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> Result<Session, StoreError> {
        non_empty(session_hash, "session hash")?;
        non_empty(csrf_hash, "CSRF token hash")?;
        let sql = "INSERT INTO sessions (session_hash, user_id, csrf_hash, created_at, expires_at)
                   VALUES ($1, $2, $3, $4, $5)";
        on_backend!(self, pool => sqlx::query(sql)
            .bind(session_hash)
            .bind(user_id.0)
            .bind(csrf_hash)
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await
            .map(|_| ()))
        .map_err(|error| {
            missing_or_conflict(
                error,
                "user",
                &user_id.to_string(),
                "session",
                &format!("of user {user_id}"),
            )
        })?;
        Ok(Session {
            user_id,
            csrf_hash: csrf_hash.to_owned(),
            created_at: now,
            expires_at,
        })
    }

    /// The session with this hash and its user, if any — expired ones included (check
    /// [`Session::expires_at`]).
    pub async fn session_by_hash(
        &self,
        session_hash: &str,
    ) -> Result<Option<(Session, User)>, StoreError> {
        let sql = "SELECT s.csrf_hash, s.created_at, s.expires_at,
                          u.id, u.name, u.password_hash, u.server_admin, u.created_at
                   FROM sessions s JOIN users u ON u.id = s.user_id
                   WHERE s.session_hash = $1";
        type Row = (String, i64, i64, i64, String, Option<String>, bool, i64);
        let row: Option<Row> = on_backend!(self, pool => sqlx::query_as(sql)
            .bind(session_hash)
            .fetch_optional(pool)
            .await)?;
        Ok(row.map(|row| {
            let user = user_from_row((row.3, row.4, row.5, row.6, row.7));
            let session = Session {
                user_id: user.id,
                csrf_hash: row.0,
                created_at: row.1,
                expires_at: row.2,
            };
            (session, user)
        }))
    }

    /// Deletes a session (logout); whether it existed.
    pub async fn delete_session(&self, session_hash: &str) -> Result<bool, StoreError> {
        let sql = "DELETE FROM sessions WHERE session_hash = $1";
        let deleted = on_backend!(self, pool => sqlx::query(sql)
            .bind(session_hash)
            .execute(pool)
            .await?
            .rows_affected());
        Ok(deleted > 0)
    }

    /// Deletes every session that expired at or before `now`; how many.
    pub async fn delete_expired_sessions(&self, now: UnixMillis) -> Result<u64, StoreError> {
        let sql = "DELETE FROM sessions WHERE expires_at <= $1";
        Ok(on_backend!(self, pool => sqlx::query(sql)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()))
    }
}
