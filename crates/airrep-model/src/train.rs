//! Training the AirRep encoder (DESIGN 1): rank training subsets by their attention-pooled
//! group scores the way retraining ranked them, with the paper's memory trick so that a
//! step's memory does not grow with the number of subsets it ranks.
//!
//! One step, for targets T and subsets S sampled from the data:
//! 1. encode T and every subset's members M_S without gradients;
//! 2. member scores s = T·M_Sᵀ, group scores by pooling, the ranking loss and
//!    d loss / d score (airrep-core);
//! 3. the chain rule by hand: G_S = d loss / d s through the pooling, then
//!    d loss / d T = Σ_S G_S·M_S and d loss / d M_S = G_Sᵀ·T;
//! 4. re-encode T, then one subset at a time (at most `chunk_rows` texts per pass), with
//!    gradients, and back-propagate `sum(E ⊙ d loss / d E)`: its weight gradient is exactly
//!    the share of d loss / d θ that flows through E, so the shares add up to the full
//!    gradient;
//! 5. clip to global norm 1 and take an AdamW step with warm-up.
//!
//! The encoder, its gradients and the optimiser state live on [`TrainOptions::device`],
//! all f32; the scores, pooling and ranking loss of steps 2 and 3 run on the host.

use airrep_core::group::{pool, Pooling};
use airrep_core::ranking::{labels, RankingLoss};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::checkpoint::Checkpoint;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::tokenize::{TextTokenizer, TokenBatch, DEFAULT_MAX_LENGTH};
use crate::trainable::TrainableModel;

/// The paper's AdamW moments and epsilon, and its gradient clipping norm; not options.
const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;
const CLIP_NORM: f64 = 1.0;

/// Texts per forward pass. The gradient pass back-propagates each chunk on its own, so the
/// autograd graph, the bulk of a step's memory (about 3 GB for MiniLM-L6 on 32 texts of
/// ~110 tokens), is bounded by this and grows neither with subsets_per_step nor with the
/// size of a subset or of the target batch.
const CHUNK_ROWS: usize = 32;

/// Texts and the losses measured by retraining on subsets of them.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainData {
    /// Training examples (already formatted, see `format_pair`).
    pub examples: Vec<String>,
    /// Target examples whose losses were measured.
    pub targets: Vec<String>,
    /// Each subset's members, as indices into `examples`.
    pub subsets: Vec<Vec<usize>>,
    /// `losses[subset][target]`: the target's loss after training on the subset.
    pub losses: Vec<Vec<f64>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// How many steps the caller runs ([`Trainer::step`] takes one at a time).
    pub steps: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// `lr_t = lr · min(1, (t + 1) / warmup_steps)`; 0 means no warm-up.
    pub warmup_steps: usize,
    /// Targets and subsets ranked per step; all of them, in order, when at least the total.
    pub targets_per_step: usize,
    pub subsets_per_step: usize,
    /// Larger subsets are represented by a sample of this many members per step.
    pub max_members_per_subset: usize,
    pub t_min: f64,
    pub t_max: f64,
    pub pooling: Pooling,
    /// Drives batch sampling and a base model's fresh projector.
    pub seed: u64,
    pub max_length: usize,
    /// Where the encoder trains (f32 weights, gradients and optimiser state on any device).
    pub device: DeviceSpec,
    /// Texts per forward pass (default 32): bounds a step's autograd memory.
    /// Larger chunks keep a GPU busier; the gradient is the same for any value.
    pub chunk_rows: usize,
}

impl Default for TrainOptions {
    /// The paper's values: 1000 targets x 32 subsets of up to 1000 members per step, up to
    /// 2000 steps; warm-up of 10 steps as in the reference implementation.
    fn default() -> Self {
        TrainOptions {
            steps: 2000,
            lr: 1e-4,
            weight_decay: 0.01,
            warmup_steps: 10,
            targets_per_step: 1000,
            subsets_per_step: 32,
            max_members_per_subset: 1000,
            t_min: 0.1,
            t_max: 5.0,
            pooling: Pooling::Attention,
            seed: 0,
            max_length: DEFAULT_MAX_LENGTH,
            device: DeviceSpec::Cpu,
            chunk_rows: CHUNK_ROWS,
        }
    }
}

fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Input(message()))
    }
}

