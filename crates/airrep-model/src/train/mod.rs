//! Training the AirRep encoder (DESIGN 1): rank training subsets by their pooled group
//! scores the way retraining ranked them.
//!
//! One step, for targets T and subsets S sampled from the training subsets:
//! 1. the union U of the members of S, each example once, is encoded without gradients,
//!    and so are T;
//! 2. member scores for all pairs at once, `A = T·Uᵀ`; subset k's scores are the columns
//!    of its members (repeats included), pooled into group scores by airrep-core's
//!    `pool_subsets`, as evaluation pools them (every member counts unless
//!    `max_members_per_subset` asks for a sample); the ranking loss and d loss / d score
//!    come from airrep-core;
//! 3. the chain rule by hand: `G = d loss / d A` sums, per example of U, the pooling slopes
//!    (airrep-core's `pool_slopes`) of every place it occupies in every subset; then
//!    `d loss / d T = G·U` and `d loss / d U = Gᵀ·T`;
//! 4. T and U are re-encoded with gradients, at most `chunk_rows` texts at a time, and
//!    `sum(E ⊙ d loss / d E)` is back-propagated per chunk: its weight gradient is exactly
//!    the share of d loss / d θ that flows through E, so the shares add up to the full
//!    gradient while the autograd graph stays one chunk big (the paper's memory trick);
//! 5. clip to global norm 1 and take AdamW steps with warm-up: `lr` for the encoder's
//!    layers, `head_lr` for the projector.
//!
//! Only `train_layers` learn. The frozen part below them runs once per text when the
//! trainer is built (see `inputs`), so a step costs only the trainable part: with the
//! projector alone, a few small matrix products.
//!
//! Model selection (see `selection`): with `holdout_fraction` > 0 a seeded share of the
//! subsets and of the targets never trains, and the weights with the best held-out LDS
//! are kept. Targets are held out too because the top layer readily learns the training
//! targets' own quirks: with them in validation, held-out LDS rose while LDS on new
//! targets fell (docs/training.md).
//!
//! Before all that, `depth` 'auto' may keep only the bottom layers of the start, and
//! 'auto' choices centre it, scale it and weight the response in its pooling (see
//! `start`). The encoder, its gradients and the optimiser state live on
//! [`TrainOptions::device`], all f32; scores, pooling and the ranking loss run on the host.

mod data;
mod gradients;
mod inputs;
mod options;
mod start;
#[cfg(test)]
mod tests;
mod union;
mod validation;

use data::Split;
pub use data::TrainData;
pub use options::{
    Depth, ProjectorInit, ResponseWeight, TrainLayers, TrainOptions, UnitScale, AUTO_UNIT_SCALES,
};
pub use start::{StartChoice, StartPoint, StartScore};
use union::Union;
pub use validation::{Kept, Validation};

use std::time::Instant;

use airrep_core::group::{pool_slopes, pool_subsets};
use airrep_core::ranking::{labels, RankingLoss};
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::checkpoint::{layer_of, Checkpoint, PROJECTOR_BIAS, PROJECTOR_SCALE, PROJECTOR_WEIGHT};
use crate::error::{Error, Result};
use crate::pooling::response_marker;
use crate::rng::SplitMix64;
use crate::tokenize::TextTokenizer;
use crate::trainable::TrainableModel;
use data::Batch;
use gradients::Gradients;
use inputs::Inputs;

/// The paper's AdamW moments and epsilon, and its gradient clipping norm; not options.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const CLIP_NORM: f64 = 1.0;

/// What one step saw, before its update.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    /// Global gradient norm over every trainable tensor, before clipping.
    pub grad_norm: f64,
    /// The body's learning rate (the head's is `head_lr` times the same warm-up).
    pub lr: f64,
    pub kept_pairs: usize,
    /// `[target][subset]` of this step's batch.
    pub group_scores: Vec<Vec<f64>>,
}

/// What one call of [`Trainer::advance`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// Measured the held-out LDS of the current weights (model selection).
    Validated(Validation),
    /// Took one optimiser step.
    Stepped(StepLog),
}

pub struct Trainer {
    model: TrainableModel,
    data: TrainData,
    /// Which subsets and targets train, and which validate.
    split: Split,
    /// `labels[target][k]` over the training subsets (DESIGN 1), fixed for the run.
    labels: Vec<Vec<f64>>,
    examples: Inputs,
    targets: Inputs,
    options: TrainOptions,
    /// The trainable variables, and which of them are the projector's.
    vars: Vec<Var>,
    head: AdamW,
    body: AdamW,
    rng: SplitMix64,
    step: usize,
    validations: Vec<Validation>,
    /// Copies of `vars` at the best validation.
    best_weights: Option<Vec<Tensor>>,
    /// When [`Trainer::new`] began: `max_seconds` counts from here.
    started: Instant,
    start_choice: Option<StartChoice>,
}

