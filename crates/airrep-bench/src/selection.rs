//! The data-selection experiment (the paper's, at this benchmark's scale): select 10% of
//! the pool for the held-out targets with each strategy of `airrep.select_data` and each
//! scorer, fine-tune the tiny GPT on each selection with the labels' recipe, and compare
//! the held-out targets' losses with those after random selections of the same size.
//!
//! AirRep's encoders select through the extension (`benches/quality.sql` writes their
//! picks); the baselines, whose vectors live here, select with the same rules from
//! `airrep_core::select` over their full score matrices.

use std::path::Path;

use airrep_core::select::{greedy_group, round_robin, Aggregate, BudgetedBest};
use airrep_core::top_k::Hit;
use rayon::prelude::*;

use crate::baselines::Measured;
use crate::gpt::Gpt;
use crate::labels::fine_tune;
use crate::rng::Rng;
use crate::Setup;

pub const STRATEGIES: [&str; 4] = ["round_robin", "max", "mean", "group"];
/// Random selections that make the reference, and fine-tuning seeds per selection.
const RANDOM_SELECTIONS: usize = 8;
const SEEDS: u64 = 4;

/// One selection: who chose it, how, and the pool rows (0-based) in pick order.
pub struct Selection {
    pub method: String,
    pub strategy: String,
    pub rows: Vec<usize>,
}

/// Rows a selection may take: 10% of the pool.
pub fn budget(setup: &Setup) -> usize {
    setup.pool.len() / 10
}

/// Pool rows picked by `strategy` from `scores[target][row]`, as `airrep.select_data`
/// picks them with a row budget (ids are 1-based rows, as in the SQL tables).
fn select(scores: &[Vec<f32>], strategy: &str, budget: usize) -> Vec<usize> {
    let rows = scores[0].len();
    let ids: Vec<i64> = (1..=rows as i64).collect();
    let budget = budget as f64;
    let picks = match strategy {
        "round_robin" => {
            let rankings: Vec<Vec<Hit>> = scores
                .iter()
                .map(|row| {
                    let mut hits: Vec<Hit> = ids
                        .iter()
                        .zip(row)
                        .map(|(&id, &score)| Hit { id, score })
                        .collect();
                    hits.sort_by(Hit::rank_cmp);
                    hits
                })
                .collect();
            round_robin(&rankings, &vec![true; scores.len()], |_| 1.0, budget)
                .expect("complete rankings")
        }
        "max" | "mean" => {
            let aggregate = if strategy == "max" {
                Aggregate::Max
            } else {
                Aggregate::Mean
            };
            let mut best = BudgetedBest::new(budget);
            for (r, &id) in ids.iter().enumerate() {
                best.offer(
                    id,
                    aggregate.of(scores.iter().map(|row| row[r] as f64)),
                    1.0,
                );
            }
            best.into_picks()
        }
        "group" => greedy_group(scores, &ids, &vec![1.0; rows], budget, &|| false)
            .expect("never interrupted"),
        other => panic!("unknown strategy {other}"),
    };
    picks.iter().map(|p| p.id as usize - 1).collect()
}

