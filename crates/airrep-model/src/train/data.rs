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

#[cfg(test)]
mod tests {
    use airrep_core::lds::lds;

    use crate::train::tests::*;
    use crate::train::*;

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
        // the holdout split of subsets and of targets: disjoint, covering, deterministic for
        // a seed, and at least the minimum on each side
        let data = selection_data();
        let split = data.split(0.25, 5).unwrap();
        assert_eq!((split.training.len(), split.held_out.len()), (9, 3));
        assert_eq!(
            (split.training_targets.len(), split.held_out_targets.len()),
            (6, 2)
        );
        for (kept, held, count) in [
            (&split.training, &split.held_out, 12),
            (&split.training_targets, &split.held_out_targets, 8),
        ] {
            let mut all: Vec<usize> = kept.iter().chain(held).copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..count).collect::<Vec<_>>());
        }
        assert_eq!(data.split(0.25, 5).unwrap(), split);
        assert_ne!(data.split(0.25, 6).unwrap(), split);
        let none = data.split(0.0, 5).unwrap();
        assert!(none.held_out.is_empty() && none.held_out_targets.is_empty());
        assert_eq!(none.training_targets, (0..8).collect::<Vec<_>>());
        let small = data.split(0.01, 5).unwrap();
        assert_eq!((small.held_out.len(), small.held_out_targets.len()), (2, 1));
    }

    #[test]
    fn training_never_sees_held_out_targets_and_validation_ranks_only_held_out_pairs() {
        let options = TrainOptions {
            steps: 6,
            head_lr: 0.05,
            targets_per_step: 3,
            subsets_per_step: 4,
            holdout_fraction: 0.34,
            eval_every: 3,
            depth: Depth::All,
            seed: 2,
            ..TrainOptions::default()
        };
        let data = selection_data();
        let mut trainer = tiny_trainer(data.clone(), options).unwrap();
        let split = trainer.split.clone();
        assert!(!split.held_out_targets.is_empty());
        for _ in 0..6 {
            let batch = trainer.sample_batch(&mut trainer.rng.clone());
            assert!(batch
                .targets
                .iter()
                .all(|d| split.training_targets.contains(d)));
            trainer.step(&never).unwrap();
            // The held-out LDS is the LDS of held-out subsets for held-out targets, computed
            // here from the public group scores.
            let scores = trainer
                .group_scores(&split.held_out_targets, &split.held_out)
                .unwrap();
            let losses: Vec<Vec<f64>> = split
                .held_out
                .iter()
                .map(|&s| {
                    split
                        .held_out_targets
                        .iter()
                        .map(|&d| data.losses[s][d])
                        .collect()
                })
                .collect();
            let want = lds(&scores, &losses).0;
            let got = trainer.validate(&never).unwrap().lds;
            assert!(
                (got - want).abs() < 1e-12,
                "validation {got}, reference {want}"
            );
        }
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
                holdout_fraction: 0.5,
                ..options.clone()
            },
            "holdout_fraction 0.5 needs at least 4 subsets (2 to validate on and at least 2 to train), got 3",
        ));
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
        let mut trainer = tiny_trainer(good, options).unwrap();
        assert!(
            matches!(trainer.group_scores(&[4], &[0]), Err(Error::Input(m)) if m.contains("target 4 out of range"))
        );
        assert!(
            matches!(trainer.group_scores(&[0], &[3]), Err(Error::Input(m)) if m.contains("subset 3 out of range"))
        );
        assert!(
            matches!(trainer.validate(&never), Err(Error::Input(m)) if m.contains("no held-out subsets"))
        );
        assert_eq!(
            trainer.group_scores(&[0, 1], &[]).unwrap(),
            vec![Vec::<f64>::new(); 2]
        );
        assert!(trainer.group_scores(&[], &[0]).unwrap().is_empty());
    }
}