impl Trainer {
    /// Checks the options and the data, tokenises every text and runs the frozen part of
    /// the encoder over it once; `interrupted` is polled between forward passes.
    pub fn new(
        checkpoint: &Checkpoint,
        tokenizer_json: &[u8],
        data: TrainData,
        options: TrainOptions,
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Self> {
        let started = Instant::now();
        options.check()?;
        options.fits_model(checkpoint.config.num_hidden_layers)?;
        data.check()?;
        let split = data.split(options.holdout_fraction, options.seed)?;
        let tokenizer =
            TextTokenizer::for_model(tokenizer_json, options.max_length, &checkpoint.config)?;
        let device = options.device.create()?;
        let check = || checked(interrupted);
        let tokens = |texts: &[String]| -> Result<Vec<Vec<u32>>> {
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            tokenizer.encode_all(&texts)
        };
        let (example_ids, target_ids) = (tokens(&data.examples)?, tokens(&data.targets)?);
        let layers = options.train_layers;
        let (rows, pad) = (options.chunk_rows, tokenizer.pad_id());
        let marker = response_marker(&tokenizer)?;
        let tokens = start::Tokens {
            examples: &example_ids,
            targets: &target_ids,
            pad,
            marker: &marker,
        };
        let start = start::start(checkpoint, &data, &tokens, &options, &device, &check)?;
        // `start` carries any centred projector already; a start chosen uncentred gets the
        // identity ('centered' without a mean).
        let model = TrainableModel::new(
            &start.checkpoint,
            options.projector_init,
            options.seed,
            &device,
        )?;
        // The depth choice already pooled every text at the depth kept: what the projector
        // trains on, exactly (the same layers, chunks and pooling).
        let (examples, targets) = match (layers, start.pooled) {
            (TrainLayers::Projector, Some((examples, targets))) => {
                (Inputs::Pooled(examples), Inputs::Pooled(targets))
            }
            _ => (
                Inputs::new(&model, layers, example_ids, pad, rows, &check)?,
                Inputs::new(&model, layers, target_ids, pad, rows, &check)?,
            ),
        };
        let start_choice = start.choice;

        let (mut head_vars, mut body_vars, mut vars) = (Vec::new(), Vec::new(), Vec::new());
        for (name, var) in model.named_vars() {
            let is_head =
                [PROJECTOR_WEIGHT, PROJECTOR_BIAS, PROJECTOR_SCALE].contains(&name.as_str());
            if is_head || trains(&name, layers, model.model().num_layers()) {
                vars.push(var.clone());
                if is_head {
                    &mut head_vars
                } else {
                    &mut body_vars
                }
                .push(var);
            }
        }
        let adamw = |vars: Vec<Var>, lr: f64| {
            AdamW::new(
                vars,
                ParamsAdamW {
                    lr,
                    beta1: BETA1,
                    beta2: BETA2,
                    eps: EPS,
                    weight_decay: options.weight_decay,
                },
            )
        };
        let losses: Vec<Vec<f64>> = split
            .training
            .iter()
            .map(|&s| data.losses[s].clone())
            .collect();
        Ok(Self {
            labels: labels(&losses),
            head: adamw(head_vars, options.head_lr)?,
            body: adamw(body_vars, options.lr)?,
            rng: SplitMix64(options.seed),
            vars,
            model,
            data,
            split,
            examples,
            targets,
            options,
            step: 0,
            validations: Vec::new(),
            best_weights: None,
            started,
            start_choice,
        })
    }

    /// The run's next piece of work: a validation when one is due, else a step; None once
    /// the run is finished (every step taken, stopped early, or out of time). This is the
    /// training loop, written once: [`Trainer::run`] drives it, and so does `airrep.train`,
    /// which runs each piece on the backend's thread pool and reports it from the backend's
    /// own thread. A cancel leaves the trainer as it was before the call.
    pub fn advance(&mut self, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<Option<Progress>> {
        if self.validation_due() {
            return Ok(Some(Progress::Validated(self.validate(interrupted)?)));
        }
        if self.finished() {
            return Ok(None);
        }
        Ok(Some(Progress::Stepped(self.step(interrupted)?)))
    }

    /// Trains to the end, telling `progress` of every validation and step, and returns
    /// the weights kept and why.
    pub fn run(
        mut self,
        interrupted: &(dyn Fn() -> bool + Sync),
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(Checkpoint, Kept)> {
        while let Some(done) = self.advance(interrupted)? {
            progress(&done);
        }
        self.into_checkpoint()
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// Subsets that train and that validate.
    pub fn subset_counts(&self) -> (usize, usize) {
        (self.split.training.len(), self.split.held_out.len())
    }

    /// Targets that train and that validate.
    pub fn target_counts(&self) -> (usize, usize) {
        (
            self.split.training_targets.len(),
            self.split.held_out_targets.len(),
        )
    }

    /// One optimiser step. `interrupted` is polled before every forward pass in both
    /// passes; if it returns true the step stops with [`Error::Cancelled`] and the trainer
    /// is left as it was.
    pub fn step(&mut self, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<StepLog> {
        // The sampler advances only with a completed step, so a retried step is the same.
        let mut rng = self.rng.clone();
        let batch = self.sample_batch(&mut rng);
        let (ranked, grads) = self.loss_and_gradients(&batch, interrupted)?;
        self.rng = rng;
        let grad_norm = grads.norm()?;
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
        let clip = (CLIP_NORM / (grad_norm + 1e-6)).min(1.0);
        let warmup = self.options.warmup_at(self.step);
        let store = grads.into_store(clip)?;
        self.head.set_learning_rate(self.options.head_lr * warmup);
        self.body.set_learning_rate(self.options.lr * warmup);
        self.head.step(&store)?;
        self.body.step(&store)?;
        self.step += 1;
        // A learning rate far too large sends the weights to infinity within a step or
        // two; stop there rather than train on, and save, a model that encodes NaN. (The
        // sum of |w| is finite exactly when every weight is, short of an overflow that
        // only weights near f32's range could cause.)
        for var in &self.vars {
            let total = var.as_tensor().abs()?.sum_all()?.to_scalar::<f32>()?;
            if !total.is_finite() {
                return Err(Error::Input(format!(
                    "training diverged at step {}: the weights are no longer finite; lower lr ({:e}) and head_lr ({:e})",
                    self.step - 1,
                    self.options.lr,
                    self.options.head_lr
                )));
            }
        }
        Ok(StepLog {
            step: self.step - 1,
            loss: ranked.loss,
            grad_norm,
            lr: self.options.lr * warmup,
            kept_pairs: ranked.kept_pairs,
            group_scores: ranked.group_scores,
        })
    }

    /// The next step's targets and subsets, drawn from the training side of the split.
    fn sample_batch(&self, rng: &mut SplitMix64) -> Batch {
        Batch::sample(
            rng,
            &self.data,
            &self.split.training,
            &self.split.training_targets,
            &self.options,
        )
    }

    /// Group scores `[target][subset]` with the current weights and every member of each
    /// subset (indices into the data's subsets, training or held out), without gradients.
    pub fn group_scores(&self, targets: &[usize], subsets: &[usize]) -> Result<Vec<Vec<f64>>> {
        if let Some(&d) = targets.iter().find(|&&d| d >= self.data.targets.len()) {
            return Err(Error::Input(format!(
                "target {d} out of range: there are {} targets",
                self.data.targets.len()
            )));
        }
        if let Some(&s) = subsets.iter().find(|&&s| s >= self.data.subsets.len()) {
            return Err(Error::Input(format!(
                "subset {s} out of range: there are {} subsets",
                self.data.subsets.len()
            )));
        }
        if targets.is_empty() || subsets.is_empty() {
            return Ok(vec![Vec::new(); targets.len()]);
        }
        self.scores(targets, subsets, &|| false)
    }

    /// Where the run started, when the start was chosen ('auto' depth, or 'auto' unit
    /// scale with centring); None when there was nothing to choose.
    pub fn start_choice(&self) -> Option<&StartChoice> {
        self.start_choice.as_ref()
    }

    /// Group scores of `subsets` (indices into the data) for `targets`, every member
    /// counted, without gradients.
    fn scores(
        &self,
        targets: &[usize],
        subsets: &[usize],
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Vec<Vec<f64>>> {
        let members: Vec<Vec<usize>> = subsets
            .iter()
            .map(|&s| self.data.subsets[s].clone())
            .collect();
        let union = Union::new(&members, |i| self.examples.cost(i));
        let t = self.embed(&self.targets, targets, interrupted)?;
        let u = self.embed(&self.examples, &union.examples, interrupted)?;
        union.group_scores(&t, &u, self.options.pooling)
    }

    /// The ranking loss of `batch` and its gradient for every trainable variable, by
    /// union encoding and the memory trick (module docs).
    fn loss_and_gradients(
        &self,
        batch: &Batch,
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Ranked, Gradients)> {
        let pooling = self.options.pooling;

        // 1. Embeddings without gradients, each example once.
        let union = Union::new(&batch.members, |i| self.examples.cost(i));
        let t = self.embed(&self.targets, &batch.targets, interrupted)?;
        let u = self.embed(&self.examples, &union.examples, interrupted)?;

        // 2. Member scores, group scores, ranking loss and d loss / d group score.
        let scores = union.scores(&t, &u)?;
        let group_scores = pool_subsets(&scores, &union.positions, pooling);
        let batch_labels: Vec<Vec<f64>> = batch
            .targets
            .iter()
            .map(|&d| batch.subsets.iter().map(|&k| self.labels[d][k]).collect())
            .collect();
        let ranking = RankingLoss {
            t_min: self.options.t_min,
            t_max: self.options.t_max,
        };
        let ranked = ranking.loss_and_grad(&group_scores, &batch_labels);

        // 3. G = d loss / d A per (target, example of the union), then d loss / d T, U.
        let (nt, nu) = (batch.targets.len(), union.examples.len());
        let mut g = vec![0f32; nt * nu];
        for (k, positions) in union.positions.iter().enumerate() {
            for d in 0..nt {
                let members: Vec<f64> = positions.iter().map(|&p| scores[d][p]).collect();
                let slopes = pool_slopes(&members, group_scores[d][k], pooling);
                let upstream = ranked.grad[d][k];
                for (&p, slope) in positions.iter().zip(slopes) {
                    g[d * nu + p] += (upstream * slope) as f32;
                }
            }
        }
        let g = Tensor::from_vec(g, (nt, nu), t.device())?;
        let d_t = g.matmul(&u)?;
        let d_u = g.t()?.matmul(&t)?;

        // 4. Re-encode with gradients and back-propagate chunk by chunk.
        let mut grads = Gradients::new(self.vars.clone());
        self.backprop(&self.targets, &batch.targets, &d_t, &mut grads, interrupted)?;
        self.backprop(
            &self.examples,
            &union.examples,
            &d_u,
            &mut grads,
            interrupted,
        )?;
        let ranked = Ranked {
            loss: ranked.loss,
            kept_pairs: ranked.kept_pairs,
            group_scores,
        };
        Ok((ranked, grads))
    }

    /// Embeddings `[rows, dim]` of `rows` of `inputs`, detached from the weights.
    fn embed(
        &self,
        inputs: &Inputs,
        rows: &[usize],
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Tensor> {
        let parts = inputs
            .chunks(rows, self.options.chunk_rows)
            .into_iter()
            .map(|chunk| {
                checked(interrupted)?;
                Ok(inputs.forward(&self.model, chunk)?.detach())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Adds to `grads` the weight gradient of `sum(E ⊙ upstream)`, E the embeddings of
    /// `rows` re-encoded with gradients.
    fn backprop(
        &self,
        inputs: &Inputs,
        rows: &[usize],
        upstream: &Tensor,
        grads: &mut Gradients,
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<()> {
        let mut offset = 0;
        for chunk in inputs.chunks(rows, self.options.chunk_rows) {
            checked(interrupted)?;
            let upstream = upstream.narrow(0, offset, chunk.len())?;
            offset += chunk.len();
            let share = (inputs.forward(&self.model, chunk)? * upstream)?.sum_all()?;
            grads.add(&share.backward()?)?;
        }
        Ok(())
    }
}

/// The forward half of a step.
struct Ranked {
    loss: f64,
    kept_pairs: usize,
    group_scores: Vec<Vec<f64>>,
}

fn checked(interrupted: &(dyn Fn() -> bool + Sync)) -> Result<()> {
    if interrupted() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

/// Whether the encoder variable `name` trains under `layers` (the projector always does).
fn trains(name: &str, layers: TrainLayers, num_layers: usize) -> bool {
    match layers {
        TrainLayers::All => true,
        TrainLayers::Projector => false,
        TrainLayers::Top(n) => layer_of(name).is_some_and(|layer| layer + n >= num_layers),
    }
}
