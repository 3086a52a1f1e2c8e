//! Budgeted selection of training rows for a set of targets (`airrep.select_data`).
//!
//! Every strategy picks rows one at a time and stops at the first pick whose cost would
//! take the running total past the budget, so the budget is never exceeded and the picks
//! are a prefix of one well-defined order. A row budget is the cost-1-per-row case. Ties
//! always go to the smaller id, so the result does not depend on the order rows arrive in.
//!
//! * [`round_robin`]: the targets take turns in order, each taking its best-ranked row not
//!   yet picked (AirRep's reference `data_selection.py`). It reads each target's ranking
//!   only as deep as the picks go; a ranking cut too short is reported, not guessed past.
//! * [`BudgetedBest`]: rows ranked by one value each (the max or mean influence over the
//!   targets), streamed; it holds only the rows that can still be in the budgeted prefix.
//! * [`greedy_group`]: greedy by marginal gain in the sum over targets of the
//!   attention-pooled group score of the picked set (DESIGN section 1), the set-level
//!   objective AirRep is trained for.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashSet};

use crate::group::{GroupState, Pooling};
use crate::top_k::Hit;

/// One selected row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    pub id: i64,
    /// The target (index into the rankings) the row was picked for; None for the
    /// strategies that rank by an aggregate over all targets.
    pub target: Option<usize>,
    /// The row's influence on that target, its aggregate value, or its marginal gain.
    pub score: f64,
    /// Total cost of the picks so far, this one included.
    pub cumulative_cost: f64,
}

/// A selection stopped because its `interrupted` callback returned true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

/// Round robin stopped because a target used up its ranking before the budget or the
/// pool did: rank deeper (at least this many rows per target) and run it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RankingTooShort {
    pub depth: usize,
}

/// Round-robin selection over per-target rankings (best first, as [`crate::top_k::TopK`]
/// gives them). `complete[t]` says ranking `t` holds every row the target can rank (the
/// pool had fewer rows than were asked for); an incomplete ranking that runs out before
/// the budget does is an error that asks for deeper rankings. `cost` gives a row's cost.
pub fn round_robin(
    rankings: &[Vec<Hit>],
    complete: &[bool],
    cost: impl Fn(i64) -> f64,
    budget: f64,
) -> Result<Vec<Pick>, RankingTooShort> {
    debug_assert_eq!(rankings.len(), complete.len());
    let mut picked: HashSet<i64> = HashSet::new();
    let mut next = vec![0usize; rankings.len()];
    let mut picks = Vec::new();
    let mut total = 0.0;
    loop {
        let mut any = false;
        for (t, ranking) in rankings.iter().enumerate() {
            while next[t] < ranking.len() && picked.contains(&ranking[next[t]].id) {
                next[t] += 1;
            }
            let Some(hit) = ranking.get(next[t]) else {
                if complete[t] {
                    continue;
                }
                return Err(RankingTooShort {
                    depth: 2 * ranking.len().max(1),
                });
            };
            let c = cost(hit.id);
            if total + c > budget {
                return Ok(picks);
            }
            total += c;
            picked.insert(hit.id);
            picks.push(Pick {
                id: hit.id,
                target: Some(t),
                score: hit.score as f64,
                cumulative_cost: total,
            });
            any = true;
        }
        if !any {
            return Ok(picks);
        }
    }
}

/// How the `max` and `mean` strategies value a row: by its largest or its mean influence
/// over the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Max,
    Mean,
}

impl Aggregate {
    /// The row's value from its influence on each target (at least one).
    pub fn of(self, influences: impl ExactSizeIterator<Item = f64>) -> f64 {
        match self {
            Aggregate::Max => influences.fold(f64::NEG_INFINITY, f64::max),
            Aggregate::Mean => {
                let n = influences.len() as f64;
                influences.sum::<f64>() / n
            }
        }
    }
}

/// A row offered to [`BudgetedBest`], ordered best first: higher value, then smaller id.
#[derive(Debug, Clone, Copy)]
struct Ranked {
    id: i64,
    value: f64,
    cost: f64,
}

impl Ranked {
    fn rank_cmp(&self, other: &Self) -> Ordering {
        other
            .value
            .total_cmp(&self.value)
            .then(self.id.cmp(&other.id))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.rank_cmp(other) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank_cmp(other)
    }
}

/// The longest best-first prefix of a stream of rows whose total cost fits the budget.
///
/// A row can only leave the prefix as better rows arrive, never re-enter it, so the
/// collector drops the worst held row whenever the held total is over budget and from
/// then on rejects every row ranked after the best row it has dropped. What it holds is
/// the budgeted prefix plus, at most, rows whose total is within rounding of the budget;
/// [`BudgetedBest::into_picks`] cuts the exact prefix.
#[derive(Debug, Clone)]
pub struct BudgetedBest {
    budget: f64,
    held: BTreeSet<Ranked>,
    total: f64,
    /// The best row dropped so far: nothing ranked after it can be picked.
    cutoff: Option<Ranked>,
}

