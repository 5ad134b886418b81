//! Integration tests of the `keelson` binary: real pipelines run by the built binary, with real
//! bash processes, temporary projects and data directories (see `support`).

mod artifacts;
mod build;
mod cache;
mod cli;
mod conditions;
mod containers;
mod dag;
mod deploy;
mod env;
mod init;
mod masking;
mod matrix;
mod outputs;
mod retries;
mod scan;
mod server;
mod signals;
mod step_cache;
mod steps;
mod support;
mod timeouts;
mod ui;
mod workspace;
