//! `airrep.select_data`: a budgeted selection of pool rows for a set of targets.
//!
//! Strategies (the rules and their proofs of budget are in `airrep_core::select`):
//! * `round_robin`: targets take turns in id order, each its best row not yet picked. The
//!   pool is streamed once with a per-target top-k deep enough for the budget; if the picks
//!   outrun a target's list, the scan is repeated deeper (rare, and never a guess).
//! * `max`, `mean`: every pool row ranked by its max or mean influence over the targets,
//!   streamed into a collector that holds only what the budget can buy.
//! * `group`: greedy by marginal gain of the summed attention-pooled group score. Its
//!   candidates are the whole pool when `targets x pool` is small, else each target's top
//!   rows as deep as round robin would read.

use std::collections::HashMap;

use airrep_core::select::{greedy_group, round_robin, Aggregate, BudgetedBest, Cancelled, Pick};
use airrep_model::Queries;
use pgrx::prelude::*;

use crate::embedding_jobs::note_model_mismatch;
use crate::error::{raise, sqlstate};
use crate::relation::Relation;
use crate::runtime::thread_pool;
use crate::scan::{Block, Columns, Source};
use crate::search::{read_targets, scores_or_raise, search};

/// Candidate-by-target scores the `group` strategy holds at most (256 MB of f32).
const GROUP_SCORES_MAX: usize = 1 << 26;
/// Below this many `targets x pool` scores, `group` considers every pool row.
const GROUP_EXACT_SCORES: usize = 1 << 20;

#[derive(Clone, Copy)]
enum Strategy {
    RoundRobin,
    /// `max` or `mean`
    ByAggregate(Aggregate),
    Group,
}

fn strategy(name: &str) -> Strategy {
    match name {
        "round_robin" => Strategy::RoundRobin,
        "max" => Strategy::ByAggregate(Aggregate::Max),
        "mean" => Strategy::ByAggregate(Aggregate::Mean),
        "group" => Strategy::Group,
        other => raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("unknown selection strategy \"{other}\": expected 'round_robin', 'max', 'mean' or 'group'"),
        ),
    }
}

/// What one scan learns about the pool besides the scores.
#[derive(Default)]
struct PoolStats {
    rows: usize,
    total_cost: f64,
}

impl PoolStats {
    fn add(&mut self, block: &Block, costed: bool) {
        self.rows += block.len();
        self.total_cost += if costed {
            block.costs.iter().sum()
        } else {
            block.len() as f64
        };
    }

    /// Rows the budget buys at the pool's mean cost (every row if costs are all zero).
    fn picks(&self, budget: f64) -> usize {
        let mean = self.total_cost / self.rows.max(1) as f64;
        if mean > 0.0 {
            ((budget / mean).ceil() as usize).min(self.rows)
        } else {
            self.rows
        }
    }
}

/// Ranking depth per target for `picks` picks shared by `targets` targets: twice the fair
/// share plus a margin, since targets compete for the same rows.
fn depth_for(picks: usize, targets: usize) -> usize {
    2 * picks.div_ceil(targets.max(1)) + 8
}

#[allow(clippy::type_complexity)]
#[pg_extern(
    schema = "airrep",
    name = "select_data_by_column",
    stable,
    parallel_restricted
)]
fn select_data(
    targets: Option<Relation>,
    pool: Option<Relation>,
    budget: Option<f64>,
    strategy_name: Option<&str>,
    cost_column: Option<&str>,
    vector_column: Option<&str>,
) -> TableIterator<
    'static,
    (
        name!(example_id, i64),
        name!(pick_order, i32),
        name!(target_id, Option<i64>),
        name!(influence, f64),
        name!(cumulative_cost, f64),
    ),
