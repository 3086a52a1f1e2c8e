//! Where training starts: how many of the base model's layers to keep (`depth` 'auto'),
//! whether to scale the embeddings to one length (`unit_scale` 'auto'), and the pooled
//! states that choice and a centred projector read.
//!
//! A sentence encoder's top layers are trained to forget a text's surface form, but that
//! form (shared words, a shared template) is often what decides whether training on one
//! text lowers the loss on another. So every truncation of the encoder, with the start's
//! projector, is scored before any training: one forward pass gives the mean-pooled states
//! after every layer, and the depth whose group scores rank every labelled subset for
//! every target best (LDS) is kept. Training then starts from that truncation.
//!
//! Each depth is also scored with unit-length embeddings at a few lengths: a score is then
//! the length squared times a cosine, so no text outweighs the others by the size of its
//! vector, and the length sets how sharply attention pooling picks a subset's closest
//! members. The projector cannot learn this, since it maps every text the same way.
//!
//! Texts in the AirRep template are also scored with their response weighted in the
//! pooling at a few weights (see `crate::pooling`): the labels are losses on responses, and
//! a plain mean weighs the question as much. The pooled states of every weight come from
//! the same pass.
//!
//! Untrained weights have fit nothing, so all the labels can judge them: this is one
//! choice among a handful, and the more labels it reads the less it is swayed by noise
//! (on the benchmark, 40 held-out targets by 32 held-out subsets picked a depth whose
//! evaluation LDS was half the best one's). The choice is recorded with the trained model.

use airrep_core::group::Pooling;
use airrep_core::lds::lds;
use candle_core::Tensor;

use super::inputs::{token_batch, CHUNK_TOKENS};
use super::options::{Depth, ProjectorInit, ResponseWeight, TrainLayers, TrainOptions, UnitScale};
use super::{TrainData, Union};
use crate::bert::unit_length;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::pooling::{response_mask, response_start, ResponseWeighting};
use crate::tokenize::token_chunks;
use crate::trainable::TrainableModel;

/// One way to start: a depth, centred or not, with unit-length embeddings of a length or
/// not, and the response weighed in the pooling (1: the plain mean).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartPoint {
    pub layers: usize,
    pub centered: bool,
    pub unit_scale: Option<f32>,
    pub response_weight: f32,
}

impl std::fmt::Display for StartPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.layers)?;
        if self.centered {
            f.write_str(" centred")?;
        }
        if let Some(scale) = self.unit_scale {
            write!(f, " unit x{scale}")?;
        }
        if self.response_weight != 1.0 {
            write!(f, " response x{}", self.response_weight)?;
        }
        Ok(())
    }
}

/// A start that was scored, and its LDS at step 0.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StartScore {
    pub start: StartPoint,
    pub lds: f64,
}

/// The start kept, and every start scored.
#[derive(Debug, Clone, PartialEq)]
pub struct StartChoice {
    pub kept: StartPoint,
    /// Layers of the starting model.
    pub of: usize,
    /// In the order scored: each depth, shallowest first, at each unit scale, then the
    /// start unchanged when the depths were centred.
    pub scores: Vec<StartScore>,
}

impl StartChoice {
    /// What a trained model's config records of its start: whether it is centred, its
    /// unit length, its response weight and every start scored.
    pub fn to_json(&self) -> serde_json::Value {
        let scores: Vec<serde_json::Value> = self
            .scores
            .iter()
            .map(|s| {
                serde_json::json!({"layers": s.start.layers, "centered": s.start.centered,
                                   "unit_scale": s.start.unit_scale,
                                   "response_weight": s.start.response_weight, "lds": s.lds})
            })
            .collect();
        serde_json::json!({
            "centered": self.kept.centered,
            "unit_scale_start": self.kept.unit_scale,
            "response_weight": self.kept.response_weight,
            "start_scores": scores,
        })
    }

