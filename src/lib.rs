//! airrep: AirRep training data attribution inside PostgreSQL.
//!
//! This crate is the thin SQL layer. The math lives in `airrep-core` and the encoder in
//! `airrep-model`; everything here converts between Postgres datums and Rust values and
//! turns errors into `ereport`s.

use pgrx::prelude::*;

mod aggstate;
mod contamination;
mod datum;
mod embedding_jobs;
mod encode;
mod error;
mod evaluate;
mod group_influence;
mod gucs;
mod labels;
mod near_duplicates;
mod pgvector;
mod registry;
mod relation;
mod retired;
mod runtime;
mod scan;
mod search;
mod select_data;
mod top_k;
mod train;
mod vector_agg;
mod vector_ops;
mod vector_type;
mod worker;

::pgrx::pg_module_magic!(name, version);

// The shell type lets the I/O functions name `airrep_vector` before `CREATE TYPE` completes it.
// Texts cross into Rust as UTF-8 without conversion, so a database of another encoding is
// refused here, by name, rather than failing later on its first non-ASCII text.
extension_sql!(
    r#"
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'airrep needs a UTF8 database: database "%" has encoding %',
                        pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
            USING ERRCODE = 'feature_not_supported',
                  HINT = 'Create the database WITH ENCODING ''UTF8'' (TEMPLATE template0) and install airrep there.';
    END IF;
END
$$;
CREATE SCHEMA IF NOT EXISTS airrep;
CREATE TYPE airrep_vector;
"#,
    name = "bootstrap",
    bootstrap
);

/// Management functions and the model registry live in schema `airrep`.
#[pg_schema]
mod airrep {}

/// Runs in every backend that loads the library (and in the postmaster with
/// shared_preload_libraries): register settings; pools and models are created lazily. Only
/// while the postmaster preloads it: the embedding worker's shared memory and launcher.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    gucs::register();
    // SAFETY: a plain read of a postmaster global.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        worker::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod tests;

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
