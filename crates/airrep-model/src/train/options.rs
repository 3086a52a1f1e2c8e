//! What a training run does: the recipe's defaults and their checks.

use std::fmt;
use std::str::FromStr;

use airrep_core::group::Pooling;

use candle_core::{DType, Device, Tensor};

use crate::checkpoint::Checkpoint;
use crate::device::DeviceSpec;
use crate::error::{Error, Result};
use crate::pooling::AUTO_RESPONSE_WEIGHTS;
use crate::rng::SplitMix64;
use crate::tokenize::DEFAULT_MAX_LENGTH;

/// How a base model's fresh projector starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectorInit {
    /// Weight I, bias 0: the trained model starts exactly at the base model's geometry, so
    /// step 0 is never worse than the base.
    Identity,
    /// Weight I, bias −μ with μ the mean pooled state of the training examples: the base
    /// geometry less the component that every text shares (a template, frequent words),
    /// which otherwise dominates every dot product. On the benchmark this alone lifted
    /// step-0 LDS more than any training of the uncentred start did. The trainer sets it,
    /// since it needs the examples.
    Centered,
    /// Weight and bias U(±1/sqrt(hidden)) like `torch.nn.Linear`, reproducibly from a seed
    /// (the reference implementation's start).
    Random,
}

impl std::fmt::Display for ProjectorInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Identity => "identity",
            Self::Centered => "centered",
            Self::Random => "random",
        })
    }
}

impl std::str::FromStr for ProjectorInit {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "identity" => Ok(Self::Identity),
            "centered" => Ok(Self::Centered),
            "random" => Ok(Self::Random),
            other => Err(Error::Input(format!(
                "unknown projector_init \"{other}\": expected 'centered', 'identity' or 'random'"
            ))),
        }
    }
}

impl ProjectorInit {
    /// Gives `checkpoint` this projector unless it has one; returns whether it did. `mean`
    /// (`[hidden]`) is the training examples' mean pooled state that 'centered' subtracts;
    /// without it, 'centered' gives the identity: the start a choice kept uncentred.
    pub fn give(
        self,
        checkpoint: &mut Checkpoint,
        seed: u64,
        mean: Option<&Tensor>,
    ) -> Result<bool> {
        if checkpoint.has_projector() {
            return Ok(false);
        }
        let hidden = checkpoint.config.hidden_size;
        let identity = || Tensor::eye(hidden, DType::F32, &Device::Cpu);
        let (weight, bias) = match (self, mean) {
            (Self::Centered, Some(mean)) => (identity()?, mean.neg()?),
            (Self::Centered | Self::Identity, _) => (
                identity()?,
                Tensor::zeros(hidden, DType::F32, &Device::Cpu)?,
            ),
            (Self::Random, _) => {
                let bound = 1.0 / (hidden as f32).sqrt();
                let mut rng = SplitMix64(seed);
                let mut uniform = |n: usize| -> Vec<f32> {
                    (0..n)
                        .map(|_| (2.0 * rng.next_unit() - 1.0) * bound)
                        .collect()
                };
                (
                    Tensor::from_vec(uniform(hidden * hidden), (hidden, hidden), &Device::Cpu)?,
                    Tensor::from_vec(uniform(hidden), hidden, &Device::Cpu)?,
                )
            }
        };
        checkpoint.set_projector(weight, bias)?;
        Ok(true)
    }
}

/// Texts per forward pass. The gradient pass back-propagates each chunk on its own, so the
/// autograd graph, the bulk of a step's memory (about 3 GB for MiniLM-L6 on 32 texts of
/// ~110 tokens through every layer), is bounded by this and grows neither with
/// subsets_per_step nor with the size of a subset or of the target batch.
const CHUNK_ROWS: usize = 32;

