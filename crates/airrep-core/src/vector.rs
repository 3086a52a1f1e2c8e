//! The rules of an `airrep_vector` value, modelled on pgvector's vector.c: text form,
//! element and dimension checks, and the arithmetic the SQL operators expose.

use std::fmt::{self, Write};

use crate::sqlstate;
use crate::state::{self, Reader, StateError};

/// The most dimensions a vector may have (pgvector's limit too).
pub const MAX_DIM: usize = 16000;

/// Why a value is not a valid `airrep_vector`; Display gives pgvector's messages.
#[derive(Debug, Clone, PartialEq)]
pub enum VectorError {
    /// The whole text input, which is not `[n, ...]`.
    InvalidSyntax(String),
    NaN,
    Infinite,
    /// A number (its text) beyond float4's range.
    OutOfRange(String),
    NoDimensions,
    TooManyDimensions,
    /// A value's length against its column's `airrep_vector(n)`.
    TypmodMismatch {
        expected: usize,
        actual: usize,
    },
    DifferentDimensions(usize, usize),
    TypmodTooSmall,
    TypmodTooLarge,
    ArrayHasNulls,
    ArrayNotOneDimensional,
    /// Arithmetic whose result is beyond float4's range.
    Overflow,
}

impl VectorError {
    /// The five-character SQLSTATE to raise: text that is not a vector is 22P02, numbers out
    /// of range 22003, operands of different lengths 22000 (data_exception, as pgvector),
    /// everything else about the value 22023 (invalid_parameter_value).
    pub fn sqlstate(&self) -> &'static str {
        match self {
            VectorError::InvalidSyntax(_) => sqlstate::INVALID_TEXT_REPRESENTATION,
            VectorError::OutOfRange(_) | VectorError::Overflow => {
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
            }
            VectorError::ArrayHasNulls => sqlstate::NULL_VALUE_NOT_ALLOWED,
            VectorError::ArrayNotOneDimensional => sqlstate::ARRAY_SUBSCRIPT_ERROR,
            VectorError::TypmodMismatch { .. } | VectorError::DifferentDimensions(..) => {
                sqlstate::DATA_EXCEPTION
            }
            _ => sqlstate::INVALID_PARAMETER_VALUE,
        }
    }
}

impl fmt::Display for VectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VectorError::InvalidSyntax(input) => {
                // Quote at most the start of the input: an error must not echo megabytes.
                const SHOWN: usize = 64;
                let (shown, more) = match input.char_indices().nth(SHOWN) {
                    Some((end, _)) => (&input[..end], "..."),
                    None => (input.as_str(), ""),
                };
                write!(
                    f,
                    "invalid input syntax for type airrep_vector: \"{shown}{more}\""
                )
            }
            VectorError::NaN => write!(f, "NaN not allowed in airrep_vector"),
            VectorError::Infinite => write!(f, "infinite value not allowed in airrep_vector"),
            VectorError::OutOfRange(token) => {
                write!(f, "\"{token}\" is out of range for type airrep_vector")
            }
            VectorError::NoDimensions => write!(f, "airrep_vector must have at least 1 dimension"),
            VectorError::TooManyDimensions => {
                write!(
                    f,
                    "airrep_vector cannot have more than {MAX_DIM} dimensions"
                )
            }
            VectorError::TypmodMismatch { expected, actual } => {
                write!(f, "expected {expected} dimensions, not {actual}")
            }
            VectorError::DifferentDimensions(a, b) => {
                write!(f, "different airrep_vector dimensions {a} and {b}")
            }
            VectorError::TypmodTooSmall => {
                write!(f, "dimensions for type airrep_vector must be at least 1")
            }
            VectorError::TypmodTooLarge => {
                write!(
                    f,
                    "dimensions for type airrep_vector cannot exceed {MAX_DIM}"
                )
            }
            VectorError::ArrayHasNulls => write!(f, "array must not contain nulls"),
            VectorError::ArrayNotOneDimensional => write!(f, "array must be 1-D"),
            VectorError::Overflow => write!(f, "value out of range: overflow"),
        }
    }
}

