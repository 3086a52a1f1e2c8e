//! pgvector's binary wire form of a vector (`vector_send` / `vector_recv`), which
//! `airrep_vector` shares so that binary COPY and drivers move values between the two:
//! int16 dim, int16 unused (always 0), then `dim` float4s, all big-endian.

use std::fmt;

use crate::sqlstate;
use crate::vector::{check_dims, check_element, VectorError};

/// Why a binary message does not hold a vector.
#[derive(Debug, Clone, PartialEq)]
pub enum WireError {
    /// The message ends before the vector does.
    Truncated,
    /// The reserved field is not 0.
    UnusedNotZero(i16),
    /// The values are not a valid vector (no dimensions, too many, NaN, infinite).
    Value(VectorError),
}

impl WireError {
    /// The SQLSTATE pgvector raises: a short message is a protocol violation (08P01), a
    /// malformed header or a dimension count below 1 a data exception (22000).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            WireError::Truncated => sqlstate::PROTOCOL_VIOLATION,
            WireError::UnusedNotZero(_) | WireError::Value(VectorError::NoDimensions) => {
                sqlstate::DATA_EXCEPTION
            }
            WireError::Value(e) => e.sqlstate(),
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => f.write_str("insufficient data left in message"),
            WireError::UnusedNotZero(unused) => {
                write!(f, "expected unused to be 0, not {unused}")
            }
            WireError::Value(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for WireError {}

/// The wire bytes of `v`.
pub fn to_wire(v: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 4 * v.len());
    out.extend_from_slice(&(v.len() as i16).to_be_bytes());
    out.extend_from_slice(&0i16.to_be_bytes());
    for x in v {
        out.extend_from_slice(&x.to_be_bytes());
    }
    out
}

/// The vector at the start of `message`, checked like text input, and the bytes it took.
pub fn from_wire(message: &[u8]) -> Result<(Vec<f32>, usize), WireError> {
    let header = message.get(..4).ok_or(WireError::Truncated)?;
    let dim = i16::from_be_bytes([header[0], header[1]]);
    let unused = i16::from_be_bytes([header[2], header[3]]);
    if unused != 0 {
        return Err(WireError::UnusedNotZero(unused));
    }
    if dim < 1 {
        return Err(WireError::Value(VectorError::NoDimensions));
    }
    let dim = dim as usize;
    check_dims(dim).map_err(WireError::Value)?;
    let body = message.get(4..4 + 4 * dim).ok_or(WireError::Truncated)?;
    let values: Vec<f32> = body
        .chunks_exact(4)
        .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    for &x in &values {
        check_element(x).map_err(WireError::Value)?;
    }
    Ok((values, 4 + 4 * dim))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_what_it_took() {
        let v = [1.5f32, -0.0, 3e38, -1e-30];
        let mut message = to_wire(&v);
        assert_eq!(message[..4], [0, 4, 0, 0]);
        message.extend_from_slice(b"next field");
        let (back, used) = from_wire(&message).unwrap();
        assert_eq!(used, 4 + 16);
        assert_eq!(
            back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn rejects_malformed_messages_with_pgvector_sqlstates() {
        let cases: [(&[u8], &str, &str); 6] = [
            (&[0, 1], "08P01", "insufficient data left in message"),
            (
                &[0, 2, 0, 0, 0, 0, 0, 0],
                "08P01",
                "insufficient data left in message",
            ),
            (
                &[0, 1, 0, 7, 0, 0, 0, 0],
                "22000",
                "expected unused to be 0, not 7",
            ),
            (
                &[0, 0, 0, 0],
                "22000",
                "airrep_vector must have at least 1 dimension",
            ),
            (
                &[0xFF, 0xFF, 0, 0],
                "22000",
                "airrep_vector must have at least 1 dimension",
            ),
            (
                &[0, 1, 0, 0, 0x7F, 0xC0, 0, 0],
                "22023",
                "NaN not allowed in airrep_vector",
            ),
        ];
        for (message, sqlstate, text) in cases {
            let err = from_wire(message).unwrap_err();
            assert_eq!((err.sqlstate(), err.to_string().as_str()), (sqlstate, text));
        }
        let too_wide = to_wire(&vec![0.0; 16_001]);
        assert_eq!(
            from_wire(&too_wide).unwrap_err(),
            WireError::Value(VectorError::TooManyDimensions)
        );
    }
}
