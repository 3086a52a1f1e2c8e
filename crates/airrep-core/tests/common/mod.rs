//! Reading the golden reference values of DESIGN section 2 (`tests/golden/` at the repository
//! root, computed with PyTorch) and comparing against them.

// Each test binary includes this module and uses a different part of it.
#![allow(dead_code)]

use serde_json::Value;

/// The `cases` array of a golden file.
pub fn golden_cases(file: &str) -> Vec<Value> {
    let path = format!("{}/../../tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut golden: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let cases = golden["cases"].take();
    let cases = cases
        .as_array()
        .unwrap_or_else(|| panic!("{path} has no cases"));
    assert!(!cases.is_empty(), "{path} has no cases");
    cases.clone()
}

pub fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

pub fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(number)
        .collect()
}

pub fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(floats)
        .collect()
}

/// A vector as the extension stores it; the golden inputs are float32 values.
pub fn vector32(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

/// `|actual - expected| <= rel * |expected| + abs`.
pub fn assert_close(actual: f64, expected: f64, rel: f64, abs: f64, what: &str) {
    let error = (actual - expected).abs();
    assert!(
        error <= rel * expected.abs() + abs,
        "{what}: {actual} vs {expected} (error {error:e}, relative {:e})",
        error / expected.abs()
    );
}
