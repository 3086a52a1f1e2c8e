//! The SQLSTATEs of the errors this crate reports, under Postgres' own names
//! (src/backend/utils/errcodes.txt, without the `ERRCODE_` prefix). The crate has no
//! dependencies, so it names them here; the extension's `error::sqlstate` re-exports these
//! and adds its own, and call sites in either name a code, never a literal.

/// Class 08: connection exception (a binary value shorter than its header says).
pub const PROTOCOL_VIOLATION: &str = "08P01";
/// Class 22: data exception.
pub const DATA_EXCEPTION: &str = "22000";
pub const NUMERIC_VALUE_OUT_OF_RANGE: &str = "22003";
pub const NULL_VALUE_NOT_ALLOWED: &str = "22004";
pub const ARRAY_SUBSCRIPT_ERROR: &str = "2202E";
pub const INVALID_PARAMETER_VALUE: &str = "22023";
pub const INVALID_TEXT_REPRESENTATION: &str = "22P02";