/// Which part of the encoder learns. The part below is frozen: its outputs are computed
/// once per text and cached for the run, so a step costs only the trainable part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainLayers {
    /// Only the projector, over cached pooled states: a step is a few small matrix
    /// products, so thousands of steps fit in minutes on a CPU.
    Projector,
    /// The top `n` transformer layers and the projector, over cached hidden states.
    Top(usize),
    /// Every weight, embeddings included (the paper's recipe; nothing is cached).
    All,
}

impl FromStr for TrainLayers {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "projector" => Ok(Self::Projector),
            "all" => Ok(Self::All),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Top(n)),
                _ => Err(Error::Input(format!(
                    "train_layers must be 'projector', 'all' or a number of top layers (1 or \
                     more), got \"{s}\""
                ))),
            },
        }
    }
}

impl TrainLayers {
    /// Whether a model with `layers` transformer layers has the layers to train.
    pub(crate) fn fits(self, layers: usize) -> Result<()> {
        match self {
            Self::Top(n) if n > layers => Err(Error::Input(format!(
                "train_layers {n} exceeds the model's {layers} layers"
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for TrainLayers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Projector => f.write_str("projector"),
            Self::Top(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}

/// How many of the starting model's transformer layers the trained encoder keeps, from the
/// bottom. Lower layers hold more of a text's surface form, which is often what decides
/// whether training on one text helps another; a shallower encoder is also cheaper to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every depth the training allows is scored by its LDS at step 0 over all the labels,
    /// from one forward pass, and the best is kept.
    Auto,
    /// Every layer.
    All,
    /// The bottom `n` layers.
    Layers(usize),
}

impl FromStr for Depth {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "all" => Ok(Self::All),
            n => match n.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Self::Layers(n)),
                _ => Err(Error::Input(format!(
                    "depth must be 'auto', 'all' or a number of layers (1 or more), got \"{s}\""
                ))),
            },
        }
    }
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::All => f.write_str("all"),
            Self::Layers(n) => write!(f, "{n}"),
        }
    }
}

/// Whether the trained encoder's embeddings have unit length times a scale (see
/// `Checkpoint::set_unit_scale`): a per-text normalisation the projector cannot learn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UnitScale {
    /// With attention pooling, scored with the start's other choices, off and at each of
    /// [`AUTO_UNIT_SCALES`], when the start is chosen (`depth` 'auto', or a centred
    /// projector); off otherwise, and always off with sum pooling.
    Auto,
    /// The projector's output as it is (the paper's form).
    Off,
    /// Always unit length, scaled to this.
    Fixed(f32),
}

/// The lengths `unit_scale` 'auto' scores. A score is the length squared times a cosine,
/// so the length sets how sharply attention pooling favours a subset's closest members.
/// On the character-level benchmark 2 was best at every depth, 1 and 3 within about a
/// point, 4 well below; on the team's subword-LM truth 3, the largest then scored, was
/// kept, so the grid reaches past it: the labels choose (docs/training.md).
pub const AUTO_UNIT_SCALES: [f32; 6] = [1.0, 1.5, 2.0, 3.0, 4.0, 6.0];

impl UnitScale {
    /// The scales a start is scored with under `pooling`: None is the projector's output
    /// as it is. 'auto' scores the lengths with attention pooling only: a sum of cosines
    /// tied a sum of dot products at step 0 on the benchmark, then trained 1.2-2.7 points
    /// worse on every seed tried (docs/training.md), and a sum ranks alike at every length.
    pub(crate) fn candidates(self, pooling: Pooling) -> Vec<Option<f32>> {
        let lengths = match pooling {
            Pooling::Sum => &[][..],
            Pooling::Attention => &AUTO_UNIT_SCALES[..],
        };
        match self {
            Self::Auto => std::iter::once(None)
                .chain(lengths.iter().map(|&s| Some(s)))
                .collect(),
            Self::Off => vec![None],
            Self::Fixed(scale) => vec![Some(scale)],
        }
    }
}

