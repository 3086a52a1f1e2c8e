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
    pub(crate) fn validate(&self) -> Result<()> {
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

    /// Subset indices split into (training, held out), each in increasing order: a
    /// `fraction` of them, rounded, drawn at random from `seed`; none for 0.
    pub(crate) fn split(&self, fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
        let count = self.subsets.len();
        let held = (count as f64 * fraction).round() as usize;
        if fraction == 0.0 {
            return Ok(((0..count).collect(), Vec::new()));
        }
        ensure(held >= 2 && count - held >= 2, || {
            format!(
                "holdout_fraction {fraction} of {count} subsets holds out {held}: both the \
                 training and the held-out side need at least 2 subsets"
            )
        })?;
        let mut held_out = SplitMix64(seed ^ 0x484F_4C44_4F55_5421).sample(count, held);
        held_out.sort_unstable();
        let training = (0..count)
            .filter(|s| held_out.binary_search(s).is_err())
            .collect();
        Ok((training, held_out))
    }
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
        options: &TrainOptions,
    ) -> Self {
        let targets = rng.sample(data.targets.len(), options.targets_per_step);
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
