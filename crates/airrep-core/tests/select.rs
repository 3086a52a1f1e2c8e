//! Top-k and budgeted selection against brute-force references: sort everything, then
//! take what the rule says.

use airrep_core::group::{pool, Pooling};
use airrep_core::select::{greedy_group, round_robin, BudgetedBest, Pick, RankingTooShort};
use airrep_core::top_k::{Hit, TopK};
use proptest::prelude::*;

/// Scores from a small set of values, so ties are common; ids distinct.
fn scored_rows(max: usize) -> impl Strategy<Value = Vec<Hit>> {
    prop::collection::vec(-4i32..4, 0..max).prop_flat_map(|scores| {
        let n = scores.len();
        (
            Just(scores),
            Just((0..n as i64).collect::<Vec<_>>()).prop_shuffle(),
        )
            .prop_map(|(scores, ids)| {
                ids.into_iter()
                    .zip(scores)
                    .map(|(id, s)| Hit {
                        id: id * 7 - 20,
                        score: s as f32 * 0.5,
                    })
                    .collect()
            })
    })
}

fn sorted(mut hits: Vec<Hit>) -> Vec<Hit> {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    hits
}

/// `TopK` fed `hits` in blocks cut at `cuts`, half into one heap and half into another
/// that is then merged in, as parallel workers would.
fn top_k_in_blocks(hits: &[Hit], k: usize, cuts: &[usize]) -> Vec<Hit> {
    let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(hits.len())).collect();
    bounds.extend([0, hits.len()]);
    bounds.sort_unstable();
    let (mut left, mut right) = (TopK::new(k), TopK::new(k));
    for (i, w) in bounds.windows(2).enumerate() {
        let block = &hits[w[0]..w[1]];
        let ids: Vec<i64> = block.iter().map(|h| h.id).collect();
        let scores: Vec<f32> = block.iter().map(|h| h.score).collect();
        if i % 2 == 0 { &mut left } else { &mut right }.offer(&ids, &scores);
    }
    left.merge(right);
    left.into_sorted()
}

proptest! {
    #[test]
    fn top_k_is_the_sorted_prefix(
        hits in scored_rows(80),
        k in 0usize..20,
        cuts in prop::collection::vec(0usize..80, 0..5),
    ) {
        let want: Vec<Hit> = sorted(hits.clone()).into_iter().take(k).collect();
        prop_assert_eq!(top_k_in_blocks(&hits, k, &cuts), want);
    }

    #[test]
    fn budgeted_best_is_the_sorted_prefix(
        hits in scored_rows(60),
        costs in prop::collection::vec(prop_oneof![Just(0.0), 0.1..3.0, Just(1.0)], 60),
        budget in 0.0..20.0f64,
    ) {
        let cost = |id: i64| costs[((id + 20) / 7) as usize];
        let mut best = BudgetedBest::new(budget);
        for h in &hits {
            best.offer(h.id, h.score as f64, cost(h.id));
        }
        let mut want = Vec::new();
        let mut total = 0.0;
        for h in sorted(hits) {
            if total + cost(h.id) > budget {
                break;
            }
            total += cost(h.id);
            want.push(Pick { id: h.id, target: None, score: h.score as f64, cumulative_cost: total });
        }
        prop_assert_eq!(best.into_picks(), want);
    }

    #[test]
    fn a_row_offered_twice_is_held_and_paid_for_once(
        hits in scored_rows(30),
        budget in 0.0..20.0f64,
    ) {
        let (mut once, mut twice) = (BudgetedBest::new(budget), BudgetedBest::new(budget));
        for h in &hits {
            once.offer(h.id, h.score as f64, 1.0);
            twice.offer(h.id, h.score as f64, 1.0);
            twice.offer(h.id, h.score as f64, 1.0);
        }
        prop_assert_eq!(twice.into_picks(), once.into_picks());
    }

    #[test]
    fn round_robin_from_short_rankings_equals_full_rankings(
        scores in prop::collection::vec(prop::collection::vec(-3i32..3, 12), 1..5),
        budget in 0.0..14.0f64,
        start_depth in 1usize..4,
    ) {
        let ids: Vec<i64> = (0..12).map(|i| 100 - i * 3).collect();
        let cost = |id: i64| if id % 2 == 0 { 1.0 } else { 1.5 };
        let ranking = |row: &Vec<i32>, depth: usize| -> Vec<Hit> {
            let hits = ids.iter().zip(row).map(|(&id, &s)| Hit { id, score: s as f32 }).collect();
            sorted(hits).into_iter().take(depth).collect()
        };
        let want = reference_round_robin(&scores, &ids, &cost, budget);
        // The caller's loop: deepen until no ranking runs out early.
        let mut depth = start_depth;
        let got = loop {
            let rankings: Vec<Vec<Hit>> = scores.iter().map(|r| ranking(r, depth)).collect();
            let complete: Vec<bool> = rankings.iter().map(|r| r.len() < depth).collect();
            match round_robin(&rankings, &complete, cost, budget) {
                Ok(picks) => break picks,
                Err(RankingTooShort { depth: deeper }) => {
                    prop_assert!(deeper > depth);
                    depth = deeper;
                }
            }
        };
        prop_assert_eq!(got, want);
    }

    #[test]
    fn greedy_group_takes_the_best_marginal_gain(
        scores in prop::collection::vec(prop::collection::vec(-3.0f32..3.0, 7), 1..4),
        budget in 0.0..6.0f64,
    ) {
        let ids: Vec<i64> = vec![5, 3, 9, 1, 4, 8, 2];
        let costs: Vec<f64> = ids.iter().map(|&id| 0.5 + (id % 3) as f64 * 0.5).collect();
        let got = greedy_group(&scores, &ids, &costs, budget, &|| false).unwrap();
        // Reference: recompute the whole objective of each candidate set from scratch.
        let objective = |set: &[usize]| -> f64 {
            scores.iter().map(|row| pool(set.iter().map(|&c| row[c] as f64), Pooling::Attention).unwrap_or(0.0)).sum()
        };
        let mut set: Vec<usize> = Vec::new();
        let mut total = 0.0;
        let mut want = Vec::new();
        loop {
            let base = objective(&set);
            let best = (0..ids.len())
                .filter(|c| !set.contains(c))
                .map(|c| {
                    let mut with = set.clone();
                    with.push(c);
                    (c, objective(&with) - base)
                })
                .min_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(ids[a.0].cmp(&ids[b.0])));
            let Some((c, gain)) = best else { break };
            if total + costs[c] > budget {
                break;
            }
            total += costs[c];
            set.push(c);
            want.push((ids[c], gain, total));
        }
        prop_assert_eq!(got.len(), want.len());
        for (g, (id, gain, cumulative)) in got.iter().zip(want) {
            prop_assert_eq!(g.id, id);
            prop_assert!((g.score - gain).abs() <= 1e-9 * (1.0 + gain.abs()));
            prop_assert!((g.cumulative_cost - cumulative).abs() <= 1e-12);
        }
    }
}

