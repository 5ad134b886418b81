//! `keelson scan`: secrets, vulnerable dependencies, misconfigurations and SBOMs, reported as one
//! findings model.
//!
//! Invariant: scanners read the files they are given and the advisory index; they never touch the
//! network, the engine, the server or the database. Secrets never leave a scanner in plain text.

pub mod advisory;
pub mod baseline;
pub mod deps;
pub mod finding;
pub mod inventory;
pub mod lockfile;
pub mod misconfig;
pub mod report;
pub mod sbom;
pub mod secrets;
pub mod version;
pub mod walk;
