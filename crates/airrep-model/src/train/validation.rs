//! Model selection: with held-out subsets and targets, the LDS of the held-out subsets
//! for the held-out targets is measured at step 0, every `eval_every` steps and at the
//! end; the best weights are kept, `patience` validations without a new best end the run,
//! and `max_seconds` bounds its wall time. What was kept, and why, is the [`Kept`].

use airrep_core::lds::lds;

use super::{StartChoice, Trainer};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};

/// One validation: held-out LDS of the weights after `steps_done` steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Validation {
    pub steps_done: usize,
    pub lds: f64,
    /// Whether these weights are the best so far (and so the ones kept).
    pub best: bool,
}

/// Which weights a finished run keeps, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Steps taken before the kept weights (0: the start was never beaten).
    pub kept_step: usize,
    pub steps_done: usize,
    /// Held-out LDS of the kept weights and of the start; None without a holdout.
    pub validation_lds: Option<f64>,
    pub validation_lds_start: Option<f64>,
    pub stopped_early: bool,
    /// Where the run started, when the start was chosen.
    pub start: Option<StartChoice>,
    pub reason: String,
}

impl Kept {
    /// What a trained model's config records of the run: its start (null fields when none
    /// was chosen), the steps, the step kept and why, and the held-out LDS before and after.
    pub fn to_json(&self) -> serde_json::Value {
        let mut record = match &self.start {
            Some(start) => start.to_json(),
            None => serde_json::json!({
                "centered": null, "unit_scale_start": null, "start_scores": null
            }),
        };
        record["steps_done"] = self.steps_done.into();
        record["kept_step"] = self.kept_step.into();
        record["stopped_early"] = self.stopped_early.into();
        record["selection"] = self.reason.clone().into();
        record["validation_lds_before"] = self.validation_lds_start.into();
        record["validation_lds_after"] = self.validation_lds.into();
        record
    }
}

impl Trainer {
    /// Whether the current weights are due a validation: there is a holdout, they were not
    /// validated yet, and this is step 0, a multiple of `eval_every` or the end of the run.
    pub fn validation_due(&self) -> bool {
        !self.split.held_out.is_empty()
            && self.validations.last().map(|v| v.steps_done) != Some(self.step)
            && (self.step.is_multiple_of(self.options.eval_every) || self.finished())
    }

    /// All steps taken, `patience` validations in a row without a new best, or the time
    /// budget spent.
    pub fn finished(&self) -> bool {
        self.step >= self.options.steps || self.stopped_early() || self.out_of_time()
    }

    fn out_of_time(&self) -> bool {
        self.options.max_seconds > 0.0
            && self.started.elapsed().as_secs_f64() >= self.options.max_seconds
    }

    fn stopped_early(&self) -> bool {
        let patience = self.options.patience;
        patience > 0
            && self.validations.len() > patience
            && self.validations[self.validations.len() - patience..]
                .iter()
                .all(|v| !v.best)
    }

    /// Held-out LDS of the current weights, recorded; the weights are kept if they are the
    /// best so far. A cancelled validation records nothing.
    pub fn validate(&mut self, interrupted: &(dyn Fn() -> bool + Sync)) -> Result<Validation> {
        if self.split.held_out.is_empty() {
            return Err(Error::Input(
                "no held-out subsets to validate on (holdout_fraction is 0)".into(),
            ));
        }
        let (targets, subsets) = (&self.split.held_out_targets, &self.split.held_out);
        let scores = self.scores(targets, subsets, interrupted)?;
        let losses = self.data.losses_of(subsets, targets);
        let lds = lds(&scores, &losses).0;
        let best = self.validations.iter().all(|v| lds > v.lds);
        if best {
            self.best_weights = Some(
                self.vars
                    .iter()
                    .map(|v| v.as_tensor().copy())
                    .collect::<candle_core::Result<_>>()?,
            );
        }
        let validation = Validation {
            steps_done: self.step,
            lds,
            best,
        };
        self.validations.push(validation);
        Ok(validation)
    }

    /// The trained encoder: the best validated weights with a holdout, else the last, and
    /// how they were chosen.
    pub fn into_checkpoint(self) -> Result<(Checkpoint, Kept)> {
        let kept = self.kept();
        if let Some(best) = &self.best_weights {
            for (var, weights) in self.vars.iter().zip(best) {
                var.set(weights)?;
            }
        }
        Ok((self.model.to_checkpoint()?, kept))
    }

    pub(super) fn kept(&self) -> Kept {
        let start = self.start_choice.clone();
        let mut kept = self.kept_step();
        if let Some(choice) = &start {
            kept.reason = format!("{}; {}", choice.describe(), kept.reason);
        }
        Kept { start, ..kept }
    }

    /// Which step's weights are kept, and why.
    fn kept_step(&self) -> Kept {
        let stopped_early = self.stopped_early() && self.step < self.options.steps;
        let timed_out = !stopped_early && self.step < self.options.steps && self.out_of_time();
        let start = self.validations.first().map(|v| v.lds);
        let Some(best) = self.validations.iter().rev().find(|v| v.best) else {
            return Kept {
                kept_step: self.step,
                steps_done: self.step,
                validation_lds: None,
                validation_lds_start: start,
                stopped_early,
                start: None,
                reason: "no holdout: the last step is kept".into(),
            };
        };
        let mut reason = format!(
            "best held-out LDS {:.4} at step {} of {} (start {:.4})",
            best.lds,
            best.steps_done,
            self.step,
            start.unwrap_or(best.lds)
        );
        if stopped_early {
            reason += &format!(
                "; stopped early after {} validations without a new best",
                self.options.patience
            );
        }
        if timed_out {
            reason += &format!(
                "; stopped at the time budget (max_seconds {})",
                self.options.max_seconds
            );
        }
        Kept {
            kept_step: best.steps_done,
            steps_done: self.step,
            validation_lds: Some(best.lds),
            validation_lds_start: start,
            stopped_early,
            start: None,
            reason,
        }
    }
}