impl std::error::Error for VectorError {}

/// Parse the text form `[1,2,3]`; whitespace may surround brackets, numbers and commas.
pub fn parse(text: &str) -> Result<Vec<f32>, VectorError> {
    let syntax = || VectorError::InvalidSyntax(text.to_string());
    let inner = text
        .trim_matches(is_space)
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or_else(syntax)?;
    if inner.trim_matches(is_space).is_empty() {
        return Err(VectorError::NoDimensions);
    }
    let mut values = Vec::new();
    for token in inner.split(',') {
        let token = token.trim_matches(is_space);
        if values.len() == MAX_DIM {
            return Err(VectorError::TooManyDimensions);
        }
        values.push(parse_element(token).ok_or_else(syntax)??);
    }
    Ok(values)
}

/// Postgres' scanner_isspace: the whitespace pgvector skips.
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// One element: None for bad syntax, Some(Err) for a number that is not a finite float4.
/// Accepts what strtof accepts in pgvector (decimal and exponent forms, `nan`, `inf`,
/// `infinity`), then rejects the non-finite ones with pgvector's messages.
fn parse_element(token: &str) -> Option<Result<f32, VectorError>> {
    let unsigned = token.strip_prefix(['+', '-']).unwrap_or(token);
    let is = |word: &str| unsigned.eq_ignore_ascii_case(word);
    if is("nan") {
        return Some(Err(VectorError::NaN));
    }
    if is("inf") || is("infinity") {
        return Some(Err(VectorError::Infinite));
    }
    if !is_decimal(unsigned) {
        return None;
    }
    // Straight to f32 like strtof: going through f64 would round twice.
    let value: f32 = token.parse().ok()?;
    if value.is_infinite() {
        return Some(Err(VectorError::OutOfRange(token.to_string())));
    }
    Some(Ok(value))
}

/// `digits[.digits][e[+-]digits]` with at least one digit in the mantissa.
fn is_decimal(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

/// The text form, each element as Postgres prints a float4 (and so pgvector): the shortest
/// decimal that reads back to the same bits, in exponent form below 1e-4 and from 1e6 on.
pub fn format(v: &[f32]) -> String {
    let mut out = String::with_capacity(2 + v.len() * 10);
    let mut scientific = String::new();
    out.push('[');
    for (i, &x) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_float4(&mut out, &mut scientific, x);
    }
    out.push(']');
    out
}

/// Rust's `{:e}` and `{}` both give the shortest round-trip digits; pick the notation by
/// Postgres' rule (printf %g's thresholds for float4's 6 digits) and write its `e+06` exponent.
fn push_float4(out: &mut String, scratch: &mut String, x: f32) {
    scratch.clear();
    write!(scratch, "{x:e}").expect("writing to a String cannot fail");
    let (mantissa, exponent) = scratch
        .split_once('e')
        .expect("{:e} always writes an exponent");
    let exponent: i32 = exponent.parse().expect("{:e} writes an integer exponent");
    if (-4..6).contains(&exponent) {
        write!(out, "{x}")
    } else {
        let sign = if exponent < 0 { '-' } else { '+' };
        write!(out, "{mantissa}e{sign}{:02}", exponent.unsigned_abs())
    }
    .expect("writing to a String cannot fail");
}

/// A finite float4: NaN and infinities are not vector elements.
pub fn check_element(x: f32) -> Result<(), VectorError> {
    if x.is_nan() {
        Err(VectorError::NaN)
    } else if x.is_infinite() {
        Err(VectorError::Infinite)
    } else {
        Ok(())
    }
}

/// Between 1 and MAX_DIM elements.
pub fn check_dims(n: usize) -> Result<(), VectorError> {
    match n {
        0 => Err(VectorError::NoDimensions),
        n if n > MAX_DIM => Err(VectorError::TooManyDimensions),
        _ => Ok(()),
    }
}

/// A value stored in a column declared `airrep_vector(typmod_dims)`.
pub fn check_typmod(typmod_dims: usize, actual: usize) -> Result<(), VectorError> {
    if typmod_dims == actual {
        Ok(())
    } else {
        Err(VectorError::TypmodMismatch {
            expected: typmod_dims,
            actual,
        })
    }
}

