//! Integration tests of keelson-pipeline.

mod deploy;
mod expr_props;
mod load_props;
mod purity;
mod server_keys;
mod validate;
