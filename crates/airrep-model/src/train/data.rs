//! The label tables as training sees them, the holdout split and the batches of a step.

use super::options::{ensure, TrainOptions};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// Texts and the losses measured by retraining on subsets of them.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainData {
    /// Training examples (already formatted, see `format_pair`).
    pub examples: Vec<String>,
    /// Target examples whose losses were measured.
    pub targets: Vec<String>,
    /// Each subset's members, as indices into `examples` (a member may repeat).
    pub subsets: Vec<Vec<usize>>,
    /// `losses[subset][target]`: the target's loss after training on the subset.
    pub losses: Vec<Vec<f64>>,
}

impl TrainData {
    pub(crate) fn check(&self) -> Result<()> {
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

    /// `losses[subset][target]` of these subsets and targets, in the order given.
    pub(crate) fn losses_of(&self, subsets: &[usize], targets: &[usize]) -> Vec<Vec<f64>> {
        subsets
            .iter()
            .map(|&s| targets.iter().map(|&d| self.losses[s][d]).collect())
            .collect()
    }

    /// Which subsets and targets train and which validate: a `fraction` of each, rounded,
    /// drawn at random from `seed`; nothing is held out for 0.
    pub(crate) fn split(&self, fraction: f64, seed: u64) -> Result<Split> {
        let subsets = holdout(
            "subsets",
            self.subsets.len(),
            fraction,
            2,
            seed ^ 0x484F_4C44_4F55_5421,
        )?;
        let targets = holdout(
            "targets",
            self.targets.len(),
            fraction,
            1,
            seed ^ 0x5441_5247_4554_5321,
        )?;
        Ok(Split {
            training: subsets.0,
            held_out: subsets.1,
            training_targets: targets.0,
            held_out_targets: targets.1,
        })
    }
}

/// Subsets and targets that train, and those held out for validation (each list in
/// increasing order). Validation ranks held-out subsets for held-out targets, as the
/// evaluation of a trained model does: neither side was seen in training, so fitting the
/// training targets' own quirks cannot pass for progress.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Split {
    pub training: Vec<usize>,
    pub held_out: Vec<usize>,
    pub training_targets: Vec<usize>,
    pub held_out_targets: Vec<usize>,
}

/// `(kept, held out)` of `0..count`: a `fraction`, rounded, held out; each side at least
/// `min_each` long unless nothing is held out (fraction 0).
fn holdout(
    what: &str,
    count: usize,
    fraction: f64,
    min_each: usize,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    if fraction == 0.0 {
        return Ok(((0..count).collect(), Vec::new()));
    }
    let held = ((count as f64 * fraction).round() as usize).max(min_each);
    ensure(count >= held + min_each, || {
        format!(
            "holdout_fraction {fraction} needs at least {} {what} ({held} to validate on and \
             at least {min_each} to train), got {count}; set holdout_fraction to 0 \
             to train on all of them and keep the last step",
            held + min_each
        )
    })?;
    let mut held_out = SplitMix64(seed).sample(count, held);
    held_out.sort_unstable();
    let kept = (0..count)
        .filter(|i| held_out.binary_search(i).is_err())
        .collect();
    Ok((kept, held_out))
}

/// The examples one step ranks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    /// Indices into the data's targets.
    pub targets: Vec<usize>,
    /// Positions in the training subsets (and so columns of the ranking labels).
    pub subsets: Vec<usize>,
    /// Per subset of `subsets`, the members that count (all of them, or a sample).
    pub members: Vec<Vec<usize>>,
}

impl Batch {
    pub(crate) fn sample(
        rng: &mut SplitMix64,
        data: &TrainData,
        training: &[usize],
        training_targets: &[usize],
        options: &TrainOptions,
    ) -> Self {
        let targets = rng
            .sample(training_targets.len(), options.targets_per_step)
            .into_iter()
            .map(|d| training_targets[d])
            .collect();
        let subsets = rng.sample(training.len(), options.subsets_per_step);
        let members = subsets
            .iter()
            .map(|&k| {
                let all = &data.subsets[training[k]];
                match options.max_members_per_subset {
                    Some(max) if max < all.len() => rng
                        .sample(all.len(), max)
                        .into_iter()
                        .map(|i| all[i])
                        .collect(),
                    _ => all.clone(),
                }
            })
            .collect();
        Batch {
            targets,
            subsets,
            members,
        }
    }
}