/// Both operands of a binary operator have the same length.
pub fn check_same_dims(a: usize, b: usize) -> Result<(), VectorError> {
    if a == b {
        Ok(())
    } else {
        Err(VectorError::DifferentDimensions(a, b))
    }
}

/// Lanes of independent accumulators: lets the compiler keep the loop in SIMD registers.
/// The lanes and their final order are fixed, so every tier gives the same bits.
const LANES: usize = 8;

/// Σ f(a_i, b_i) in f64. Products of f32s are exact in f64, so a score keeps its precision
/// when a group's scores nearly cancel.
#[inline(always)]
fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f64, f64) -> f64) -> f64 {
    assert_eq!(a.len(), b.len(), "check_same_dims before combining vectors");
    let mut acc = [0.0f64; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| f(x as f64, y as f64))
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += f(x[lane] as f64, y[lane] as f64);
        }
    }
    acc.iter().sum::<f64>() + tail
}

crate::simd_fn! {
    /// Inner product, accumulated in f64 so large scores keep their precision: exact
    /// products, relative error below `n · 2⁻⁵³` of `Σ|a_i·b_i|`. Widening f32 to f64 is
    /// the bottleneck, which the AVX2 and AVX-512 tiers do 4 and 8 lanes at a time; the
    /// bits are the same on every tier.
    pub fn dot(a: &[f32], b: &[f32]) -> f64 {
        lane_sum(a, b, |x, y| x * y)
    }
}

crate::simd_fn! {
    /// Σ (a_i − b_i)², the differences and their squares in f64; the same bits on every
    /// tier.
    fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
        lane_sum(a, b, |x, y| (x - y) * (x - y))
    }
}

/// Accumulators of [`dot_f32`]: four vectors, enough to hide the latency of a fused
/// multiply-add.
const DOT_VECTORS: usize = 4;

crate::simd_fn! {
    /// Inner product at the speed of pgvector's: products accumulated in f32 lanes
    /// (`4 · W` lanes, `W` the tier's width: 8 portable and AVX2, 16 AVX-512; fused
    /// multiply-adds on AVX2 and AVX-512), the lanes summed in f64. Each lane sums at most
    /// `n/(4W) + 3` products, so with `u = 2⁻²⁴`, on every tier,
    ///
    /// `|dot_f32(a, b) − a·b| <= (n/16 + 8) · u · Σ|a_i·b_i|`  (to first order in u),
    ///
    /// the same order as pgvector's `<#>` (f32 sums) and, for n = 384, 32 units in the
    /// last place of `Σ|a_i·b_i|`. The tiers differ by rounding only. Used per row by
    /// `influence` and `group_influence`, whose group sums stay in f64.
    pub fn dot_f32(a: &[f32], b: &[f32]) -> f64 where L: Lanes {
        assert_eq!(a.len(), b.len(), "check_same_dims before combining vectors");
        let (n, w) = (a.len(), L::WIDTH);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        // SAFETY: this copy runs on L's tier; every load reads within a and b (i + w <= n,
        // the partial load n - i < w floats).
        unsafe {
            let mut acc = [L::zero(); DOT_VECTORS];
            let mut i = 0;
            while i + DOT_VECTORS * w <= n {
                for (j, acc) in acc.iter_mut().enumerate() {
                    let at = i + j * w;
                    *acc = L::mul_add(L::load(pa.add(at)), L::load(pb.add(at)), *acc);
                }
                i += DOT_VECTORS * w;
            }
            while i + w <= n {
                acc[0] = L::mul_add(L::load(pa.add(i)), L::load(pb.add(i)), acc[0]);
                i += w;
            }
            if i < n {
                let (x, y) = (L::load_partial(pa.add(i), n - i), L::load_partial(pb.add(i), n - i));
                acc[1] = L::mul_add(x, y, acc[1]);
            }
            L::sum(L::add(L::add(acc[0], acc[1]), L::add(acc[2], acc[3])))
        }
    }
}

