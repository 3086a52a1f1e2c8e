//! One place that turns the pure crates' errors into Postgres errors with the right SQLSTATE.

use airrep_core::vector::VectorError;
use pgrx::pg_sys::errcodes::PgSqlErrorCode;
use pgrx::prelude::*;

/// The SQLSTATEs airrep raises, under Postgres' own names (src/backend/utils/errcodes.txt,
/// without the `ERRCODE_` prefix). Call sites name a code from here, never a literal.
pub mod sqlstate {
    /// The codes the pure crates report that the extension raises too (class 08, most of
    /// class 22), defined once there (`airrep_core::sqlstate`, with 2202E).
    pub use airrep_core::sqlstate::{
        DATA_EXCEPTION, INVALID_PARAMETER_VALUE, INVALID_TEXT_REPRESENTATION,
        NULL_VALUE_NOT_ALLOWED, NUMERIC_VALUE_OUT_OF_RANGE, PROTOCOL_VIOLATION,
    };
    /// Class 0A: feature not supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// Class 22: data exception (the rest of the class is the pure crates').
    pub const INVALID_BINARY_REPRESENTATION: &str = "22P03";
    /// Class 23: integrity constraint violation.
    pub const FOREIGN_KEY_VIOLATION: &str = "23503";
    pub const UNIQUE_VIOLATION: &str = "23505";
    /// Class 39: external routine invocation exception (a trigger function misused).
    pub const TRIGGER_PROTOCOL_VIOLATED: &str = "39P01";
    /// Class 42: syntax error or access rule violation.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const DUPLICATE_OBJECT: &str = "42710";
    pub const DATATYPE_MISMATCH: &str = "42804";
    /// Class 53: insufficient resources.
    pub const INSUFFICIENT_RESOURCES: &str = "53000";
    /// Class 54: program limit exceeded.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// Class 55: object not in prerequisite state.
    pub const OBJECT_NOT_IN_PREREQUISITE_STATE: &str = "55000";
    /// Class 57: operator intervention.
    pub const QUERY_CANCELED: &str = "57014";
    /// Class 58: system error (errors external to Postgres itself).
    pub const IO_ERROR: &str = "58030";
    pub const UNDEFINED_FILE: &str = "58P01";
    /// Class XX: internal error. Only for conditions no user input causes (SPI failures,
    /// broken invariants, tensor library failures).
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// Raise `message` as an ERROR with the given five-character SQLSTATE (one of [`sqlstate`]).
/// The report's LOCATION is the caller's file and line (`#[track_caller]` all the way up).
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

/// Unwrap a result, raising its error with the error's own SQLSTATE and message.
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

impl<T> OrRaise<T> for airrep_model::Result<T> {
    #[track_caller]
    fn or_raise(self) -> T {
        match self {
            Ok(value) => value,
            Err(e) => raise_model(e, ToString::to_string),
        }
    }
}

#[track_caller]
pub fn raise_vector(e: VectorError) -> ! {
    raise(e.sqlstate(), &e.to_string())
}

/// The SQLSTATE of an encoder error: the one place `airrep_model::Error` meets Postgres'
/// codes. Models are user data (imported, loaded or trained by users), so a model that
/// cannot be read or run is the user's invalid parameter, not an internal error; only the
/// tensor library's own failures are internal.
pub fn model_sqlstate(e: &airrep_model::Error) -> &'static str {
    use airrep_model::Error;
    match e {
        Error::Config(_) | Error::Checkpoint(_) | Error::Tokenizer(_) => {
            sqlstate::INVALID_PARAMETER_VALUE
        }
        Error::Input(_) | Error::Device(_) => sqlstate::INVALID_PARAMETER_VALUE,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            sqlstate::UNDEFINED_FILE
        }
        Error::Io { .. } => sqlstate::IO_ERROR,
        Error::Cancelled => sqlstate::QUERY_CANCELED,
        Error::Overflow { .. } => sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        Error::Candle(_) => sqlstate::INTERNAL_ERROR,
    }
}

/// Raise an encoder error with [`model_sqlstate`] and the message `message` words for it.
/// A cancel first lets Postgres raise its own error (which names the cause: user request
/// or statement timeout); `message` is the fallback when no interrupt is pending.
#[track_caller]
pub fn raise_model(
    e: airrep_model::Error,
    message: impl FnOnce(&airrep_model::Error) -> String,
) -> ! {
    if matches!(e, airrep_model::Error::Cancelled) {
        pgrx::check_for_interrupts!();
    }
    raise(model_sqlstate(&e), &message(&e))
}