impl TrainOptions {
    pub fn validate(&self) -> Result<()> {
        ensure(self.steps > 0, || "steps must be at least 1".into())?;
        ensure(self.lr.is_finite() && self.lr > 0.0, || {
            format!("lr must be a positive number, got {}", self.lr)
        })?;
        ensure(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            || format!("weight_decay must be 0 or more, got {}", self.weight_decay),
        )?;
        ensure(self.targets_per_step > 0, || {
            "targets_per_step must be at least 1".into()
        })?;
        ensure(self.subsets_per_step >= 2, || {
            format!(
                "subsets_per_step must be at least 2 (the ranking loss compares pairs of \
                 subsets), got {}",
                self.subsets_per_step
            )
        })?;
        ensure(self.max_members_per_subset > 0, || {
            "max_members_per_subset must be at least 1".into()
        })?;
        ensure(self.chunk_rows > 0, || {
            "chunk_rows must be at least 1".into()
        })?;
        ensure(self.t_min.is_finite() && self.t_min >= 0.0, || {
            format!("t_min must be 0 or more, got {}", self.t_min)
        })?;
        ensure(self.t_max.is_finite() && self.t_max > self.t_min, || {
            format!(
                "t_max must be greater than t_min ({}), got {}",
                self.t_min, self.t_max
            )
        })?;
        ensure(self.max_length >= 2, || {
            format!(
                "max_length must be at least 2 ([CLS] and [SEP]), got {}",
                self.max_length
            )
        })
    }

    /// The learning rate of step `step` (from 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup_steps == 0 {
            return self.lr;
        }
        self.lr * ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
    }
}

impl TrainData {
    fn validate(&self) -> Result<()> {
        ensure(!self.targets.is_empty(), || "no targets".into())?;
        ensure(self.subsets.len() >= 2, || {
            format!(
                "{} subset(s): the ranking loss needs at least 2",
                self.subsets.len()
            )
        })?;
        ensure(self.losses.len() == self.subsets.len(), || {
            format!(
                "losses has {} rows but there are {} subsets (one row per subset expected)",
                self.losses.len(),
                self.subsets.len()
            )
        })?;
        for (s, members) in self.subsets.iter().enumerate() {
            ensure(!members.is_empty(), || format!("subset {s} is empty"))?;
            if let Some(&i) = members.iter().find(|&&i| i >= self.examples.len()) {
                return Err(Error::Input(format!(
                    "subset {s} names example {i}, but there are only {} examples",
                    self.examples.len()
                )));
            }
        }
        for (s, row) in self.losses.iter().enumerate() {
            ensure(row.len() == self.targets.len(), || {
                format!(
                    "losses[{s}] has {} entries but there are {} targets",
                    row.len(),
                    self.targets.len()
                )
            })?;
            if let Some(d) = row.iter().position(|l| !l.is_finite()) {
                return Err(Error::Input(format!(
                    "losses[{s}][{d}] is {}: losses must be finite",
                    row[d]
                )));
            }
        }
        Ok(())
    }
}

/// What one step saw, before its update.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLog {
    pub step: usize,
    pub loss: f64,
    /// Global gradient norm over every trainable tensor, before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    pub kept_pairs: usize,
    /// `[target][subset]` of this step's batch.
    pub group_scores: Vec<Vec<f64>>,
}

pub struct Trainer {
    model: TrainableModel,
    tokenizer: TextTokenizer,
    data: TrainData,
    /// `labels[target][subset]` over all subsets of the data (DESIGN 1), fixed for the run.
    labels: Vec<Vec<f64>>,
    options: TrainOptions,
    optimizer: AdamW,
    rng: SplitMix64,
    step: usize,
    /// [`TrainOptions::chunk_rows`]; a field so tests can force several chunks on tiny data.
    chunk_rows: usize,
}

/// The examples one step ranks.
struct Batch {
    targets: Vec<usize>,
    subsets: Vec<usize>,
    /// Per subset of `subsets`, its (sampled) members.
    members: Vec<Vec<usize>>,
}

/// The forward half of a step.
struct Ranked {
    loss: f64,
    kept_pairs: usize,
    group_scores: Vec<Vec<f64>>,
}

