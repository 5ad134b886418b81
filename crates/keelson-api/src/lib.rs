//! Keelson's wire types: the JSON bodies of `/api/v1`, shared by the server, the agent and the
//! CLI client. No logic beyond naming.
//!
//! Invariants:
//! - Everything here is part of the versioned API: fields are added (optional, with defaults),
//!   never renamed or removed within `v1`.
//! - Times are Unix milliseconds (UTC); ids are the server's integers.
//! - No type here ever carries a secret except [`CreatedToken::token`] and
//!   [`AgentRegistered`]'s absence of one: tokens are shown once, at creation.

mod agent;
mod public;

pub use agent::*;
pub use public::*;

/// The path prefix of this API version.
pub const API_PREFIX: &str = "/api/v1";

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;
