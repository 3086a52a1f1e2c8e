//! Choosing how many of the starting model's layers to keep (`depth` 'auto').
//!
//! A sentence encoder's top layers are trained to forget a text's surface form, but that
//! form (shared words, a shared template) is often what decides whether training on one
//! text lowers the loss on another. So every truncation of the encoder, with the start's
//! projector, is scored before any training: one forward pass gives the mean-pooled states
//! after every layer, and the depth whose group scores rank every labelled subset for
//! every target best (LDS) is kept. Training then starts from that truncation.
//!
//! Untrained weights have fit nothing, so all the labels can judge them: this is one
//! choice among a handful, and the more labels it reads the less it is swayed by noise
//! (on the benchmark, 40 held-out targets by 32 held-out subsets picked a depth whose
//! evaluation LDS was half the best one's). The choice is recorded with the trained model.

use airrep_core::lds::lds;
use candle_core::Tensor;

use super::{pool_groups, TrainData, Union};
use crate::error::Result;
use crate::trainable::TrainableModel;
use airrep_core::group::Pooling;

/// The depth kept, and the LDS at step 0 of every depth scored.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthChoice {
    pub layers: usize,
    /// Layers of the starting model.
    pub of: usize,
    /// `(layers, LDS)` for each depth scored, shallowest first.
    pub lds_by_depth: Vec<(usize, f64)>,
}

impl DepthChoice {
    pub fn describe(&self) -> String {
        let scores: Vec<String> = self
            .lds_by_depth
            .iter()
            .map(|(d, lds)| format!("{d}: {lds:.4}"))
            .collect();
        format!(
            "kept {} of {} layers by LDS at step 0 over every label ({})",
            self.layers,
            self.of,
            scores.join(", ")
        )
    }
}

/// What the choice reads: the texts' token ids and every label.
pub(crate) struct Labeled<'a> {
    pub example_ids: &'a [Vec<u32>],
    pub target_ids: &'a [Vec<u32>],
    pub pad_id: u32,
    pub data: &'a TrainData,
}

/// Scores depths `shallowest..=` the model's layers; ties go to the deeper model (the
/// start unchanged). `check` is polled between forward passes.
pub(crate) fn choose(
    model: &TrainableModel,
    labeled: &Labeled,
    shallowest: usize,
    pooling: Pooling,
    chunk_rows: usize,
    check: &dyn Fn() -> Result<()>,
) -> Result<DepthChoice> {
    let data = labeled.data;
    let union = Union::new(&data.subsets, |i| labeled.example_ids[i].len());
    let all_targets: Vec<usize> = (0..data.targets.len()).collect();
    let pooled = |ids: &[Vec<u32>], rows: &[usize]| -> Result<Vec<Tensor>> {
        let mut by_depth: Vec<Vec<Tensor>> = Vec::new();
        for chunk in rows.chunks(chunk_rows) {
            check()?;
            let (chunk_ids, mask, _) =
                super::inputs::token_batch(model, ids, labeled.pad_id, chunk)?;
            let states = model.model().pooled_by_depth(&chunk_ids, &mask)?;
            by_depth.resize(states.len(), Vec::new());
            // Detached: the weights train later, and a graph kept here would hold every
            // layer's activations for every text.
            for (depth, state) in states.into_iter().enumerate() {
                by_depth[depth].push(state.detach());
            }
        }
        by_depth
            .iter()
            .map(|parts| Ok(model.model().project(&Tensor::cat(parts, 0)?)?.detach()))
            .collect()
    };
    let targets = pooled(labeled.target_ids, &all_targets)?;
    let examples = pooled(labeled.example_ids, &union.examples)?;
    let of = model.model().num_layers();
    let mut lds_by_depth = Vec::new();
    for layers in shallowest.max(1)..=of {
        let scores = union.member_scores(&targets[layers - 1], &examples[layers - 1])?;
        let score = lds(&pool_groups(&scores, pooling), &data.losses).0;
        lds_by_depth.push((layers, score));
    }
    let (layers, _) =
        lds_by_depth
            .iter()
            .copied()
            .fold((of, f64::NEG_INFINITY), |best, (d, score)| {
                if score >= best.1 {
                    (d, score)
                } else {
                    best
                }
            });
    Ok(DepthChoice {
        layers,
        of,
        lds_by_depth,
    })
}