impl Trainer {
    pub fn new(
        checkpoint: &Checkpoint,
        tokenizer_json: &[u8],
        data: TrainData,
        options: TrainOptions,
    ) -> Result<Self> {
        options.validate()?;
        data.validate()?;
        let config = &checkpoint.config;
        let tokenizer = TextTokenizer::for_model(tokenizer_json, options.max_length, config)?;
        let model = TrainableModel::new(checkpoint, options.seed, &options.device.create()?)?;
        let optimizer = AdamW::new(
            model.vars(),
            ParamsAdamW {
                lr: options.lr,
                beta1: BETA1,
                beta2: BETA2,
                eps: EPS,
                weight_decay: options.weight_decay,
            },
        )?;
        Ok(Self {
            labels: labels(&data.losses),
            rng: SplitMix64(options.seed),
            chunk_rows: options.chunk_rows,
            model,
            tokenizer,
            data,
            options,
            optimizer,
            step: 0,
        })
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> usize {
        self.step
    }

    /// One optimiser step. `interrupted` is polled before each subset (and the targets) in
    /// both passes; if it returns true the step stops with [`Error::Cancelled`] and the
    /// trainer is left as it was.
    pub fn step(&mut self, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<StepLog> {
        // The sampler advances only with a completed step, so a retried step is the same.
        let mut rng = self.rng.clone();
        let batch = sample_batch(&mut rng, &self.data, &self.options);
        let (ranked, grads) = self.loss_and_gradients(&batch, interrupted)?;
        self.rng = rng;
        let grad_norm = grads.norm()?;
        // torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when below 1.
        let clip = (CLIP_NORM / (grad_norm + 1e-6)).min(1.0);
        let lr = self.options.lr_at(self.step);
        self.optimizer.set_learning_rate(lr);
        self.optimizer.step(&grads.into_store(clip)?)?;
        self.step += 1;
        Ok(StepLog {
            step: self.step - 1,
            loss: ranked.loss,
            grad_norm,
            lr,
            kept_pairs: ranked.kept_pairs,
            group_scores: ranked.group_scores,
        })
    }

    /// Group scores `[target][subset]` with the current weights and every member of each
    /// subset, without gradients (for validation LDS).
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
        let t = self.embed(&self.tokenize(targets.iter().map(|&d| &self.data.targets[d]))?)?;
        let member_scores = subsets
            .iter()
            .map(|&s| {
                let members = self.data.subsets[s].iter().map(|&i| &self.data.examples[i]);
                dot_products(&t, &self.embed(&self.tokenize(members)?)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(pool_groups(&member_scores, self.options.pooling))
    }

    pub fn into_checkpoint(self) -> Result<Checkpoint> {
        self.model.to_checkpoint()
    }

    /// The ranking loss of `batch` and its gradient for every trainable variable, by the
    /// memory trick (module docs).
    fn loss_and_gradients(
        &self,
        batch: &Batch,
        interrupted: &(dyn Fn() -> bool + Sync),
    ) -> Result<(Ranked, Gradients)> {
        let check = || {
            if interrupted() {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        };
        let pooling = self.options.pooling;

        // 1. Embeddings without gradients.
        check()?;
        let target_ids = self.tokenize(batch.targets.iter().map(|&d| &self.data.targets[d]))?;
        let t = self.embed(&target_ids)?;
        let mut member_ids = Vec::with_capacity(batch.members.len());
        let mut m = Vec::with_capacity(batch.members.len());
        for members in &batch.members {
            check()?;
            let ids = self.tokenize(members.iter().map(|&i| &self.data.examples[i]))?;
            m.push(self.embed(&ids)?);
            member_ids.push(ids);
        }

        // 2. Member scores s = T·M_Sᵀ, group scores, ranking loss and d loss / d score.
        let s = m
            .iter()
            .map(|m| dot_products(&t, m))
            .collect::<Result<Vec<_>>>()?;
        let group_scores = pool_groups(&s, pooling);
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

        // 3. G_S = d loss / d s, then d loss / d T and d loss / d M_S.
        let mut d_t = t.zeros_like()?;
        let mut d_m = Vec::with_capacity(m.len());
        for (k, (s_k, m_k)) in s.iter().zip(&m).enumerate() {
            let g: Vec<f32> = s_k
                .iter()
                .enumerate()
                .flat_map(|(d, row)| {
                    let upstream = ranked.grad[d][k];
                    pooling_slopes(row, group_scores[d][k], pooling)
                        .into_iter()
                        .map(move |slope| (upstream * slope) as f32)
                })
                .collect();
            let g = Tensor::from_vec(g, (s_k.len(), m_k.dim(0)?), t.device())?;
            d_t = (d_t + g.matmul(m_k)?)?;
            d_m.push(g.t()?.matmul(&t)?);
        }

        // 4. Re-encode with gradients, the targets and then one subset at a time.
        let mut grads = Gradients::new(self.model.vars());
        check()?;
        self.backprop(&target_ids, &d_t, &mut grads)?;
        for (ids, d_m_k) in member_ids.iter().zip(&d_m) {
            check()?;
            self.backprop(ids, d_m_k, &mut grads)?;
        }
        let ranked = Ranked {
            loss: ranked.loss,
            kept_pairs: ranked.kept_pairs,
            group_scores,
        };
        Ok((ranked, grads))
    }

    fn tokenize<'a>(&self, texts: impl Iterator<Item = &'a String>) -> Result<Vec<Vec<u32>>> {
        let texts: Vec<&str> = texts.map(String::as_str).collect();
        self.tokenizer.encode_all(&texts)
    }

    fn forward(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let sequences: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        self.model
            .forward(&TokenBatch::new(&sequences, self.tokenizer.pad_id()))
    }

    /// Embeddings `[n, dim]` of tokenised texts, detached from the weights.
    fn embed(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        let parts = ids
            .chunks(self.chunk_rows)
            .map(|chunk| Ok(self.forward(chunk)?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Adds to `grads` the weight gradient of `sum(E ⊙ upstream)`, E the embeddings of
    /// `ids` re-encoded with gradients.
    fn backprop(&self, ids: &[Vec<u32>], upstream: &Tensor, grads: &mut Gradients) -> Result<()> {
        for (c, chunk) in ids.chunks(self.chunk_rows).enumerate() {
            let upstream = upstream.narrow(0, c * self.chunk_rows, chunk.len())?;
            let share = (self.forward(chunk)? * upstream)?.sum_all()?;
            grads.add(&share.backward()?)?;
        }
        Ok(())
    }
}

fn sample_batch(rng: &mut SplitMix64, data: &TrainData, options: &TrainOptions) -> Batch {
    let targets = rng.sample(data.targets.len(), options.targets_per_step);
    let subsets = rng.sample(data.subsets.len(), options.subsets_per_step);
    let members = subsets
        .iter()
        .map(|&k| {
            let all = &data.subsets[k];
            rng.sample(all.len(), options.max_members_per_subset)
                .into_iter()
                .map(|i| all[i])
                .collect()
        })
        .collect();
    Batch {
        targets,
        subsets,
        members,
    }
}

/// `[targets, dim] · [members, dim]ᵀ` as `[target][member]`.
fn dot_products(t: &Tensor, m: &Tensor) -> Result<Vec<Vec<f64>>> {
    let s = t.matmul(&m.t()?)?.to_vec2::<f32>()?;
    Ok(s.into_iter()
        .map(|row| row.into_iter().map(f64::from).collect())
        .collect())
}

/// Group scores `[target][subset]` from member scores `[subset][target][member]`.
fn pool_groups(member_scores: &[Vec<Vec<f64>>], pooling: Pooling) -> Vec<Vec<f64>> {
    let targets = member_scores.first().map_or(0, Vec::len);
    (0..targets)
        .map(|d| {
            member_scores
                .iter()
                .map(|s| pool(s[d].iter().copied(), pooling).expect("subsets are not empty"))
                .collect()
        })
        .collect()
}

/// d score / d s_i for one group. Attention: a = softmax(|s|), score = Σ a_i s_i, so
/// d score / d s_i = a_i · (1 + sign(s_i) · (s_i − score)). Sum: 1.
fn pooling_slopes(s: &[f64], score: f64, pooling: Pooling) -> Vec<f64> {
    match pooling {
        Pooling::Sum => vec![1.0; s.len()],
        Pooling::Attention => {
            let max = s.iter().fold(0.0f64, |m, x| m.max(x.abs()));
            let weights: Vec<f64> = s.iter().map(|x| (x.abs() - max).exp()).collect();
            let z: f64 = weights.iter().sum();
            s.iter()
                .zip(&weights)
                .map(|(&x, &w)| {
                    // torch's sign: d|x|/dx = 0 at 0
                    let sign = if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        0.0
                    };
                    w / z * (1.0 + sign * (x - score))
                })
                .collect()
        }
    }
}

/// Weight gradients summed over several backward passes, one slot per variable.
struct Gradients {
    vars: Vec<Var>,
    sums: Vec<Option<Tensor>>,
}

impl Gradients {
    fn new(vars: Vec<Var>) -> Self {
        let sums = vec![None; vars.len()];
        Self { vars, sums }
    }

    fn add(&mut self, store: &GradStore) -> Result<()> {
        for (var, sum) in self.vars.iter().zip(&mut self.sums) {
            if let Some(g) = store.get(var.as_tensor()) {
                *sum = Some(match sum.take() {
                    Some(total) => (total + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// The global L2 norm over every variable.
    fn norm(&self) -> Result<f64> {
        let mut squares = 0.0;
        for g in self.sums.iter().flatten() {
            squares += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        Ok(squares.sqrt())
    }

    /// The gradients times `scale`, as the optimiser takes them.
    fn into_store(self, scale: f64) -> Result<GradStore> {
        let mut store = GradStore::default();
        for (var, sum) in self.vars.iter().zip(self.sums) {
            if let Some(g) = sum {
                store.insert(var.as_tensor(), (g * scale)?);
            }
        }
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde::Deserialize;

    use super::*;
    use crate::testing::golden_dir;

    /// `tests/golden/train_steps.json`.
    #[derive(Deserialize)]
    struct GoldenTraining {
        targets: Vec<String>,
        subsets: Vec<Vec<String>>,
        subset_losses: Vec<Vec<f64>>,
        labels: Vec<Vec<f64>>,
        optimizer: GoldenOptimizer,
        trace: Vec<GoldenStep>,
        group_scores_after: Vec<Vec<f64>>,
        projector_weight_after_first_row: Vec<f64>,
    }

    #[derive(Deserialize)]
    struct GoldenOptimizer {
        lr: f64,
        weight_decay: f64,
        warmup_steps: usize,
        t_min: f64,
        t_max: f64,
    }

    #[derive(Deserialize)]
    struct GoldenStep {
        lr: f64,
        loss: f64,
        grad_norm_before_clip: f64,
        group_scores: Vec<Vec<f64>>,
    }

    fn golden() -> GoldenTraining {
        let bytes = std::fs::read(golden_dir("train_steps.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// The golden data as `TrainData`: the subsets' members laid end to end as examples.
    fn golden_data(golden: &GoldenTraining) -> TrainData {
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

    fn golden_options(golden: &GoldenTraining) -> TrainOptions {
        let o = &golden.optimizer;
        TrainOptions {
            steps: golden.trace.len(),
            lr: o.lr,
            weight_decay: o.weight_decay,
            warmup_steps: o.warmup_steps,
            targets_per_step: golden.targets.len(),
            subsets_per_step: golden.subsets.len(),
            max_members_per_subset: golden.subsets.iter().map(Vec::len).max().unwrap(),
            t_min: o.t_min,
            t_max: o.t_max,
            ..TrainOptions::default()
        }
    }

    fn tiny_trainer(data: TrainData, options: TrainOptions) -> Result<Trainer> {
        let dir = golden_dir("tiny-airrep");
        let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        Trainer::new(&Checkpoint::from_dir(&dir)?, &tokenizer_json, data, options)
    }

    fn never() -> bool {
        false
    }

    fn assert_rel(got: f64, want: f64, tol: f64, what: &str) {
        let err = (got - want).abs() / want.abs().max(1e-12);
        assert!(
            err <= tol,
            "{what}: got {got}, want {want} (relative error {err:e})"
        );
    }

    fn assert_matrix_rel(got: &[Vec<f64>], want: &[Vec<f64>], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: rows");
        for (d, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.len(), w.len(), "{what}: row {d}");
            for (k, (g, w)) in g.iter().zip(w).enumerate() {
                assert_rel(*g, *w, tol, &format!("{what}[{d}][{k}]"));
            }
        }
    }

    #[test]
    fn train_reproduces_golden_steps() {
        let golden = golden();
        let data = golden_data(&golden);
        let mut trainer = tiny_trainer(data, golden_options(&golden)).unwrap();
        assert_matrix_rel(&trainer.labels, &golden.labels, 1e-12, "labels");
        for (t, want) in golden.trace.iter().enumerate() {
            let log = trainer.step(&never).unwrap();
            eprintln!(
                "step {t}: loss {} (golden {}), grad norm {} (golden {})",
                log.loss, want.loss, log.grad_norm, want.grad_norm_before_clip
            );
            assert_eq!(log.step, t);
            assert_rel(log.lr, want.lr, 1e-12, &format!("step {t} lr"));
            assert_rel(log.loss, want.loss, 1e-4, &format!("step {t} loss"));
            assert_rel(
                log.grad_norm,
                want.grad_norm_before_clip,
                1e-4,
                &format!("step {t} grad norm"),
            );
            assert_matrix_rel(
                &log.group_scores,
                &want.group_scores,
                1e-4,
                &format!("step {t} group scores"),
            );
        }
        let all_targets: Vec<usize> = (0..golden.targets.len()).collect();
        let all_subsets: Vec<usize> = (0..golden.subsets.len()).collect();
        let after = trainer.group_scores(&all_targets, &all_subsets).unwrap();
        assert_matrix_rel(
            &after,
            &golden.group_scores_after,
            1e-3,
            "group scores after",
        );

        let checkpoint = trainer.into_checkpoint().unwrap();
        let row = checkpoint.tensors()["projector.weight"]
            .get(0)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        crate::testing::assert_close(
            &row,
            &golden.projector_weight_after_first_row,
            1e-4,
            "projector row 0",
        );
    }

    /// The gradient without the trick: everything encoded with gradients in one graph,
    /// pooling and the ranking loss in candle ops, one backward.
    fn direct_loss_and_gradients(trainer: &Trainer, batch: &Batch) -> (f64, Vec<Tensor>) {
        let ids = |texts: Vec<&String>| trainer.tokenize(texts.into_iter()).unwrap();
        let data = &trainer.data;
        let t = trainer
            .forward(&ids(batch
                .targets
                .iter()
                .map(|&d| &data.targets[d])
                .collect()))
            .unwrap();
        let scores: Vec<Tensor> = batch
            .members
            .iter()
            .map(|members| {
                let m = trainer
                    .forward(&ids(members.iter().map(|&i| &data.examples[i]).collect()))
                    .unwrap();
                let s = t.matmul(&m.t().unwrap()).unwrap();
                match trainer.options.pooling {
                    Pooling::Sum => s.sum(1).unwrap(),
                    Pooling::Attention => {
                        let a = candle_nn::ops::softmax(&s.abs().unwrap(), 1).unwrap();
                        (a * s).unwrap().sum(1).unwrap()
                    }
                }
            })
            .collect();
        let scores = Tensor::stack(&scores, 1).unwrap(); // [target, subset]
        let (mut winners, mut losers, mut weights) = (vec![], vec![], vec![]);
        let ns = batch.subsets.len();
        for (row, &d) in batch.targets.iter().enumerate() {
            for j in 0..ns {
                for k in 0..ns {
                    let gap =
                        trainer.labels[d][batch.subsets[j]] - trainer.labels[d][batch.subsets[k]];
                    if gap > trainer.options.t_min {
                        winners.push((row * ns + j) as u32);
                        losers.push((row * ns + k) as u32);
                        weights.push(gap.min(trainer.options.t_max) as f32);
                    }
                }
            }
        }
        let n = weights.len();
        let pick = |idx: Vec<u32>| {
            let idx = Tensor::from_vec(idx, n, scores.device()).unwrap();
            scores.flatten_all().unwrap().index_select(&idx, 0).unwrap()
        };
        let margin = (pick(winners) - pick(losers)).unwrap();
        // softplus(-margin) = log(1 + exp(-margin)); margins here are small.
        let softplus = (margin.neg().unwrap().exp().unwrap() + 1.0)
            .unwrap()
            .log()
            .unwrap();
        let weights = Tensor::from_vec(weights, n, scores.device()).unwrap();
        let loss = ((softplus * weights).unwrap().sum_all().unwrap() / n as f64).unwrap();
        let grads = loss.backward().unwrap();
        let per_var = trainer
            .model
            .vars()
            .iter()
            .map(|v| {
                grads
                    .get(v.as_tensor())
                    .expect("every weight has a gradient")
                    .clone()
            })
            .collect();
        (f64::from(loss.to_scalar::<f32>().unwrap()), per_var)
    }

    #[test]
    fn memory_trick_gradients_equal_full_graph_gradients() {
        let golden = golden();
        for pooling in [Pooling::Attention, Pooling::Sum] {
            let options = TrainOptions {
                targets_per_step: 3,
                max_members_per_subset: 4, // sampled members
                pooling,
                ..golden_options(&golden)
            };
            let mut trainer = tiny_trainer(golden_data(&golden), options).unwrap();
            trainer.chunk_rows = 3; // targets in one chunk, members in two
            let batch = sample_batch(&mut trainer.rng, &trainer.data, &trainer.options);
            let (ranked, trick) = trainer.loss_and_gradients(&batch, &never).unwrap();
            let (loss, direct) = direct_loss_and_gradients(&trainer, &batch);
            assert!(ranked.kept_pairs > 0);
            assert_rel(ranked.loss, loss, 1e-5, &format!("{pooling:?} loss"));
            // Relative per tensor, with a floor: the key biases' true gradient is 0 (softmax
            // ignores a per-query constant), so both sides are rounding noise there.
            let l2 = |t: &Tensor| {
                f64::from(
                    t.sqr()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap(),
                )
                .sqrt()
            };
            let global = direct.iter().map(|g| l2(g).powi(2)).sum::<f64>().sqrt();
            for ((name, _), (got, want)) in trainer
                .model
                .named_vars()
                .iter()
                .zip(trick.sums.iter().zip(&direct))
            {
                let err = l2(&(got.as_ref().unwrap() - want).unwrap());
                let scale = l2(want).max(1e-3 * global);
                assert!(
                    err <= 1e-4 * scale,
                    "{pooling:?} d loss / d {name}: error {err:e}, norm {:e}",
                    l2(want)
                );
            }
        }
    }

    #[test]
    fn sampling_is_deterministic_and_uses_everything_when_asked() {
        let mut rng = SplitMix64(7);
        assert_eq!(rng.sample(5, 5), vec![0, 1, 2, 3, 4]);
        assert_eq!(rng.sample(3, 10), vec![0, 1, 2]);
        let picked = rng.sample(100, 10);
        assert_eq!(picked.len(), 10);
        assert!(picked.windows(2).all(|w| w[0] < w[1]) && picked[9] < 100);
        assert_eq!(SplitMix64(7).sample(100, 10), SplitMix64(7).sample(100, 10));
        assert_ne!(SplitMix64(7).sample(100, 10), SplitMix64(8).sample(100, 10));
    }

    fn rejected(options: TrainOptions) -> String {
        match options.validate() {
            Err(Error::Input(message)) => message,
            other => panic!("{options:?} accepted: {other:?}"),
        }
    }

    #[test]
    fn options_validation_names_the_bad_value() {
        let good = TrainOptions::default();
        good.validate().unwrap();
        let cases: [(TrainOptions, &str); 10] = [
            (
                TrainOptions {
                    steps: 0,
                    ..good.clone()
                },
                "steps must be at least 1",
            ),
            (
                TrainOptions {
                    lr: 0.0,
                    ..good.clone()
                },
                "lr must be a positive number, got 0",
            ),
            (
                TrainOptions {
                    lr: f64::NAN,
                    ..good.clone()
                },
                "lr must be a positive number, got NaN",
            ),
            (
                TrainOptions {
                    weight_decay: -0.1,
                    ..good.clone()
                },
                "weight_decay must be 0 or more",
            ),
            (
                TrainOptions {
                    targets_per_step: 0,
                    ..good.clone()
                },
                "targets_per_step must be at least 1",
            ),
            (
                TrainOptions {
                    subsets_per_step: 1,
                    ..good.clone()
                },
                "subsets_per_step must be at least 2",
            ),
            (
                TrainOptions {
                    max_members_per_subset: 0,
                    ..good.clone()
                },
                "max_members_per_subset must be at least 1",
            ),
            (
                TrainOptions {
                    t_min: -1.0,
                    ..good.clone()
                },
                "t_min must be 0 or more",
            ),
            (
                TrainOptions {
                    t_max: 0.1,
                    ..good.clone()
                },
                "t_max must be greater than t_min (0.1), got 0.1",
            ),
            (
                TrainOptions {
                    max_length: 1,
                    ..good.clone()
                },
                "max_length must be at least 2",
            ),
        ];
        for (options, expected) in cases {
            let message = rejected(options);
            assert!(
                message.contains(expected),
                "{message:?} does not say {expected:?}"
            );
        }
        assert_eq!(good.lr_at(0), good.lr / 10.0);
        assert_eq!(good.lr_at(9), good.lr);
        assert_eq!(
            TrainOptions {
                warmup_steps: 0,
                ..good.clone()
            }
            .lr_at(0),
            good.lr
        );
    }

    #[test]
    fn bad_data_and_lengths_are_rejected_with_clear_messages() {
        let golden = golden();
        let good = golden_data(&golden);
        let mut cases: Vec<(TrainData, TrainOptions, &str)> = Vec::new();
        let options = golden_options(&golden);
        let mut data = good.clone();
        data.subsets[1].push(99);
        cases.push((
            data,
            options.clone(),
            "subset 1 names example 99, but there are only 15 examples",
        ));
        let mut data = good.clone();
        data.subsets[2].clear();
        cases.push((data, options.clone(), "subset 2 is empty"));
        let mut data = good.clone();
        data.losses[0][3] = f64::INFINITY;
        cases.push((
            data,
            options.clone(),
            "losses[0][3] is inf: losses must be finite",
        ));
        let mut data = good.clone();
        data.losses[1].pop();
        cases.push((
            data,
            options.clone(),
            "losses[1] has 3 entries but there are 4 targets",
        ));
        let mut data = good.clone();
        data.losses.pop();
        cases.push((
            data,
            options.clone(),
            "losses has 2 rows but there are 3 subsets",
        ));
        let mut data = good.clone();
        data.targets.clear();
        cases.push((data, options.clone(), "no targets"));
        cases.push((
            good.clone(),
            TrainOptions {
                max_length: 100_000,
                ..options.clone()
            },
            "max_length 100000 exceeds the model's max_position_embeddings",
        ));
        for (data, options, expected) in cases {
            match tiny_trainer(data, options) {
                Err(Error::Input(message)) => {
                    assert!(
                        message.contains(expected),
                        "{message:?} does not say {expected:?}"
                    )
                }
                Err(other) => panic!("wrong error for {expected:?}: {other}"),
                Ok(_) => panic!("accepted: {expected:?}"),
            }
        }
        let trainer = tiny_trainer(good, options).unwrap();
        assert!(
            matches!(trainer.group_scores(&[4], &[0]), Err(Error::Input(m)) if m.contains("target 4 out of range"))
        );
        assert!(
            matches!(trainer.group_scores(&[0], &[3]), Err(Error::Input(m)) if m.contains("subset 3 out of range"))
        );
    }

    #[test]
    fn interrupt_stops_the_step_and_leaves_the_weights() {
        let golden = golden();
        let options = golden_options(&golden);
        let mut trainer = tiny_trainer(golden_data(&golden), options.clone()).unwrap();
        let before = trainer.model.to_checkpoint().unwrap();

        // Polled at least once per subset.
        let calls = AtomicUsize::new(0);
        let counting = || {
            calls.fetch_add(1, Ordering::Relaxed);
            false
        };
        let mut counted = tiny_trainer(golden_data(&golden), options.clone()).unwrap();
        counted.step(&counting).unwrap();
        assert!(calls.load(Ordering::Relaxed) >= 2 * golden.subsets.len());

        // Cancelled immediately, and part-way through the gradient pass.
        for stop_at in [1, calls.load(Ordering::Relaxed)] {
            let polls = AtomicUsize::new(0);
            let cancel = || polls.fetch_add(1, Ordering::Relaxed) + 1 >= stop_at;
            assert!(matches!(trainer.step(&cancel), Err(Error::Cancelled)));
            assert_eq!(polls.load(Ordering::Relaxed), stop_at);
        }
        assert_eq!(trainer.steps_done(), 0);
        let after = trainer.model.to_checkpoint().unwrap();
        for (name, tensor) in before.tensors() {
            let diff = (tensor - &after.tensors()[name])
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap();
            assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0, "{name} changed");
        }
        // ... and the sampler too: the retried step is the one a fresh trainer takes.
        let options = TrainOptions {
            targets_per_step: 2,
            subsets_per_step: 2,
            ..options
        };
        let mut fresh = tiny_trainer(golden_data(&golden), options.clone()).unwrap();
        let mut retried = tiny_trainer(golden_data(&golden), options).unwrap();
        assert!(matches!(retried.step(&|| true), Err(Error::Cancelled)));
        assert_eq!(retried.step(&never).unwrap(), fresh.step(&never).unwrap());
    }

    #[test]
    fn base_model_trains_with_a_fresh_projector() {
        let golden = golden();
        let dir = golden_dir("tiny-airrep");
        let airrep = Checkpoint::from_dir(&dir).unwrap();
        let mut tensors = airrep.tensors().clone();
        tensors.retain(|name, _| !name.starts_with("projector."));
        let base = Checkpoint::new(airrep.config.clone(), tensors).unwrap();
        let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let mut trainer = Trainer::new(
            &base,
            &tokenizer_json,
            golden_data(&golden),
            golden_options(&golden),
        )
        .unwrap();
        let log = trainer.step(&never).unwrap();
        assert!(log.loss.is_finite() && log.grad_norm > 0.0 && log.kept_pairs > 0);
        assert!(trainer.into_checkpoint().unwrap().has_projector());
    }
}