/// Each baseline's selections for the held-out targets.
pub fn baseline_selections(setup: &Setup, baselines: &[Measured]) -> Vec<Selection> {
    let (_, eval_targets) = setup.eval();
    let mut out = Vec::new();
    for m in baselines {
        let scores: Vec<Vec<f32>> = eval_targets
            .iter()
            .map(|&t| {
                m.pool
                    .iter()
                    .map(|e| e.iter().zip(&m.targets[t]).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect();
        for strategy in STRATEGIES {
            out.push(Selection {
                method: m.method.clone(),
                strategy: strategy.into(),
                rows: select(&scores, strategy, budget(setup)),
            });
        }
    }
    out
}

/// Selections written as `method\tstrategy\texample_id` rows (1-based ids), in pick order.
pub fn write(selections: &[Selection], path: &Path) -> std::io::Result<()> {
    crate::write_file(
        path,
        "method\tstrategy\texample_id",
        selections.iter().flat_map(|s| {
            s.rows
                .iter()
                .map(move |r| format!("{}\t{}\t{}", s.method, s.strategy, r + 1))
        }),
    )
}

/// Selections from `method\tstrategy\texample_id` lines (a header line or any line with
/// another number of fields is skipped), grouped in order of first appearance.
pub fn read(text: &str, prefix: Option<&str>) -> Vec<Selection> {
    let mut out: Vec<Selection> = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let fields = match prefix {
            Some(p) if fields.first() == Some(&p) => &fields[1..],
            Some(_) => continue,
            None => &fields[..],
        };
        let [method, strategy, id] = fields else {
            continue;
        };
        let Ok(id) = id.parse::<usize>() else {
            continue;
        };
        match out.last_mut() {
            Some(s) if s.method == *method && s.strategy == *strategy => s.rows.push(id - 1),
            _ => out.push(Selection {
                method: method.to_string(),
                strategy: strategy.to_string(),
                rows: vec![id - 1],
            }),
        }
    }
    out
}

/// Fine-tune on every selection and on random ones; write `selection.tsv`: per selection
/// the size, the held-out targets' mean loss and the share of them whose loss is below
/// their mean loss after the random selections (the random row itself is the reference).
pub fn evaluate(
    setup: &Setup,
    model: &Gpt,
    mut selections: Vec<Selection>,
    out: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let (_, eval_targets) = setup.eval();
    let targets: Vec<_> = eval_targets
        .iter()
        .map(|&t| setup.vocab.sft_sequence(&setup.targets[t]))
        .collect();
    let mut rng = Rng::new(setup.params.seed ^ 0x5345_4C45_4354);
    let random: Vec<Selection> = (0..RANDOM_SELECTIONS)
        .map(|_| Selection {
            method: "random".into(),
            strategy: "uniform".into(),
            rows: rng.sample(setup.pool.len(), budget(setup)),
        })
        .collect();
    let random_count = random.len();
    selections.splice(0..0, random);
    let runs: Vec<(usize, u64)> = (0..selections.len())
        .flat_map(|s| (0..SEEDS).map(move |seed| (s, seed)))
        .collect();
    eprintln!(
        "selection: fine-tuning on {} selections x {SEEDS} seeds",
        selections.len()
    );
    let losses: Vec<Vec<f64>> = runs
        .par_iter()
        .map(|&(s, seed)| {
            fine_tune(
                setup,
                model,
                &selections[s].rows,
                1_000_000 + seed,
                &targets,
            )
        })
        .collect::<candle_core::Result<_>>()?;
    // Mean loss per target over the seeds, per selection.
    let per_target: Vec<Vec<f64>> = (0..selections.len())
        .map(|s| {
            let mine: Vec<&Vec<f64>> = runs
                .iter()
                .zip(&losses)
                .filter(|((r, _), _)| *r == s)
                .map(|(_, l)| l)
                .collect();
            (0..targets.len())
                .map(|t| mine.iter().map(|l| l[t]).sum::<f64>() / mine.len() as f64)
                .collect()
        })
        .collect();
    let reference: Vec<f64> = (0..targets.len())
        .map(|t| per_target[..random_count].iter().map(|l| l[t]).sum::<f64>() / random_count as f64)
        .collect();
    let mut rows = vec![format!(
        "random\tuniform\t{}\t{:.5}\t",
        budget(setup),
        reference.iter().sum::<f64>() / reference.len() as f64
    )];
    for (s, l) in selections.iter().zip(&per_target).skip(random_count) {
        let better =
            l.iter().zip(&reference).filter(|(a, b)| a < b).count() as f64 / l.len() as f64;
        rows.push(format!(
            "{}\t{}\t{}\t{:.5}\t{better:.3}",
            s.method,
            s.strategy,
            s.rows.len(),
            l.iter().sum::<f64>() / l.len() as f64
        ));
    }
    crate::write_file(
        &out.join("selection.tsv"),
        "method\tstrategy\trows\tmean_loss\tbetter_than_random",
        rows.into_iter(),
    )?;
    Ok(())
}