impl FromStr for UnitScale {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let wrong = || {
            Error::Input(format!(
                "unit_scale must be 'auto', 'off' or a positive number, got \"{s}\""
            ))
        };
        match s {
            "auto" => Ok(Self::Auto),
            "off" => Ok(Self::Off),
            n => match n.parse::<f32>() {
                Ok(scale) if scale.is_finite() && scale > 0.0 => Ok(Self::Fixed(scale)),
                _ => Err(wrong()),
            },
        }
    }
}

impl fmt::Display for UnitScale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Off => f.write_str("off"),
            Self::Fixed(scale) => write!(f, "{scale}"),
        }
    }
}

/// How much the response weighs in the mean pooling (see `crate::pooling`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResponseWeight {
    /// Scored with the start's other choices at each of [`AUTO_RESPONSE_WEIGHTS`] when the
    /// start is chosen (`depth` 'auto', or a centred projector with `unit_scale` 'auto')
    /// and some example is in the AirRep template; the plain mean otherwise.
    Auto,
    /// This weight for every response token, the others' being 1 (1: the plain mean).
    Fixed(f32),
}

impl ResponseWeight {
    /// The weights a start is scored with when it is chosen and the texts have responses.
    pub(crate) fn candidates(self) -> Vec<f32> {
        match self {
            Self::Auto => AUTO_RESPONSE_WEIGHTS.to_vec(),
            Self::Fixed(weight) => vec![weight],
        }
    }
}

impl FromStr for ResponseWeight {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            n => match n.parse::<f32>() {
                Ok(weight) if weight.is_finite() && weight > 0.0 => Ok(Self::Fixed(weight)),
                _ => Err(Error::Input(format!(
                    "response_weight must be 'auto' or a positive number (1: the plain mean), got \"{s}\""
                ))),
            },
        }
    }
}

impl fmt::Display for ResponseWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Fixed(weight) => write!(f, "{weight}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainOptions {
    /// At most this many optimiser steps (fewer when early stopping ends the run); 0 keeps
    /// the start, a control that shows what training adds.
    pub steps: usize,
    /// Learning rate of the encoder's layers (the body).
    pub lr: f64,
    /// Learning rate of the projector (the head).
    pub head_lr: f64,
    pub weight_decay: f64,
    /// `lr_t = lr · min(1, (t + 1) / warmup_steps)`, the same for head and body; 0 means
    /// no warm-up.
    pub warmup_steps: usize,
    /// Targets and subsets ranked per step; all of them, in order, when at least the total.
    pub targets_per_step: usize,
    pub subsets_per_step: usize,
    /// None (the default): every member of every subset counts in its group score, the
    /// exact objective. Some(k): larger subsets are represented by k sampled members, an
    /// explicit approximation for subsets too large to encode.
    pub max_members_per_subset: Option<usize>,
    pub t_min: f64,
    pub t_max: f64,
    pub pooling: Pooling,
    pub train_layers: TrainLayers,
    /// How many layers of the starting model the trained encoder keeps.
    pub depth: Depth,
    /// How a base model's fresh projector starts (a trained model keeps its own).
    pub projector_init: ProjectorInit,
    /// Whether the embeddings are scaled to one length.
    pub unit_scale: UnitScale,
    /// How much the response weighs in the pooling (a base that weights it keeps its own).
    pub response_weight: ResponseWeight,
    /// The share of subsets, and of targets, held out of training to choose the kept step
    /// by their LDS (held-out subsets ranked for held-out targets); 0 trains on all and
    /// keeps the last step.
    pub holdout_fraction: f64,
    /// Validate every this many steps (and at step 0 and the last step).
    pub eval_every: usize,
    /// Stop after this many validations in a row without a new best; 0 never stops early.
    pub patience: usize,
    /// Wall-clock budget in seconds for the whole run, caching included: no step starts
    /// after it (the weights are then validated once more and the best kept). 0 means no
    /// budget, for runs that must be reproducible step for step.
    pub max_seconds: f64,
    /// Drives the holdout split, batch sampling and a random projector.
    pub seed: u64,
    pub max_length: usize,
    /// Where the encoder trains (f32 weights, gradients and optimiser state on any device).
    pub device: DeviceSpec,
    /// Texts per forward pass (default 32): bounds a step's autograd memory.
    /// Larger chunks keep a GPU busier; the gradient is the same for any value.
    pub chunk_rows: usize,
}

