//! The trainer's tests, by concept; the fixtures they share (golden trace, tiny data and
//! trainer, tolerances) are here. Option and data checks are tested beside `options.rs` and
//! `data.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use airrep_core::group::Pooling;
use airrep_core::lds::lds;
use candle_core::{Device, Tensor};
use serde::Deserialize;

use super::*;
use crate::pooling::AUTO_RESPONSE_WEIGHTS;
use crate::testing::{assert_relative, golden_dir};
use crate::tokenize::{TokenBatch, DEFAULT_MAX_LENGTH};

mod golden_steps;
mod gradients;
mod start;
mod steps;
mod validation;

/// `tests/golden/train_steps.json`.
#[derive(Deserialize)]
pub(crate) struct GoldenTraining {
    pub targets: Vec<String>,
    pub subsets: Vec<Vec<String>>,
    pub subset_losses: Vec<Vec<f64>>,
    pub labels: Vec<Vec<f64>>,
    pub optimizer: GoldenOptimizer,
    pub trace: Vec<GoldenStep>,
    pub group_scores_after: Vec<Vec<f64>>,
    pub projector_weight_after_first_row: Vec<f64>,
}

#[derive(Deserialize)]
pub(crate) struct GoldenOptimizer {
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: usize,
    pub t_min: f64,
    pub t_max: f64,
}

#[derive(Deserialize)]
pub(crate) struct GoldenStep {
    pub lr: f64,
    pub loss: f64,
    pub grad_norm_before_clip: f64,
    pub group_scores: Vec<Vec<f64>>,
}