    /// The start kept and its LDS, the runner-up and, when it competed, the base as it is;
    /// every score is in [`StartChoice::scores`].
    pub fn describe(&self) -> String {
        let score_of = |start: StartPoint| self.scores.iter().find(|s| s.start == start);
        let mut others = String::new();
        let runner_up = self
            .scores
            .iter()
            .filter(|s| s.start != self.kept && !s.lds.is_nan())
            .max_by(|a, b| a.lds.total_cmp(&b.lds));
        if let Some(s) = runner_up {
            others += &format!(", against {:.4} for the next best ({})", s.lds, s.start);
        }
        let base = StartPoint {
            layers: self.of,
            centered: false,
            unit_scale: None,
            response_weight: 1.0,
        };
        if let Some(s) = score_of(base).filter(|_| base != self.kept) {
            others += &format!(" and {:.4} for the base as it is", s.lds);
        }
        format!(
            "kept {} of {} layers{}{}{} by LDS at step 0 over every label: {:.4}{others}; {} starts scored",
            self.kept.layers,
            self.of,
            if self.kept.centered { ", centred" } else { "" },
            match self.kept.unit_scale {
                Some(scale) => format!(", unit length x{scale}"),
                None => String::new(),
            },
            match self.kept.response_weight {
                1.0 => String::new(),
                weight => format!(", response x{weight}"),
            },
            score_of(self.kept).map_or(f64::NAN, |s| s.lds),
            self.scores.len()
        )
    }
}

/// A start to score: `examples` (every example) and `targets` embedded by it.
pub(crate) struct Candidate {
    pub start: StartPoint,
    pub examples: Tensor,
    pub targets: Tensor,
}

/// Every text's token states after each layer of the start's model, summed apart over its
/// question (every token before the response, [CLS] included) and its response: the pooled
/// state at any response weight w is then `(question + w·response) / (question tokens +
/// w·response tokens)`, so scoring several weights costs no second pass and the memory of
/// two pooled states per depth, whatever the number of weights.
pub(crate) struct PooledParts {
    /// `[depth][texts, hidden]`.
    question: Vec<Tensor>,
    response: Vec<Tensor>,
    /// `[texts, 1]`.
    question_tokens: Tensor,
    response_tokens: Tensor,
}

impl PooledParts {
    /// The parts of every text of `ids`, the response after `marker`, at most `chunk_rows`
    /// texts per pass (fewer when they are long); `check` is polled between passes.
    pub(crate) fn new(
        model: &TrainableModel,
        ids: &[Vec<u32>],
        pad_id: u32,
        marker: &[u32],
        chunk_rows: usize,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Self> {
        let rows: Vec<usize> = (0..ids.len()).collect();
        let depths = model.model().num_layers();
        let (mut question, mut response) = (vec![Vec::new(); depths], vec![Vec::new(); depths]);
        let (mut question_tokens, mut response_tokens) = (Vec::new(), Vec::new());
        for chunk in token_chunks(&rows, |r| ids[r].len(), chunk_rows, CHUNK_TOKENS) {
            check()?;
            let (chunk_ids, mask, _) = token_batch(model, ids, pad_id, chunk)?;
            let answer = response_mask(&chunk_ids, &mask, marker)?;
            let asked = (&mask - &answer)?;
            let sums = model.model().summed_by_depth(
                &chunk_ids,
                &mask,
                &[asked.clone(), answer.clone()],
            )?;
            // Detached: the weights train later, and a graph kept here would hold every
            // layer's activations for every text.
            for (depth, (q, r)) in sums[0].iter().zip(&sums[1]).enumerate() {
                question[depth].push(q.detach());
                response[depth].push(r.detach());
            }
            question_tokens.push(asked.sum_keepdim(1)?);
            response_tokens.push(answer.sum_keepdim(1)?);
        }
        let cat = |parts: &[Tensor]| Tensor::cat(parts, 0);
        Ok(Self {
            question: question
                .iter()
                .map(|p| cat(p))
                .collect::<candle_core::Result<_>>()?,
            response: response
                .iter()
                .map(|p| cat(p))
                .collect::<candle_core::Result<_>>()?,
            question_tokens: cat(&question_tokens)?,
            response_tokens: cat(&response_tokens)?,
        })
    }

    /// The pooled states `[texts, hidden]` after `layers` layers with the response weighted
    /// `weight` (see `crate::pooling`; 1: the plain mean).
    pub(crate) fn pooled(&self, layers: usize, weight: f32) -> Result<Tensor> {
        let (d, w) = (layers - 1, f64::from(weight));
        let sum = (&self.question[d] + (&self.response[d] * w)?)?;
        let tokens = (&self.question_tokens + (&self.response_tokens * w)?)?;
        Ok(sum.broadcast_div(&tokens)?)
    }
}

/// The starts to score: each of `depths` (layers, centred by the examples' mean or as the
/// model's projector has it) at each of `response_weights`, at each of `scales`. List the
/// start unchanged last (and weight 1 last among the weights), so it wins ties. Each is
/// embedded only when the iterator reaches it, so scoring holds one candidate's embeddings
/// at a time.
pub(crate) fn candidates<'a>(
    model: &'a TrainableModel,
    (examples, targets): (&'a PooledParts, &'a PooledParts),
    depths: &'a [(usize, bool)],
    response_weights: &'a [f32],
    scales: &'a [Option<f32>],
) -> impl Iterator<Item = Result<Candidate>> + 'a {
    let embed = move |start: StartPoint| -> Result<(Tensor, Tensor)> {
        let pooled = |parts: &PooledParts| parts.pooled(start.layers, start.response_weight);
        let (mut x, mut t) = (pooled(examples)?, pooled(targets)?);
        if start.centered {
            let mean = x.mean_keepdim(0)?;
            x = x.broadcast_sub(&mean)?;
            t = t.broadcast_sub(&mean)?;
        }
        let (x, t) = (model.model().project(&x)?, model.model().project(&t)?);
        Ok(match start.unit_scale {
            Some(scale) => {
                let scaled = |e: &Tensor| unit_length(e)? * f64::from(scale);
                (scaled(&x)?, scaled(&t)?)
            }
            None => (x, t),
        })
    };
    depths.iter().flat_map(move |&(layers, centered)| {
        response_weights.iter().flat_map(move |&response_weight| {
            scales.iter().map(move |&unit_scale| {
                let start = StartPoint {
                    layers,
                    centered,
                    unit_scale,
                    response_weight,
                };
                let (examples, targets) = embed(start)?;
                Ok(Candidate {
                    start,
                    examples,
                    targets,
                })
            })
        })
    })
}

