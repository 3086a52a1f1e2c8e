//! One place that turns the pure crates' errors into Postgres errors with the right SQLSTATE.

use airrep_core::vector::VectorError;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::prelude::*;

/// Raise `message` as an ERROR with the given five-character SQLSTATE. The report's
/// LOCATION is the caller's file and line (`#[track_caller]` all the way up).
#[track_caller]
pub fn raise(sqlstate: &str, message: &str) -> ! {
    pgrx::pg_sys::panic::ErrorReport::new(error_code(sqlstate), message.to_string(), "airrep")
        .report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Postgres' MAKE_SQLSTATE: six bits per character.
fn error_code(sqlstate: &str) -> PgSqlErrorCode {
    debug_assert_eq!(sqlstate.len(), 5, "SQLSTATEs have five characters");
    let packed = sqlstate.bytes().enumerate().fold(0i32, |code, (i, c)| {
        code | ((((c - b'0') & 0x3F) as i32) << (6 * i))
    });
    PgSqlErrorCode::from(packed)
}

/// Unwrap a core result, raising its error with the error's own SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, VectorError> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(value) => value,
            Err(e) => raise_vector(e),
        }
    }
}

#[track_caller]
pub fn raise_vector(e: VectorError) -> ! {
    raise(e.sqlstate(), &e.to_string())
}