impl Default for TrainOptions {
    /// The recipe that measured best (README, docs/training.md): the depth of the base
    /// with the best step-0 LDS, a centred projector, then the projector alone over cached
    /// pooled states, with the exact objective, held-out model selection, early stopping
    /// and a 20-minute budget (on the benchmark the run takes about 30 s on 2 cores).
    fn default() -> Self {
        TrainOptions {
            steps: 300,
            lr: 3e-4,
            head_lr: 3e-4,
            weight_decay: 0.01,
            warmup_steps: 5,
            targets_per_step: 64,
            subsets_per_step: 32,
            max_members_per_subset: None,
            t_min: 0.1,
            t_max: 5.0,
            pooling: Pooling::Attention,
            train_layers: TrainLayers::Projector,
            depth: Depth::Auto,
            projector_init: ProjectorInit::Centered,
            unit_scale: UnitScale::Auto,
            response_weight: ResponseWeight::Auto,
            holdout_fraction: 0.2,
            eval_every: 10,
            patience: 6,
            max_seconds: 1200.0,
            seed: 0,
            max_length: DEFAULT_MAX_LENGTH,
            device: DeviceSpec::Cpu,
            chunk_rows: CHUNK_ROWS,
        }
    }
}

pub(crate) fn ensure(ok: bool, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::Input(message()))
    }
}

fn positive(name: &str, value: f64) -> Result<()> {
    ensure(value.is_finite() && value > 0.0, || {
        format!("{name} must be a positive number, got {value}")
    })
}

/// The keys of [`TrainOptions::from_json`].
pub const OPTION_KEYS: &str = "steps, lr, head_lr, weight_decay, warmup_steps, targets_per_step, \
     subsets_per_step, max_members_per_subset, t_min, t_max, pooling, train_layers, depth, \
     projector_init, unit_scale, response_weight, holdout_fraction, eval_every, patience, max_seconds, seed, max_length";

impl TrainOptions {
    /// `base` with the keys of a JSON object applied (the form `airrep.train` takes), then
    /// checked. Unknown keys are errors, so a typo never trains silently with a default.
    /// `max_members_per_subset` may be null (every member); `train_layers` is a string or
    /// a number of top layers.
    pub fn from_json(json: &serde_json::Value, base: TrainOptions) -> Result<Self> {
        let serde_json::Value::Object(map) = json else {
            return Err(Error::Input("options must be a JSON object".into()));
        };
        let mut o = base;
        for (key, value) in map {
            let wrong = |what: &str| Error::Input(format!("option \"{key}\" must be {what}"));
            let number = || value.as_f64().ok_or_else(|| wrong("a number"));
            let count = || {
                value
                    .as_u64()
                    .map(|v| v as usize)
                    .ok_or_else(|| wrong("a non-negative integer"))
            };
            let text = || value.as_str().ok_or_else(|| wrong("a string"));
            match key.as_str() {
                "steps" => o.steps = count()?,
                "lr" => o.lr = number()?,
                "head_lr" => o.head_lr = number()?,
                "weight_decay" => o.weight_decay = number()?,
                "warmup_steps" => o.warmup_steps = count()?,
                "targets_per_step" => o.targets_per_step = count()?,
                "subsets_per_step" => o.subsets_per_step = count()?,
                "max_members_per_subset" if value.is_null() => o.max_members_per_subset = None,
                "max_members_per_subset" => o.max_members_per_subset = Some(count()?),
                "t_min" => o.t_min = number()?,
                "t_max" => o.t_max = number()?,
                "pooling" => {
                    o.pooling =
                        text()?
                            .parse()
                            .map_err(|e: airrep_core::group::UnknownPooling| {
                                Error::Input(e.to_string())
                            })?
                }
                "train_layers" if value.is_number() => {
                    o.train_layers = count()?.to_string().parse()?
                }
                "train_layers" => o.train_layers = text()?.parse()?,
                "depth" if value.is_number() => o.depth = count()?.to_string().parse()?,
                "depth" => o.depth = text()?.parse()?,
                "projector_init" => o.projector_init = text()?.parse()?,
                "unit_scale" if value.is_number() => {
                    o.unit_scale = number()?.to_string().parse()?
                }
                "unit_scale" => o.unit_scale = text()?.parse()?,
                "response_weight" if value.is_number() => {
                    o.response_weight = number()?.to_string().parse()?
                }
                "response_weight" => o.response_weight = text()?.parse()?,
                "holdout_fraction" => o.holdout_fraction = number()?,
                "eval_every" => o.eval_every = count()?,
                "patience" => o.patience = count()?,
                "max_seconds" => o.max_seconds = number()?,
                "seed" => o.seed = count()? as u64,
                "max_length" => o.max_length = count()?,
                other => {
                    return Err(Error::Input(format!(
                        "unknown training option \"{other}\" (known: {OPTION_KEYS})"
                    )))
                }
            }
        }
        o.check()?;
        Ok(o)
    }

