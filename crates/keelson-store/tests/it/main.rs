//! Integration tests of keelson-store: the backend contract suite (SQLite and PostgreSQL), the
//! blob store, opening locations, and PostgreSQL over TLS.

mod blob;
mod contract;
mod open;
mod send;
mod support;
mod tls;
