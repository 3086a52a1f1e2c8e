//! One error type for everything the encoder can reject: bad files, bad input, and
//! failures inside candle. Callers (a Postgres backend) turn it into an ERROR, so every
//! message names the offending file, tensor or text.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// config.json is malformed or describes a model we do not run.
    Config(String),
    /// The safetensors weights do not match the configuration.
    Checkpoint(String),
    /// tokenizer.json could not be loaded or applied.
    Tokenizer(String),
    /// A caller-supplied argument is out of range.
    Input(String),
    /// The requested device or precision is unknown, not compiled in, or unusable.
    Device(String),
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    Candle(candle_core::Error),
    /// A dot product of finite vectors left f32's range; `row` is the row of the block
    /// scored.
    Overflow {
        row: usize,
    },
    /// The caller's interrupt check asked a long computation to stop (e.g. a query cancel).
    Cancelled,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(msg) => write!(f, "model config: {msg}"),
            Error::Checkpoint(msg) => write!(f, "model weights: {msg}"),
            Error::Tokenizer(msg) => write!(f, "tokenizer: {msg}"),
            Error::Input(msg) => write!(f, "invalid input: {msg}"),
            Error::Device(msg) => write!(f, "device: {msg}"),
            Error::Io { path, source } => write!(f, "reading {}: {source}", path.display()),
            Error::Candle(err) => write!(f, "tensor computation: {err}"),
            Error::Overflow { row } => write!(
                f,
                "a dot product with row {row} of the block overflows float4"
            ),
            Error::Cancelled => write!(f, "cancelled on request"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Candle(err) => Some(err),
            _ => None,
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error::Candle(err)
    }
}