impl BudgetedBest {
    pub fn new(budget: f64) -> Self {
        BudgetedBest {
            budget,
            held: BTreeSet::new(),
            total: 0.0,
            cutoff: None,
        }
    }

    /// Offer a row with its value (higher is better) and its cost (finite, >= 0).
    pub fn offer(&mut self, id: i64, value: f64, cost: f64) {
        let row = Ranked { id, value, cost };
        if self.cutoff.is_some_and(|c| row > c) {
            return;
        }
        // The same row offered again (a pool id repeated with the same value) is held once
        // and paid for once.
        if !self.held.insert(row) {
            return;
        }
        self.total += cost;
        // A margin keeps a row whose running total is over only by rounding.
        while self.total > self.budget + self.budget.abs() * 1e-12 {
            let worst = self.held.pop_last().expect("a total over budget has rows");
            self.total -= worst.cost;
            self.drop_row(worst);
        }
    }

    fn drop_row(&mut self, row: Ranked) {
        if self.cutoff.is_none_or(|c| row < c) {
            self.cutoff = Some(row);
        }
    }

    /// Rows held now (bounded by what the budget can buy).
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// The picks, best first, up to the first that would exceed the budget.
    pub fn into_picks(self) -> Vec<Pick> {
        let mut total = 0.0;
        self.held
            .into_iter()
            .map_while(|row| {
                (total + row.cost <= self.budget).then(|| {
                    total += row.cost;
                    Pick {
                        id: row.id,
                        target: None,
                        score: row.value,
                        cumulative_cost: total,
                    }
                })
            })
            .collect()
    }
}

/// Greedy selection by marginal gain of `Σ_t group(S, t)`, the attention-pooled group
/// score of the picked set S on each target (0 for the empty set). `scores[t][c]` is
/// candidate `c`'s influence on target `t`; `ids[c]` and `costs[c]` its id and cost.
/// Each pick takes the candidate with the largest gain (ties, up to a relative 1e-12 of
/// rounding, to the smaller id) and stops
/// at the first whose cost would exceed the budget, or when no candidate is left.
/// `interrupted` is polled before every pick.
///
/// Cost: O(picks x candidates x targets) pooled-score updates.
pub fn greedy_group(
    scores: &[Vec<f32>],
    ids: &[i64],
    costs: &[f64],
    budget: f64,
    interrupted: &dyn Fn() -> bool,
) -> Result<Vec<Pick>, Cancelled> {
    debug_assert!(scores.iter().all(|row| row.len() == ids.len()));
    debug_assert_eq!(ids.len(), costs.len());
    let mut groups = vec![GroupState::default(); scores.len()];
    let mut current = vec![0.0f64; scores.len()];
    let mut taken = vec![false; ids.len()];
    let mut picks = Vec::new();
    let mut total = 0.0;
    loop {
        if interrupted() {
            return Err(Cancelled);
        }
        let mut best: Option<(usize, f64)> = None;
        for c in (0..ids.len()).filter(|&c| !taken[c]) {
            let gain: f64 = groups
                .iter()
                .zip(scores)
                .zip(&current)
                .map(|((group, row), now)| with_member(group, row[c] as f64) - now)
                .sum();
            // Gains equal up to rounding (the same scores summed in another order) tie.
            let better = match best {
                None => true,
                Some((b, g)) => {
                    let tolerance = 1e-12 * g.abs().max(1.0);
                    gain > g + tolerance || (gain >= g - tolerance && ids[c] < ids[b])
                }
            };
            if better {
                best = Some((c, gain));
            }
        }
        let Some((c, gain)) = best else {
            return Ok(picks);
        };
        if total + costs[c] > budget {
            return Ok(picks);
        }
        total += costs[c];
        taken[c] = true;
        for ((group, row), now) in groups.iter_mut().zip(scores).zip(current.iter_mut()) {
            group.push(row[c] as f64);
            *now = group
                .result(Pooling::Attention)
                .expect("a member was pushed");
        }
        picks.push(Pick {
            id: ids[c],
            target: None,
            score: gain,
            cumulative_cost: total,
        });
    }
}

/// The attention-pooled score of `group` with one more member scored `score`.
fn with_member(group: &GroupState, score: f64) -> f64 {
    let mut next = group.clone();
    next.push(score);
    next.result(Pooling::Attention)
        .expect("a member was pushed")
}
