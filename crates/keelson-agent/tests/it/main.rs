//! Integration tests of the agent against an in-process server that implements the agent
//! protocol faithfully (`server.rs`), with real `git` repositories and real processes.

mod artifacts;
mod deployments;
mod runs;
mod server;
mod support;
