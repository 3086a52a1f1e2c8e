//! One place that turns the pure crates' errors into Postgres errors with the right SQLSTATE.

use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use airrep_core::vector::VectorError;
use pgrx::prelude::*;

/// Raise `message` as an ERROR with the given five-character SQLSTATE.
pub fn raise(sqlstate: &str, message: &str) -> ! {
    let code = match sqlstate {
        "22P02" => PgSqlErrorCode::ERRCODE_INVALID_TEXT_REPRESENTATION,
        "22003" => PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        "22004" => PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        "2202E" => PgSqlErrorCode::ERRCODE_ARRAY_ELEMENT_ERROR,
        "22023" => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "22000" => PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
        "08P01" => PgSqlErrorCode::ERRCODE_PROTOCOL_VIOLATION,
        "42501" => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
        "42704" => PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        "42710" => PgSqlErrorCode::ERRCODE_DUPLICATE_OBJECT,
        "58P01" => PgSqlErrorCode::ERRCODE_UNDEFINED_FILE,
        "0A000" => PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        _ => PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
    };
    pgrx::pg_sys::panic::ErrorReport::new(code, message.to_string(), "airrep").report(PgLogLevel::ERROR);
    unreachable!("an ERROR report does not return")
}

/// Unwrap a core result, raising its error with the error's own SQLSTATE.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, VectorError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| raise_vector(e))
    }
}

pub fn raise_vector(e: VectorError) -> ! {
    raise(e.sqlstate(), &e.to_string())
}