/// Scores every candidate and keeps the best; ties go to the later candidate, so list the
/// start unchanged (every layer, uncentred) last. `of` is the base's layer count; `check`
/// is polled before each candidate.
pub(crate) fn best_of(
    data: &TrainData,
    candidates: impl Iterator<Item = Result<Candidate>>,
    of: usize,
    pooling: Pooling,
    check: &dyn Fn() -> Result<()>,
) -> Result<StartChoice> {
    let union = Union::new(&data.subsets, |_| 0);
    let rows: Vec<u32> = union.examples.iter().map(|&i| i as u32).collect();
    let mut scores = Vec::new();
    for c in candidates {
        check()?;
        let c = c?;
        let rows = Tensor::from_slice(&rows, rows.len(), c.examples.device())?;
        let members = c.examples.index_select(&rows, 0)?;
        let group_scores = union.group_scores(&c.targets, &members, pooling)?;
        scores.push(StartScore {
            start: c.start,
            lds: lds(&group_scores, &data.losses).0,
        });
    }
    let Some(&first) = scores.first() else {
        return Err(Error::Input("no depth to choose from".into()));
    };
    // The best LDS, the later candidate on a tie; NaN (an undefined LDS) never wins.
    let best = scores[1..].iter().fold(first, |best, &s| {
        if s.lds.is_nan() || s.lds < best.lds {
            best
        } else {
            s
        }
    });
    Ok(StartChoice {
        kept: best.start,
        of,
        scores,
    })
}

/// Where a run starts (see [`start`]).
pub(super) struct Start {
    pub checkpoint: Checkpoint,
    pub choice: Option<StartChoice>,
    /// Pooled states before the projector `[texts, hidden]` of the examples and targets at
    /// the depth and response weight kept, when the choice computed them.
    pub pooled: Option<(Tensor, Tensor)>,
}

/// The tokenised texts a start reads.
pub(super) struct Tokens<'a> {
    pub examples: &'a [Vec<u32>],
    pub targets: &'a [Vec<u32>],
    pub pad: u32,
    /// [`crate::pooling::RESPONSE_MARKER`] in the model's vocabulary.
    pub marker: &'a [u32],
}