> {
    let required = |what: &str| -> ! {
        raise(
            sqlstate::NULL_VALUE_NOT_ALLOWED,
            &format!("{what} must not be NULL"),
        )
    };
    let (targets, pool) = (
        targets.unwrap_or_else(|| required("targets")).open(),
        pool.unwrap_or_else(|| required("pool")).open(),
    );
    let budget = budget.unwrap_or_else(|| required("budget"));
    if !budget.is_finite() || budget < 0.0 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("budget must be finite and 0 or more, got {budget}"),
        );
    }
    let strategy = strategy(strategy_name.unwrap_or_else(|| required("strategy")));
    let vector_column = vector_column.unwrap_or_else(|| required("vector_column"));
    note_model_mismatch(
        "airrep.select_data",
        ("targets'", &targets),
        ("pool's", &pool),
        vector_column,
    );
    let targets = Source::vectors(&targets, "targets", vector_column);
    let columns = Columns {
        vector: Some(vector_column),
        cost: cost_column,
        ..Columns::default()
    };
    let pool = Source::new(&pool, "pool", columns);
    let costed = cost_column.is_some();
    let Some((target_ids, queries)) = read_targets(&targets) else {
        return TableIterator::new(Vec::new());
    };
    let picks = match strategy {
        Strategy::RoundRobin => select_round_robin(&queries, &pool, budget, costed),
        Strategy::ByAggregate(aggregate) => {
            select_by_aggregate(&queries, &pool, budget, costed, aggregate)
        }
        Strategy::Group => select_group(&queries, &pool, budget, costed),
    };
    pool.require_unique_ids(picks.iter().map(|p| &p.id));
    let rows: Vec<_> = picks
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            (
                p.id,
                i as i32 + 1,
                p.target.map(|t| target_ids[t]),
                p.score,
                p.cumulative_cost,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Costs of `ids` (1 each without a cost column).
fn costs_of(pool: &Source, ids: Vec<i64>, dim: usize, costed: bool) -> HashMap<i64, f64> {
    if !costed {
        return ids.into_iter().map(|id| (id, 1.0)).collect();
    }
    let mut costs = HashMap::with_capacity(ids.len());
    for_rows_of(pool, &ids, dim, |found| {
        costs.extend(found.ids.iter().copied().zip(found.costs.iter().copied()))
    });
    costs
}

/// The pool rows of `ids` (sorted), a block of `airrep.max_block_mb` at a time: the rows
/// a selection revisits may be many and wide.
fn for_rows_of(pool: &Source, ids: &[i64], dim: usize, mut each: impl FnMut(&Block)) {
    for chunk in ids.chunks(Source::rows_per_block(dim)) {
        each(&pool.lookup(chunk, &mut Some(dim)));
    }
}

fn select_round_robin(queries: &Queries, pool: &Source, budget: f64, costed: bool) -> Vec<Pick> {
    // A row budget says how deep to read; a cost budget is estimated after the first scan.
    let mut depth = depth_for(
        if costed { 0 } else { budget.ceil() as usize },
        queries.len(),
    )
    .max(32);
    loop {
        let mut stats = PoolStats::default();
        let rankings = search(queries, pool, depth, "airrep.select_data", |block| {
            stats.add(block, costed)
        });
        // A ranking holds every row when the pool ran out before the depth did.
        let complete: Vec<bool> = rankings
            .iter()
            .map(|r| r.len() < depth || r.len() >= stats.rows)
            .collect();
        let costs = costs_of(
            pool,
            rankings.iter().flatten().map(|h| h.id).collect(),
            queries.dim(),
            costed,
        );
        let cost = |id: i64| costs[&id];
        match round_robin(&rankings, &complete, cost, budget) {
            Ok(picks) => return picks,
            Err(short) => {
                depth = short
                    .depth
                    .max(depth_for(stats.picks(budget), queries.len()))
                    .min(stats.rows.max(1));
                notice!("airrep.select_data: a target used up its ranking; reading the pool again, {depth} rows deep");
            }
        }
    }
}

/// `max` or `mean` influence over the targets per pool row, best first within budget.
fn select_by_aggregate(
    queries: &Queries,
    pool: &Source,
    budget: f64,
    costed: bool,
    aggregate: Aggregate,
) -> Vec<Pick> {
    let threads = thread_pool();
    let count = queries.len();
    let mut best = BudgetedBest::new(budget);
    pool.scan(
        &mut Some(queries.dim()),
        queries.block_rows(),
        false,
        "airrep.select_data",
        |block| {
            let scores = scores_or_raise(threads.install(|| queries.dots(&block.rows)), &block.ids);
            let rows = block.len();
            for (r, &id) in block.ids.iter().enumerate() {
                let value = aggregate.of((0..count).map(|t| scores[t * rows + r] as f64));
                best.offer(id, value, if costed { block.costs[r] } else { 1.0 });
            }
        },
    );
    best.into_picks()
}

/// Greedy by marginal group gain over the candidate rows (see the module docs).
fn select_group(queries: &Queries, pool: &Source, budget: f64, costed: bool) -> Vec<Pick> {
    let count = queries.len();
    let dim = queries.dim();
    // Every pool row is a candidate when targets x pool is small (a ranking this deep then
    // holds every row); else each target's top rows, as deep as round robin would read.
    let exact_depth = (GROUP_EXACT_SCORES / count).max(1);
    let row_budget_depth = if costed {
        0
    } else {
        depth_for(budget.ceil() as usize, count)
    };
    let first_depth = exact_depth.max(row_budget_depth);
    let mut stats = PoolStats::default();
    let mut rankings = search(queries, pool, first_depth, "airrep.select_data", |block| {
        stats.add(block, costed)
    });
    if stats.rows * count > GROUP_EXACT_SCORES {
        let depth = depth_for(stats.picks(budget), count);
        if depth > first_depth {
            rankings = search(queries, pool, depth, "airrep.select_data", |_| {});
        }
        rankings.iter_mut().for_each(|r| r.truncate(depth));
    }
    let mut ids: Vec<i64> = rankings.into_iter().flatten().map(|h| h.id).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() * count > GROUP_SCORES_MAX {
        raise(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            &format!(
                "strategy 'group' would score {} candidate rows against {count} targets, more than {GROUP_SCORES_MAX} scores; use fewer targets or a smaller budget",
                ids.len()
            ),
        );
    }
    // Each target's scores of every candidate, a block of candidates at a time.
    let mut by_target: Vec<Vec<f32>> = (0..count).map(|_| Vec::with_capacity(ids.len())).collect();
    let mut costs = Vec::with_capacity(ids.len());
    for_rows_of(pool, &ids, dim, |found| {
        let scores = scores_or_raise(
            thread_pool().install(|| queries.dots(&found.rows)),
            &found.ids,
        );
        for (target, row) in by_target.iter_mut().zip(scores.chunks(found.len())) {
            target.extend_from_slice(row);
        }
        costs.extend(found.costs.iter().copied());
    });
    if !costed {
        costs = vec![1.0; ids.len()];
    }
    let interrupted = || {
        pgrx::check_for_interrupts!();
        false
    };
    greedy_group(&by_target, &ids, &costs, budget, &interrupted).unwrap_or_else(|Cancelled| {
        raise(
            sqlstate::QUERY_CANCELED,
            "canceling statement due to user request",
        )
    })
}

extension_sql!(
    r#"
CREATE FUNCTION airrep.select_data(
    targets regclass, pool regclass, budget double precision, strategy text DEFAULT 'round_robin',
    cost_column name DEFAULT NULL, vector_column name DEFAULT 'embedding')
RETURNS TABLE(example_id bigint, pick_order integer, target_id bigint, influence double precision,
              cumulative_cost double precision)
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.select_data_by_column(targets, pool, budget, strategy, cost_column::text, vector_column::text) $$;
COMMENT ON FUNCTION airrep.select_data(regclass, regclass, double precision, text, name, name) IS
    'budgeted selection of pool rows for the targets: round_robin, max, mean or group (greedy attention-pooled gain)';
"#,
    name = "select_data_wrapper",
    requires = [select_data]
);