/// Euclidean length.
pub fn norm(v: &[f32]) -> f64 {
    dot(v, v).sqrt()
}

/// Euclidean distance, with the differences and their squares in f64.
pub fn l2_distance(a: &[f32], b: &[f32]) -> f64 {
    squared_distance(a, b).sqrt()
}

/// 1 - cos(a, b), clamped to [0, 2]; NaN when either vector is zero (0/0), as in pgvector,
/// so that ORDER BY puts such rows last.
pub fn cosine_distance(a: &[f32], b: &[f32]) -> f64 {
    let similarity = dot(a, b) / (dot(a, a) * dot(b, b)).sqrt();
    1.0 - similarity.clamp(-1.0, 1.0)
}

/// cos(a, b) in f64, clamped to [-1, 1]; None when either vector is zero (similar to
/// nothing). A vector with itself, or with a copy scaled by a power of two, gives exactly 1:
/// the products are exact and `sqrt(x·x) = x` in IEEE arithmetic.
pub fn cosine(a: &[f32], b: &[f32]) -> Option<f64> {
    let norms = dot(a, a) * dot(b, b);
    (norms > 0.0).then(|| (dot(a, b) / norms.sqrt()).clamp(-1.0, 1.0))
}

/// Element by element in f32 like pgvector; a result beyond float4's range is an error, not
/// an infinite element.
fn elementwise(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> Result<Vec<f32>, VectorError> {
    check_same_dims(a.len(), b.len())?;
    let out: Vec<f32> = a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
    if out.iter().any(|x| x.is_infinite()) {
        return Err(VectorError::Overflow);
    }
    Ok(out)
}

/// Elementwise sum; different lengths or a result beyond float4's range are errors.
pub fn add(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    elementwise(a, b, |x, y| x + y)
}

/// Elementwise difference; different lengths or a result beyond float4's range are errors.
pub fn sub(a: &[f32], b: &[f32]) -> Result<Vec<f32>, VectorError> {
    elementwise(a, b, |x, y| x - y)
}

/// The running state of `sum(airrep_vector)` and `avg(airrep_vector)`: f64 sums so that
/// parallel partial states combine to the serial result.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSum {
    count: u64,
    sums: Vec<f64>,
}

impl VectorSum {
    /// An empty state for vectors of `dims` elements.
    pub fn new(dims: usize) -> Self {
        VectorSum {
            count: 0,
            sums: vec![0.0; dims],
        }
    }

    pub fn push(&mut self, v: &[f32]) -> Result<(), VectorError> {
        check_same_dims(self.sums.len(), v.len())?;
        for (s, &x) in self.sums.iter_mut().zip(v) {
            *s += x as f64;
        }
        self.count += 1;
        Ok(())
    }

    /// Add another partial state; an empty one merges whatever its dims.
    pub fn merge(&mut self, other: &VectorSum) -> Result<(), VectorError> {
        if other.count == 0 {
            return Ok(());
        }
        if self.count == 0 {
            self.clone_from(other);
            return Ok(());
        }
        check_same_dims(self.sums.len(), other.sums.len())?;
        for (s, o) in self.sums.iter_mut().zip(&other.sums) {
            *s += o;
        }
        self.count += other.count;
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum as float4s; a component beyond float4's range is an overflow error.
    pub fn sum(&self) -> Result<Vec<f32>, VectorError> {
        let out: Vec<f32> = self.sums.iter().map(|&s| s as f32).collect();
        if out.iter().any(|x| x.is_infinite()) {
            return Err(VectorError::Overflow);
        }
        Ok(out)
    }

    /// The mean as float4s (always in range: a mean lies within its inputs); NaN elements for
    /// an empty state, for which SQL returns NULL without asking.
    pub fn avg(&self) -> Vec<f32> {
        self.sums
            .iter()
            .map(|&s| (s / self.count as f64) as f32)
            .collect()
    }

    /// Little-endian: count, dims, then the sums.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 8 * self.sums.len());
        state::put_u64(&mut out, self.count);
        state::put_u64(&mut out, self.sums.len() as u64);
        state::put_f64s(&mut out, &self.sums);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let mut reader = Reader::new(bytes);
        let count = reader.u64()?;
        let dims = reader.u64()?;
        if dims > MAX_DIM as u64 {
            return Err(StateError("too many dimensions in state"));
        }
        let sums = reader.f64s(dims)?;
        reader.finish()?;
        Ok(VectorSum { count, sums })
    }
}

