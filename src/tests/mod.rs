//! Tests that need a running Postgres (`cargo pgrx test`, through scripts/test.sh), one file
//! per kind. Each file's `#[pg_schema] mod tests` puts its `#[pg_test]` functions in schema
//! `tests`, where pgrx's harness calls them; `support` holds the helpers they share.

mod encode;
mod support;
mod train;
mod vector;
