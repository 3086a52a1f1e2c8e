//! Helpers shared by the `#[pg_test]` modules under `src/tests/`.

use pgrx::prelude::*;

/// Where scripts/test.sh stages model directories the server's OS user can read.
pub const FIXTURES: &str = match option_env!("AIRREP_FIXTURES") {
    Some(dir) => dir,
    None => "/tmp/airrep-fixtures",
};

/// The message of the Postgres error `f` raises, or "no error".
pub fn error_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    PgTryBuilder::new(move || {
        f();
        String::from("no error")
    })
    .catch_others(|e| match e {
        pg_sys::panic::CaughtError::PostgresError(report)
        | pg_sys::panic::CaughtError::ErrorReport(report) => report.message().to_string(),
        other => format!("{other:?}"),
    })
    .execute()
}

/// The message of the error `query` raises, or "no error".
pub fn sql_error(query: &str) -> String {
    let query = query.to_string();
    error_message(move || Spi::run(&query).unwrap())
}

pub fn one_f64(query: &str) -> f64 {
    Spi::get_one::<f64>(query)
        .expect(query)
        .expect("non-null result")
}

pub fn count(query: &str) -> i64 {
    Spi::get_one::<i64>(query)
        .expect(query)
        .expect("non-null count")
}
