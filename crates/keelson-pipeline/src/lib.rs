//! Keelson pipeline files: YAML with spans → validated model → expanded plan (a DAG of jobs),
//! the `${{ }}` expression language and diagnostics with file:line:column.
//!
//! Invariant: this crate is pure. It never touches the file system, the network or processes;
//! includes are read through the [`load::SourceLoader`] trait the caller implements.

pub mod builtin;
pub mod deploy;
pub mod deploy_load;
pub mod deploy_lower;
pub mod diag;
pub mod duration;
pub mod expr;
pub mod glob;
pub mod load;
pub mod model;
pub mod plan;
pub mod source;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Diagnostics};
pub use model::{Concurrency, GitContext, Job, Pipeline, Step, Triggers};
pub use source::{SourceMap, Span};