/// Where training starts: `checkpoint` truncated to the `depth` kept, with a centred
/// projector when `projector_init` asks for one (a model with its own projector keeps
/// it), unit-length embeddings when `unit_scale` asks for them and the response weighted
/// as `response_weight` says (a model that weights it keeps its own), and the choice when
/// there was one to make ('auto' depth, or 'auto' unit scale with centring).
pub(super) fn start(
    checkpoint: &Checkpoint,
    data: &TrainData,
    tokens: &Tokens,
    options: &TrainOptions,
    device: &candle_core::Device,
    check: &dyn Fn() -> Result<()>,
) -> Result<Start> {
    let total = checkpoint.config.num_hidden_layers;
    options.train_layers.fits(total)?;
    let centre = options.projector_init == ProjectorInit::Centered && !checkpoint.has_projector();
    let depths: Vec<usize> = match options.depth {
        Depth::All => vec![total],
        Depth::Layers(n) => vec![n],
        Depth::Auto => {
            let shallowest = match options.train_layers {
                TrainLayers::Top(n) => n,
                TrainLayers::Projector | TrainLayers::All => 1,
            };
            (shallowest.max(1)..=total).collect()
        }
    };
    let fixed_scale = match options.unit_scale {
        UnitScale::Fixed(scale) => Some(scale),
        UnitScale::Auto | UnitScale::Off => None,
    };
    let choose = options.depth == Depth::Auto || (centre && options.unit_scale == UnitScale::Auto);
    // A model that weights its response keeps its weighting; otherwise the weights scored
    // (only where some example has a response: elsewhere every weight pools alike).
    let own = checkpoint.config.response_weighting.clone();
    let marker = own.as_ref().map_or(tokens.marker, |w| w.marker.as_slice());
    let has_response = tokens
        .examples
        .iter()
        .any(|ids| response_start(ids, marker).is_some());
    let response_weights = match (&own, options.response_weight) {
        (Some(own), _) => vec![own.weight],
        (None, ResponseWeight::Fixed(weight)) => vec![weight],
        (None, ResponseWeight::Auto) if choose && has_response => {
            options.response_weight.candidates()
        }
        (None, ResponseWeight::Auto) => vec![1.0],
    };
    let weighting = |weight: f32| {
        own.clone().or_else(|| {
            (weight != 1.0).then(|| ResponseWeighting {
                marker: marker.to_vec(),
                weight,
            })
        })
    };
    let finish = |kept: usize, mean: Option<&Tensor>, scale: Option<f32>, weight: f32| {
        let mut start = checkpoint.truncated(kept)?;
        start.config.response_weighting = weighting(weight);
        if let Some(mean) = mean {
            let mean = mean.to_device(&candle_core::Device::Cpu)?;
            ProjectorInit::Centered.give(&mut start, options.seed, Some(&mean))?;
        }
        if let Some(scale) = scale {
            options
                .projector_init
                .give(&mut start, options.seed, None)?;
            start.set_unit_scale(scale)?;
        }
        Ok::<_, Error>(start)
    };
    if !choose && !centre {
        return Ok(Start {
            checkpoint: finish(depths[0], None, fixed_scale, response_weights[0])?,
            choice: None,
            pooled: None,
        });
    }
    // One pass over the examples (and, to choose, the targets) gives every depth's
    // pooled states at every weight; the centring mean is the examples'.
    let full = TrainableModel::new(checkpoint, options.projector_init, options.seed, device)?;
    let parts = |ids| PooledParts::new(&full, ids, tokens.pad, marker, options.chunk_rows, check);
    let examples = parts(tokens.examples)?;
    let (choice, targets) = if choose {
        let targets = parts(tokens.targets)?;
        let mut starts: Vec<(usize, bool)> = depths.iter().map(|&d| (d, centre)).collect();
        // With a depth to choose, the base unchanged competes too, so the start kept is
        // never worse on the labels than the base itself.
        if centre && options.depth == Depth::Auto {
            starts.push((total, false));
        }
        let scales = options.unit_scale.candidates(options.pooling);
        let candidates = candidates(
            &full,
            (&examples, &targets),
            &starts,
            &response_weights,
            &scales,
        );
        let choice = best_of(data, candidates, total, options.pooling, check)?;
        (Some(choice), Some(targets))
    } else {
        (None, None)
    };
    let kept = choice.as_ref().map_or(depths[0], |c| c.kept.layers);
    let centered = choice.as_ref().map_or(centre, |c| c.kept.centered);
    let scale = choice.as_ref().map_or(fixed_scale, |c| c.kept.unit_scale);
    let weight = choice
        .as_ref()
        .map_or(response_weights[0], |c| c.kept.response_weight);
    let kept_examples = examples.pooled(kept, weight)?;
    let mean = if centered {
        Some(kept_examples.mean(0)?)
    } else {
        None
    };
    let pooled = match targets {
        Some(targets) => Some((kept_examples, targets.pooled(kept, weight)?)),
        None => None,
    };
    Ok(Start {
        checkpoint: finish(kept, mean.as_ref(), scale, weight)?,
        choice,
        pooled,
    })
}
