//! Integration tests of keelson-pipeline.

mod expr_props;
mod validate;
mod load_props;
mod purity;
