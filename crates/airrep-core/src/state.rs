//! The byte form of aggregate states, which Postgres ships between parallel workers (and
//! Citus between nodes): little-endian, fixed layout, and decoding that fails cleanly on
//! bytes that were truncated or not written by `to_bytes`.

use std::fmt;

/// A serialised aggregate state that does not decode.
#[derive(Debug, Clone, PartialEq)]
pub struct StateError(pub &'static str);

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for StateError {}

pub(crate) fn put_u64(out: &mut Vec<u8>, x: u64) {
    out.extend_from_slice(&x.to_le_bytes());
}

pub(crate) fn put_f64s<'a>(out: &mut Vec<u8>, xs: impl IntoIterator<Item = &'a f64>) {
    for x in xs {
        out.extend_from_slice(&x.to_le_bytes());
    }
}

/// Little-endian reads from a byte slice, failing cleanly on truncation.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], StateError> {
        let (head, rest) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(StateError("truncated state"))?;
        self.0 = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, StateError> {
        self.take().map(u8::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, StateError> {
        self.take().map(u32::from_le_bytes)
    }

    /// `n` f32s, checked against the remaining bytes before allocating (as [`Reader::f64s`]).
    pub(crate) fn f32s(&mut self, n: u64) -> Result<Vec<f32>, StateError> {
        if n > (self.0.len() / 4) as u64 {
            return Err(StateError("truncated state"));
        }
        (0..n)
            .map(|_| self.take().map(f32::from_le_bytes))
            .collect()
    }

    /// The bytes not read yet.
    pub(crate) fn rest(self) -> &'a [u8] {
        self.0
    }

    pub(crate) fn u64(&mut self) -> Result<u64, StateError> {
        self.take().map(u64::from_le_bytes)
    }

    /// `n` f64s; a count the remaining bytes cannot hold fails before allocating, so a
    /// corrupt count cannot ask for terabytes.
    pub(crate) fn f64s(&mut self, n: u64) -> Result<Vec<f64>, StateError> {
        self.values(n, f64::from_le_bytes)
    }

    fn values<T, const N: usize>(
        &mut self,
        n: u64,
        decode: fn([u8; N]) -> T,
    ) -> Result<Vec<T>, StateError> {
        if n > (self.0.len() / N) as u64 {
            return Err(StateError("truncated state"));
        }
        (0..n).map(|_| self.take().map(decode)).collect()
    }

    pub(crate) fn finish(self) -> Result<(), StateError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StateError("trailing bytes in state"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_what_was_written() {
        let mut bytes = Vec::new();
        put_u64(&mut bytes, 2);
        put_f64s(&mut bytes, &[1.5, -0.0]);
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u64(), Ok(2));
        assert_eq!(
            reader
                .f64s(2)
                .map(|v| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
            Ok(vec![1.5f64.to_bits(), (-0.0f64).to_bits()])
        );
        assert_eq!(reader.finish(), Ok(()));
    }

    #[test]
    fn rejects_truncation_huge_counts_and_trailing_bytes() {
        assert_eq!(
            Reader::new(&[0; 7]).u64(),
            Err(StateError("truncated state"))
        );
        assert_eq!(
            Reader::new(&[0; 16]).f64s(u64::MAX),
            Err(StateError("truncated state"))
        );
        assert_eq!(
            Reader::new(&[0; 1]).finish(),
            Err(StateError("trailing bytes in state"))
        );
    }
}