    /// Every option as JSON, defaults included (what a saved model records it was trained
    /// with); [`Self::from_json`] reads it back.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "steps": self.steps, "lr": self.lr, "head_lr": self.head_lr,
            "weight_decay": self.weight_decay, "warmup_steps": self.warmup_steps,
            "targets_per_step": self.targets_per_step, "subsets_per_step": self.subsets_per_step,
            "max_members_per_subset": self.max_members_per_subset,
            "t_min": self.t_min, "t_max": self.t_max, "pooling": self.pooling.to_string(),
            "train_layers": self.train_layers.to_string(), "depth": self.depth.to_string(),
            "projector_init": self.projector_init.to_string(),
            "unit_scale": match self.unit_scale {
                UnitScale::Fixed(scale) => serde_json::json!(scale),
                other => serde_json::json!(other.to_string()),
            },
            "response_weight": match self.response_weight {
                ResponseWeight::Fixed(weight) => serde_json::json!(weight),
                ResponseWeight::Auto => serde_json::json!("auto"),
            },
            "holdout_fraction": self.holdout_fraction, "eval_every": self.eval_every,
            "patience": self.patience, "max_seconds": self.max_seconds, "seed": self.seed, "max_length": self.max_length,
        })
    }

    /// Whether the options fit a model of `layers` transformer layers: the depth and the
    /// layers to train index the model's layers, so Trainer::new checks this before any
    /// work.
    pub fn fits_model(&self, layers: usize) -> Result<()> {
        self.train_layers.fits(layers)?;
        if let Depth::Layers(n) = self.depth {
            ensure(n <= layers, || {
                format!("depth {n} exceeds the model's {layers} layers")
            })?;
            if let TrainLayers::Top(top) = self.train_layers {
                ensure(top <= n, || {
                    format!("train_layers {top} exceeds depth {n}, the layers kept")
                })?;
            }
        }
        Ok(())
    }

    pub fn check(&self) -> Result<()> {
        // Each step is a row of airrep.training_log, whose step column is an integer.
        ensure(self.steps <= i32::MAX as usize, || {
            format!("steps must be at most {}, got {}", i32::MAX, self.steps)
        })?;
        positive("lr", self.lr)?;
        positive("head_lr", self.head_lr)?;
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
        ensure(self.max_members_per_subset != Some(0), || {
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
        ensure((0.0..1.0).contains(&self.holdout_fraction), || {
            format!(
                "holdout_fraction must be in [0, 1), got {}",
                self.holdout_fraction
            )
        })?;
        ensure(self.eval_every > 0, || {
            "eval_every must be at least 1".into()
        })?;
        ensure(
            self.max_seconds.is_finite() && self.max_seconds >= 0.0,
            || {
                format!(
                    "max_seconds must be 0 (no budget) or more, got {}",
                    self.max_seconds
                )
            },
        )?;
        ensure(self.max_length >= 2, || {
            format!(
                "max_length must be at least 2 ([CLS] and [SEP]), got {}",
                self.max_length
            )
        })
    }

    /// The warm-up factor of step `step` (from 0): multiplies `lr` and `head_lr`.
    pub fn warmup_at(&self, step: usize) -> f64 {
        if self.warmup_steps == 0 {
            return 1.0;
        }
        ((step + 1) as f64 / self.warmup_steps as f64).min(1.0)
    }

    /// The body's learning rate at step `step` (from 0).
    pub fn lr_at(&self, step: usize) -> f64 {
        self.lr * self.warmup_at(step)
    }
}

#[cfg(test)]
mod tests {
    use crate::train::*;

    fn rejected(options: TrainOptions) -> String {
        match options.check() {
            Err(Error::Input(message)) => message,
            other => panic!("{options:?} accepted: {other:?}"),
        }
    }

    /// Issue 27: `{"depth": 100}` over a base without a projector panicked with an index out
    /// of bounds; every option that names layers is now checked against the model first.
    #[test]
    fn options_are_checked_against_the_model_before_any_work() {
        let good = TrainOptions::default();
        good.fits_model(2).unwrap();
        for (depth, train_layers, message) in [
            (
                Depth::Layers(100),
                TrainLayers::Projector,
                "depth 100 exceeds the model's 2 layers",
            ),
            (
                Depth::Auto,
                TrainLayers::Top(3),
                "train_layers 3 exceeds the model's 2 layers",
            ),
            (
                Depth::Layers(1),
                TrainLayers::Top(2),
                "train_layers 2 exceeds depth 1, the layers kept",
            ),
        ] {
            let options = TrainOptions {
                depth,
                train_layers,
                ..good.clone()
            };
            match options.fits_model(2) {
                Err(Error::Input(got)) => assert_eq!(got, message),
                other => panic!("{options:?} accepted: {other:?}"),
            }
        }
        use crate::train::tests::{base_checkpoint, golden, golden_data, golden_options};
        use crate::train::tests::{never, tokenizer_json};
        let golden = golden();
        let options = TrainOptions {
            depth: Depth::Layers(100),
            ..golden_options(&golden)
        };
        let data = golden_data(&golden);
        match Trainer::new(&base_checkpoint(), &tokenizer_json(), data, options, &never) {
            Err(Error::Input(got)) => assert_eq!(got, "depth 100 exceeds the model's 2 layers"),
            Err(other) => panic!("depth 100: {other}"),
            Ok(_) => panic!("depth 100 accepted"),
        }
    }

    #[test]
    fn options_validation_names_the_bad_value() {
        let good = TrainOptions::default();
        good.check().unwrap();
        let cases: Vec<(TrainOptions, &str)> = vec![
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
                    head_lr: -1.0,
                    ..good.clone()
                },
                "head_lr must be a positive number, got -1",
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
                    steps: 1 << 31,
                    ..good.clone()
                },
                "steps must be at most 2147483647, got 2147483648",
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
                    max_members_per_subset: Some(0),
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
                    holdout_fraction: 1.0,
                    ..good.clone()
                },
                "holdout_fraction must be in [0, 1), got 1",
            ),
            (
                TrainOptions {
                    eval_every: 0,
                    ..good.clone()
                },
                "eval_every must be at least 1",
            ),
            (
                TrainOptions {
                    max_seconds: -1.0,
                    ..good.clone()
                },
                "max_seconds must be 0 (no budget) or more, got -1",
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
        let warmup = good.warmup_steps;
        assert_eq!(good.lr_at(0), good.lr / warmup as f64);
        assert_eq!(good.lr_at(warmup - 1), good.lr);
        assert_eq!(
            TrainOptions {
                warmup_steps: 0,
                ..good.clone()
            }
            .lr_at(0),
            good.lr
        );
        for (text, layers) in [
            ("projector", TrainLayers::Projector),
            ("all", TrainLayers::All),
            ("2", TrainLayers::Top(2)),
        ] {
            assert_eq!(text.parse::<TrainLayers>().unwrap(), layers);
            assert_eq!(layers.to_string(), text);
        }
        let json = serde_json::json!({"steps": 7, "train_layers": 2, "max_members_per_subset": null,
                                      "projector_init": "random", "pooling": "sum"});
        let parsed = TrainOptions::from_json(&json, good.clone()).unwrap();
        assert_eq!(
            (parsed.steps, parsed.train_layers),
            (7, TrainLayers::Top(2))
        );
        assert_eq!(parsed.projector_init, ProjectorInit::Random);
        assert_eq!(
            TrainOptions::from_json(&parsed.to_json(), good.clone()).unwrap(),
            parsed
        );
        for (value, want) in [
            (serde_json::json!("auto"), UnitScale::Auto),
            (serde_json::json!("off"), UnitScale::Off),
            (serde_json::json!(1.5), UnitScale::Fixed(1.5)),
            (serde_json::json!("2"), UnitScale::Fixed(2.0)),
        ] {
            let json = serde_json::json!({ "unit_scale": value });
            let parsed = TrainOptions::from_json(&json, good.clone()).unwrap();
            assert_eq!(parsed.unit_scale, want);
            assert_eq!(
                TrainOptions::from_json(&parsed.to_json(), good.clone()).unwrap(),
                parsed
            );
        }
        for (value, want) in [
            (serde_json::json!("auto"), ResponseWeight::Auto),
            (serde_json::json!(1), ResponseWeight::Fixed(1.0)),
            (serde_json::json!("2.5"), ResponseWeight::Fixed(2.5)),
        ] {
            let json = serde_json::json!({ "response_weight": value });
            let parsed = TrainOptions::from_json(&json, good.clone()).unwrap();
            assert_eq!(parsed.response_weight, want);
            assert_eq!(
                TrainOptions::from_json(&parsed.to_json(), good.clone()).unwrap(),
                parsed
            );
        }
        for (json, expected) in [
            (
                serde_json::json!({"stepz": 1}),
                "unknown training option \"stepz\" (known: steps,",
            ),
            (
                serde_json::json!({"steps": -1}),
                "option \"steps\" must be a non-negative integer",
            ),
            (
                serde_json::json!({"lr": "x"}),
                "option \"lr\" must be a number",
            ),
            (
                serde_json::json!({"pooling": "max"}),
                "unknown pooling \"max\"",
            ),
            (
                serde_json::json!({"projector_init": "zeros"}),
                "unknown projector_init \"zeros\"",
            ),
            (
                serde_json::json!({"holdout_fraction": 1.5}),
                "holdout_fraction must be in [0, 1)",
            ),
            (
                serde_json::json!({"unit_scale": 0}),
                "unit_scale must be 'auto', 'off' or a positive number, got \"0\"",
            ),
            (
                serde_json::json!({"unit_scale": "on"}),
                "unit_scale must be 'auto', 'off' or a positive number",
            ),
            (
                serde_json::json!({"response_weight": 0}),
                "response_weight must be 'auto' or a positive number (1: the plain mean), got \"0\"",
            ),
            (
                serde_json::json!({"response_weight": "off"}),
                "response_weight must be 'auto' or a positive number",
            ),
            (serde_json::json!([1]), "options must be a JSON object"),
        ] {
            match TrainOptions::from_json(&json, good.clone()) {
                Err(Error::Input(m)) => {
                    assert!(m.contains(expected), "{m:?} does not say {expected:?}")
                }
                other => panic!("{json} accepted: {other:?}"),
            }
        }
        for bad in ["0", "top", "-1"] {
            assert!(
                matches!(bad.parse::<TrainLayers>(), Err(Error::Input(m)) if m.contains("train_layers must be"))
            );
        }
    }
}
