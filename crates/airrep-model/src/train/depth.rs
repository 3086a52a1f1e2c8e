//! Where training starts: how many of the base model's layers to keep (`depth` 'auto'),
//! and the pooled states that choice and a centred projector read.
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

use airrep_core::group::Pooling;
use airrep_core::lds::lds;
use candle_core::Tensor;

use super::inputs::token_batch;
use super::{TrainData, Union};
use crate::error::{Error, Result};
use crate::trainable::TrainableModel;

/// One way to start that was scored: a depth, centred or not, and its LDS at step 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartScore {
    pub layers: usize,
    pub centered: bool,
    pub lds: f64,
}

/// The start kept (depth, and whether centred), and every start scored.
#[derive(Debug, Clone, PartialEq)]
pub struct DepthChoice {
    pub layers: usize,
    /// Layers of the starting model.
    pub of: usize,
    pub centered: bool,
    /// In the order scored: each depth, shallowest first, then the start unchanged when
    /// the depths were centred.
    pub scores: Vec<StartScore>,
}

impl DepthChoice {
    pub fn describe(&self) -> String {
        let scores: Vec<String> = self
            .scores
            .iter()
            .map(|s| {
                let how = if s.centered { " centred" } else { "" };
                format!("{}{how}: {:.4}", s.layers, s.lds)
            })
            .collect();
        format!(
            "kept {} of {} layers{} by LDS at step 0 over every label ({})",
            self.layers,
            self.of,
            if self.centered { ", centred," } else { "" },
            scores.join(", ")
        )
    }
}

/// A start to score: `examples` (every example) and `targets` embedded by it.
pub(crate) struct Candidate {
    pub layers: usize,
    pub centered: bool,
    pub examples: Tensor,
    pub targets: Tensor,
}

/// Mean-pooled states `[depth][texts, hidden]` (before the projector) of every text of
/// `ids` after each layer of `model`, bottom first, `chunk_rows` texts per pass; `check`
/// is polled between passes.
pub(crate) fn pooled_by_depth(
    model: &TrainableModel,
    ids: &[Vec<u32>],
    pad_id: u32,
    chunk_rows: usize,
    check: &dyn Fn() -> Result<()>,
) -> Result<Vec<Tensor>> {
    let rows: Vec<usize> = (0..ids.len()).collect();
    let mut by_depth: Vec<Vec<Tensor>> = vec![Vec::new(); model.model().num_layers()];
    for chunk in rows.chunks(chunk_rows) {
        check()?;
        let (chunk_ids, mask, _) = token_batch(model, ids, pad_id, chunk)?;
        let states = model.model().pooled_by_depth(&chunk_ids, &mask)?;
        // Detached: the weights train later, and a graph kept here would hold every
        // layer's activations for every text.
        for (depth, state) in states.into_iter().enumerate() {
            by_depth[depth].push(state.detach());
        }
    }
    by_depth
        .iter()
        .map(|parts| Ok(Tensor::cat(parts, 0)?))
        .collect()
}

/// The starts to score from every depth's pooled states `[depth][texts, hidden]`: each
/// depth from `shallowest` centred by `means` when given (else as the model's projector
/// has it), and the start unchanged (every layer, uncentred) last, so the start kept is
/// never worse on the labels than the base itself.
pub(crate) fn candidates(
    model: &TrainableModel,
    examples: &[Tensor],
    targets: &[Tensor],
    means: Option<&[Tensor]>,
    shallowest: usize,
) -> Result<Vec<Candidate>> {
    let total = examples.len();
    let embed = |x: &Tensor, d: usize, centered: bool| match (means, centered) {
        (Some(means), true) => model.model().project(&x.broadcast_sub(&means[d])?),
        _ => model.model().project(x),
    };
    let mut starts: Vec<(usize, bool)> = (shallowest.max(1)..=total)
        .map(|layers| (layers, means.is_some()))
        .collect();
    if means.is_some() {
        starts.push((total, false));
    }
    starts
        .into_iter()
        .map(|(layers, centered)| {
            Ok(Candidate {
                layers,
                centered,
                examples: embed(&examples[layers - 1], layers - 1, centered)?,
                targets: embed(&targets[layers - 1], layers - 1, centered)?,
            })
        })
        .collect()
}

/// Scores every candidate and keeps the best; ties go to the later candidate, so list the
/// start unchanged (every layer, uncentred) last. `of` is the base's layer count.
pub(crate) fn choose(
    data: &TrainData,
    candidates: &[Candidate],
    of: usize,
    pooling: Pooling,
) -> Result<DepthChoice> {
    let first = candidates
        .first()
        .ok_or_else(|| Error::Input("no depth to choose from".into()))?;
    let union = Union::new(&data.subsets, |_| 0);
    let rows = Tensor::from_vec(
        union.examples.iter().map(|&i| i as u32).collect::<Vec<_>>(),
        union.examples.len(),
        first.examples.device(),
    )?;
    let mut scores = Vec::with_capacity(candidates.len());
    for c in candidates {
        let members = c.examples.index_select(&rows, 0)?;
        let group_scores = union.group_scores(&c.targets, &members, pooling)?;
        scores.push(StartScore {
            layers: c.layers,
            centered: c.centered,
            lds: lds(&group_scores, &data.losses).0,
        });
    }
    // The best LDS, the later candidate on a tie; NaN (an undefined LDS) never wins.
    let best = scores[1..].iter().fold(scores[0], |best, &s| {
        if s.lds.is_nan() || s.lds < best.lds {
            best
        } else {
            s
        }
    });
    Ok(DepthChoice {
        layers: best.layers,
        of,
        centered: best.centered,
        scores,
    })
}