pub(crate) fn golden() -> GoldenTraining {
    let bytes = std::fs::read(golden_dir("train_steps.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The golden data as `TrainData`: the subsets' members laid end to end as examples.
pub(crate) fn golden_data(golden: &GoldenTraining) -> TrainData {
    let mut examples = Vec::new();
    let mut subsets = Vec::new();
    for members in &golden.subsets {
        subsets.push((examples.len()..examples.len() + members.len()).collect());
        examples.extend(members.iter().cloned());
    }
    TrainData {
        examples,
        targets: golden.targets.clone(),
        subsets,
        losses: golden.subset_losses.clone(),
    }
}

/// The golden data with subsets that share members and repeat one: subset k also takes
/// the first member of subset k + 1, and subset 0 lists its first member twice.
pub(crate) fn overlapping_data(golden: &GoldenTraining) -> TrainData {
    let mut data = golden_data(golden);
    let count = data.subsets.len();
    for k in 0..count {
        let shared = data.subsets[(k + 1) % count][0];
        data.subsets[k].push(shared);
    }
    let first = data.subsets[0][0];
    data.subsets[0].push(first);
    data
}

/// The reference recipe the golden trace was made with: every weight, one learning rate,
/// every member, no holdout.
pub(crate) fn golden_options(golden: &GoldenTraining) -> TrainOptions {
    let o = &golden.optimizer;
    TrainOptions {
        steps: golden.trace.len(),
        lr: o.lr,
        head_lr: o.lr,
        weight_decay: o.weight_decay,
        warmup_steps: o.warmup_steps,
        targets_per_step: golden.targets.len(),
        subsets_per_step: golden.subsets.len(),
        t_min: o.t_min,
        t_max: o.t_max,
        train_layers: TrainLayers::All,
        depth: Depth::All,
        projector_init: ProjectorInit::Random,
        holdout_fraction: 0.0,
        ..TrainOptions::default()
    }
}

pub(crate) fn tokenizer_json() -> Vec<u8> {
    std::fs::read(golden_dir("tiny-airrep").join("tokenizer.json")).unwrap()
}

pub(crate) fn tiny_trainer(data: TrainData, options: TrainOptions) -> Result<Trainer> {
    let dir = golden_dir("tiny-airrep");
    Trainer::new(
        &Checkpoint::from_dir(&dir)?,
        &tokenizer_json(),
        data,
        options,
        &never,
    )
}

/// tiny-airrep without its projector: a base model, as `airrep.load_model` of a plain
/// BERT gives.
pub(crate) fn base_checkpoint() -> Checkpoint {
    let airrep = Checkpoint::from_dir(golden_dir("tiny-airrep")).unwrap();
    let mut tensors = airrep.tensors().clone();
    tensors.retain(|name, _| !name.starts_with("projector."));
    Checkpoint::new(airrep.config.clone(), tensors).unwrap()
}

pub(crate) fn never() -> bool {
    false
}

pub(crate) fn assert_matrix_rel(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (d, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{what}: row {d}");
        for (k, (g, w)) in g.iter().zip(w).enumerate() {
            assert_relative(*g, *w, tol, &format!("{what}[{d}][{k}]"));
        }
    }
}

pub(crate) fn l2(t: &Tensor) -> f64 {
    f64::from(
        t.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
    )
    .sqrt()
}

/// Asserts two gradient lists agree per tensor, relative to each tensor's norm with a floor
/// of 1e-3 of the global norm: the key biases' true gradient is 0 (softmax ignores a
/// per-query constant), so both sides are rounding noise there.
pub(crate) fn assert_gradients_close(
    names: &[String],
    got: &[Tensor],
    want: &[Tensor],
    what: &str,
) {
    assert_eq!(got.len(), want.len(), "{what}: tensor count");
    let global = want.iter().map(|g| l2(g).powi(2)).sum::<f64>().sqrt();
    assert!(global > 0.0, "{what}: zero gradient");
    for (name, (got, want)) in names.iter().zip(got.iter().zip(want)) {
        let err = l2(&(got - want).unwrap());
        let scale = l2(want).max(1e-3 * global);
        assert!(
            err <= 1e-4 * scale,
            "{what}: d loss / d {name}: error {err:e}, norm {:e}",
            l2(want)
        );
    }
}

/// Eight targets and twelve subsets of the golden texts, with losses that a trained encoder
/// can learn: a subset helps a target the more of its members share the target's first word.
/// A trainer of the base checkpoint over `data` with `options`, never cancelled.
pub(crate) fn base_trainer(data: &TrainData, options: TrainOptions) -> Trainer {
    Trainer::new(
        &base_checkpoint(),
        &tokenizer_json(),
        data.clone(),
        options,
        &never,
    )
    .unwrap()
}

/// Every target and every subset of `data`, as `Trainer::group_scores` takes them.
pub(crate) fn everything(data: &TrainData) -> (Vec<usize>, Vec<usize>) {
    (
        (0..data.targets.len()).collect(),
        (0..data.subsets.len()).collect(),
    )
}

/// [`selection_data`] with every text in the AirRep template: its first two words the
/// question, the rest the response.
pub(crate) fn template_data() -> TrainData {
    let template = |text: &String| {
        let words: Vec<&str> = text.split_whitespace().collect();
        let cut = words.len().min(2);
        crate::format_pair(&words[..cut].join(" "), &words[cut..].join(" "))
    };
    let data = selection_data();
    TrainData {
        examples: data.examples.iter().map(template).collect(),
        targets: data.targets.iter().map(template).collect(),
        ..data
    }
}

pub(crate) fn selection_data() -> TrainData {
    let golden = golden();
    let examples: Vec<String> = golden.subsets.iter().flatten().cloned().collect();
    let targets: Vec<String> = golden
        .targets
        .iter()
        .chain(&golden.targets)
        .cloned()
        .collect();
    let mut rng = SplitMix64(11);
    let subsets: Vec<Vec<usize>> = (0..12).map(|_| rng.sample(examples.len(), 6)).collect();
    let first_word = |s: &str| s.split_whitespace().next().unwrap_or("").to_string();
    let losses = subsets
        .iter()
        .map(|members| {
            targets
                .iter()
                .enumerate()
                .map(|(d, t)| {
                    let shared = members
                        .iter()
                        .filter(|&&i| first_word(&examples[i]) == first_word(t))
                        .count();
                    2.0 - 0.1 * shared as f64 + 0.01 * ((members[0] * 7 + d) % 5) as f64
                })
                .collect()
        })
        .collect();
    TrainData {
        examples,
        targets,
        subsets,
        losses,
    }
}