/// A [`VectorSum`] in its byte form, updated where it lies: an aggregate's transition
/// value adds one vector per row without being decoded and encoded again.
pub struct EncodedVectorSum<'a> {
    count: &'a mut [u8; 8],
    sums: &'a mut [u8],
}

impl<'a> EncodedVectorSum<'a> {
    /// Checks that `bytes` has the layout of [`VectorSum::to_bytes`], in time that does not
    /// grow with the dimensions.
    pub fn new(bytes: &'a mut [u8]) -> Result<Self, StateError> {
        let (count, rest) = bytes
            .split_first_chunk_mut::<8>()
            .ok_or(StateError("truncated state"))?;
        let (dims, sums) = rest
            .split_first_chunk_mut::<8>()
            .ok_or(StateError("truncated state"))?;
        let dims = u64::from_le_bytes(*dims);
        if dims > MAX_DIM as u64 || sums.len() as u64 != 8 * dims {
            return Err(StateError("state length does not match its dimensions"));
        }
        Ok(EncodedVectorSum { count, sums })
    }

    pub fn push(&mut self, v: &[f32]) -> Result<(), VectorError> {
        check_same_dims(self.sums.len() / 8, v.len())?;
        for (s, &x) in self.sums.chunks_exact_mut(8).zip(v) {
            let sum = f64::from_le_bytes(s.try_into().expect("chunks of 8")) + x as f64;
            s.copy_from_slice(&sum.to_le_bytes());
        }
        *self.count = (u64::from_le_bytes(*self.count) + 1).to_le_bytes();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{with_tier, Tier};

    #[test]
    fn an_encoded_sum_grows_as_the_decoded_one() {
        let rows = [[1.0f32, -2.5, 3.0], [0.25, 4.0, -1.0], [1e30, 0.0, 7.0]];
        let mut decoded = VectorSum::new(3);
        let mut bytes = decoded.to_bytes();
        for row in &rows {
            decoded.push(row).unwrap();
            EncodedVectorSum::new(&mut bytes)
                .unwrap()
                .push(row)
                .unwrap();
        }
        assert_eq!(VectorSum::from_bytes(&bytes).unwrap(), decoded);
        assert_eq!(
            EncodedVectorSum::new(&mut bytes).unwrap().push(&[1.0, 2.0]),
            Err(VectorError::DifferentDimensions(3, 2))
        );
        for cut in [0, 8, bytes.len() - 1] {
            assert!(EncodedVectorSum::new(&mut bytes.clone()[..cut]).is_err());
        }
    }

    #[test]
    fn parses_with_spaces_and_exponents() {
        assert_eq!(
            parse(" [ 1 , 2.5e3,-3 ] ").unwrap(),
            vec![1.0, 2500.0, -3.0]
        );
        assert_eq!(parse("[.5,5.,+1E-2]").unwrap(), vec![0.5, 5.0, 0.01]);
        assert_eq!(
            parse("[1e-50]").unwrap(),
            vec![0.0],
            "underflow reads as zero, like strtof"
        );
    }

    #[test]
    fn rounds_once_like_strtof() {
        // Just above the midpoint 1 + 2^-24: via f64 it would round to the midpoint, then to 1.
        assert_eq!(
            parse("[1.0000000596046448]").unwrap(),
            vec![1.0 + f32::EPSILON]
        );
    }

    #[test]
    fn rejects_with_pgvector_messages() {
        let message = |t: &str| parse(t).unwrap_err().to_string();
        for bad in [
            "[1,2", "1,2", "[1,,2]", "[1,2,]", "[1] x", "[hello]", "[1 2]", "", "[1e]", "[.]",
            "[0x10]",
        ] {
            assert_eq!(
                message(bad),
                format!("invalid input syntax for type airrep_vector: \"{bad}\"")
            );
        }
        assert_eq!(
            message("[]"),
            "airrep_vector must have at least 1 dimension"
        );
        assert_eq!(
            message("[ ]"),
            "airrep_vector must have at least 1 dimension"
        );
        assert_eq!(message("[NaN]"), "NaN not allowed in airrep_vector");
        assert_eq!(
            message("[-Infinity]"),
            "infinite value not allowed in airrep_vector"
        );
        assert_eq!(
            message("[1e39]"),
            "\"1e39\" is out of range for type airrep_vector"
        );
        let too_many = format!("[{}]", vec!["0"; MAX_DIM + 1].join(","));
        assert_eq!(
            message(&too_many),
            "airrep_vector cannot have more than 16000 dimensions"
        );
        assert_eq!(
            parse(&format!("[{}]", vec!["0"; MAX_DIM].join(",")))
                .unwrap()
                .len(),
            MAX_DIM
        );
    }

    #[test]
    fn formats_like_postgres_float4() {
        assert_eq!(
            format(&[1.0, -2.5, 0.1, 1e30, 1e-7, -0.0]),
            "[1,-2.5,0.1,1e+30,1e-07,-0]"
        );
        assert_eq!(
            format(&[123456.0, 1234567.0, 1e-4, 1.5e-5, 0.0]),
            "[123456,1.234567e+06,0.0001,1.5e-05,0]"
        );
        assert_eq!(format(&[f32::MAX, -1e-45]), "[3.4028235e+38,-1e-45]");
    }

    #[test]
    fn syntax_errors_quote_only_the_start_of_the_input() {
        let huge = format!("[x{}]", ",1".repeat(1_000_000));
        let message = parse(&huge).unwrap_err().to_string();
        assert!(message.len() < 150, "{} bytes", message.len());
        assert!(message.ends_with("...\""), "{message}");
        assert_eq!(
            parse("[1,x]").unwrap_err().to_string(),
            "invalid input syntax for type airrep_vector: \"[1,x]\""
        );
    }

    #[test]
    fn errors_carry_sqlstates() {
        assert_eq!(parse("[x]").unwrap_err().sqlstate(), "22P02");
        assert_eq!(parse("[1e39]").unwrap_err().sqlstate(), "22003");
        assert_eq!(check_same_dims(2, 3).unwrap_err().sqlstate(), "22000");
        assert_eq!(
            check_typmod(2, 3).unwrap_err().to_string(),
            "expected 2 dimensions, not 3"
        );
        assert_eq!(check_element(f32::NAN).unwrap_err().sqlstate(), "22023");
        assert_eq!(VectorError::ArrayNotOneDimensional.sqlstate(), "2202E");
        assert_eq!(VectorError::ArrayHasNulls.sqlstate(), "22004");
        for e in [
            VectorError::TypmodTooSmall,
            VectorError::TooManyDimensions,
            VectorError::Overflow,
        ] {
            assert_eq!(e.sqlstate().len(), 5, "{e}");
        }
    }

    #[test]
    fn elementwise_checks_dims_and_overflow() {
        assert_eq!(add(&[1.0, 2.0], &[0.5, -2.0]), Ok(vec![1.5, 0.0]));
        assert_eq!(
            sub(&[1.0], &[1.0, 2.0]),
            Err(VectorError::DifferentDimensions(1, 2))
        );
        assert_eq!(
            add(&[f32::MAX], &[f32::MAX]).unwrap_err().to_string(),
            "value out of range: overflow"
        );
        assert_eq!(sub(&[f32::MIN], &[f32::MAX]), Err(VectorError::Overflow));
    }

    #[test]
    fn distances_match_hand_computed_values() {
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
        let v = [0.1f32, -0.7, 3.3, 1e-3];
        assert_eq!(cosine(&v, &v), Some(1.0));
        assert_eq!(cosine(&v, &v.map(|x| x * 4.0)), Some(1.0));
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), Some(0.0));
        assert_eq!(cosine(&[0.0, 0.0], &[0.0, 2.0]), None);
        assert_eq!(l2_distance(&[0.0, 0.0], &[3.0, 4.0]), 5.0);
        assert!((cosine_distance(&[1.0, 0.0], &[0.0, 1.0]) - 1.0).abs() < 1e-15);
        assert_eq!(cosine_distance(&[1.0, 1.0], &[2.0, 2.0]), 0.0);
        assert!(cosine_distance(&[0.0, 0.0], &[1.0, 1.0]).is_nan());
        // 19 elements: two full lanes of 8 and a tail of 3.
        let a: Vec<f32> = (0..19).map(|i| i as f32).collect();
        assert_eq!(dot(&a, &a), (0..19).map(|i| (i * i) as f64).sum::<f64>());
    }

    #[test]
    fn every_tier_gives_the_same_bits_in_f64() {
        let a: Vec<f32> = (0..389)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 1.37e-3)
            .collect();
        let b: Vec<f32> = (0..389)
            .map(|i| ((i * 53 % 89) as f32 - 44.0) * 7.1e2)
            .collect();
        let reference = lane_sum(&a, &b, |x, y| x * y);
        let distance = lane_sum(&a, &b, |x, y| (x - y) * (x - y));
        for tier in Tier::available() {
            let (d, l2) = with_tier(tier, || (dot(&a, &b), squared_distance(&a, &b))).unwrap();
            assert_eq!(d.to_bits(), reference.to_bits(), "{tier}");
            assert_eq!(l2.to_bits(), distance.to_bits(), "{tier}");
        }
    }

    /// The f32-lane dot product against an f64 reference, on every tier the CPU has, at
    /// lengths around each tier's vector and unroll widths, with the documented bound.
    #[test]
    fn f32_lane_dots_meet_their_bound_on_every_tier() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for n in [
            1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 384, 385, 1536, 4099,
        ] {
            let a: Vec<f32> = (0..n).map(|_| next()).collect();
            let b: Vec<f32> = (0..n).map(|_| next() * 1e3).collect();
            let exact: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let magnitude: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 * y as f64).abs())
                .sum();
            let bound = (n as f64 / 16.0 + 8.0) * f32::EPSILON as f64 / 2.0 * magnitude * 1.001;
            for tier in Tier::available() {
                let got = with_tier(tier, || dot_f32(&a, &b)).unwrap();
                assert!(
                    (got - exact).abs() <= bound,
                    "{tier}, n = {n}: error {:e} > {bound:e}",
                    (got - exact).abs()
                );
            }
        }
        // Integers: exact in f32 lanes, so every tier gives the exact value.
        let a: Vec<f32> = (0..389).map(|i| (i % 17) as f32 - 8.0).collect();
        let exact: f64 = a.iter().map(|&x| x as f64 * x as f64).sum();
        for tier in Tier::available() {
            assert_eq!(
                with_tier(tier, || dot_f32(&a, &a)).unwrap(),
                exact,
                "{tier}"
            );
        }
    }

    #[test]
    fn vector_sum_merges_and_round_trips() {
        let mut left = VectorSum::new(2);
        left.push(&[1.0, 2.0]).unwrap();
        let mut right = VectorSum::new(2);
        right.push(&[3.0, 4.0]).unwrap();
        right.push(&[5.0, 9.0]).unwrap();
        left.merge(&right).unwrap();
        assert_eq!(left.sum().unwrap(), vec![9.0, 15.0]);
        assert_eq!(left.avg(), vec![3.0, 5.0]);
        assert_eq!(VectorSum::from_bytes(&left.to_bytes()).unwrap(), left);
        assert!(VectorSum::from_bytes(&left.to_bytes()[..20]).is_err());
        assert!(
            VectorSum::from_bytes(&[0xff; 16]).is_err(),
            "a corrupt dims count is an error"
        );
        let mut empty = VectorSum::new(0);
        empty.merge(&left).unwrap();
        assert_eq!(empty, left);
        left.merge(&VectorSum::new(7)).unwrap();
        assert_eq!(empty, left);
        assert_eq!(
            left.push(&[1.0]).unwrap_err().to_string(),
            "different airrep_vector dimensions 2 and 1"
        );
    }
}