/// The reference's round robin over full rankings: targets take turns in order, each its
/// best row not yet picked, until a pick would exceed the budget or nothing is left.
fn reference_round_robin(
    scores: &[Vec<i32>],
    ids: &[i64],
    cost: &dyn Fn(i64) -> f64,
    budget: f64,
) -> Vec<Pick> {
    let mut picks: Vec<Pick> = Vec::new();
    let mut total = 0.0;
    loop {
        let before = picks.len();
        for (t, row) in scores.iter().enumerate() {
            let best = (0..ids.len())
                .filter(|&i| picks.iter().all(|p| p.id != ids[i]))
                .min_by(|&a, &b| row[b].cmp(&row[a]).then(ids[a].cmp(&ids[b])));
            let Some(i) = best else { continue };
            if total + cost(ids[i]) > budget {
                return picks;
            }
            total += cost(ids[i]);
            picks.push(Pick {
                id: ids[i],
                target: Some(t),
                score: row[i] as f64,
                cumulative_cost: total,
            });
        }
        if picks.len() == before {
            return picks;
        }
    }
}

#[test]
fn round_robin_by_hand() {
    // Two targets that both rank row 1 first: target 0 takes it, target 1 its second best.
    let rankings = vec![
        vec![Hit { id: 1, score: 3.0 }, Hit { id: 2, score: 2.0 }],
        vec![Hit { id: 1, score: 5.0 }, Hit { id: 3, score: 1.0 }],
    ];
    let picks = round_robin(&rankings, &[true, true], |_| 1.0, 3.0).unwrap();
    let got: Vec<(i64, Option<usize>)> = picks.iter().map(|p| (p.id, p.target)).collect();
    assert_eq!(got, [(1, Some(0)), (3, Some(1)), (2, Some(0))]);
    assert_eq!(picks[2].cumulative_cost, 3.0);
    // A cost budget stops at the first pick that would exceed it, even if a later one fits.
    let costs = |id: i64| if id == 3 { 10.0 } else { 1.0 };
    let picks = round_robin(&rankings, &[true, true], costs, 5.0).unwrap();
    assert_eq!(picks.iter().map(|p| p.id).collect::<Vec<_>>(), [1]);
    // A ranking cut short asks for more depth instead of guessing.
    assert_eq!(
        round_robin(&rankings, &[false, false], |_| 1.0, 10.0),
        Err(RankingTooShort { depth: 4 })
    );
}

#[test]
fn greedy_group_by_hand() {
    // One target, members scored 2, 1 and -3: alone, -3 pools to -3; the group {2} is 2,
    // and adding 1 gives (2e^2 + e)/(e^2 + e) = 1.731..., a loss of 0.269 but the best left.
    let scores = vec![vec![2.0f32, 1.0, -3.0]];
    let picks = greedy_group(&scores, &[10, 11, 12], &[1.0; 3], 3.0, &|| false).unwrap();
    assert_eq!(picks.iter().map(|p| p.id).collect::<Vec<_>>(), [10, 11, 12]);
    let e = std::f64::consts::E;
    let pair = (2.0 * e * e + e) / (e * e + e);
    assert!((picks[0].score - 2.0).abs() < 1e-12);
    assert!((picks[1].score - (pair - 2.0)).abs() < 1e-12);
    assert!(greedy_group(&scores, &[10, 11, 12], &[1.0; 3], 3.0, &|| true).is_err());
}
