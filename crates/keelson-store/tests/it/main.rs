//! Integration tests of keelson-store: the backend contract suite (SQLite and PostgreSQL), the
//! blob store, and opening locations.

mod blob;
mod contract;
mod open;
mod send;
mod support;
