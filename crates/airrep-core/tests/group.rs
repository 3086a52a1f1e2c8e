//! Attention-pooled group influence: the golden cases, and the properties parallel
//! aggregation relies on.

mod common;

use airrep_core::group::{pool, GroupState, Pooling, TargetGroup};
use airrep_core::vector::dot;
use common::{assert_close, floats, golden_cases, number, vector32};
use proptest::prelude::*;

#[test]
fn golden_group_influence() {
    for (i, case) in golden_cases("group_influence.json").iter().enumerate() {
        let target = vector32(&case["target"]);
        let members = case["members"].as_array().unwrap();
        let dots: Vec<f64> = members.iter().map(|m| dot(&target, &vector32(m))).collect();
        for (j, (&got, want)) in dots.iter().zip(floats(&case["dots"])).enumerate() {
            assert_close(got, want, 1e-6, 0.0, &format!("case {i} dot {j}"));
        }
        let state: GroupState = dots.iter().copied().collect();
        for (pooling, key) in [(Pooling::Attention, "attention"), (Pooling::Sum, "sum")] {
            let got = state.result(pooling).unwrap();
            assert_close(
                got,
                number(&case[key]),
                1e-6,
                0.0,
                &format!("case {i} {key}"),
            );
        }
    }
}

/// Scores at every scale the tests care about, from near-cancelling to far past exp's range.
fn score() -> impl Strategy<Value = f64> {
    prop_oneof![-1e-3..1e-3, -10.0..10.0, -1e4..1e4, -1e80..1e80]
}

/// Scores, cut points that split them into parts (some possibly empty), and an order in
/// which to merge the parts, as parallel workers finish in any order.
fn split_scores() -> impl Strategy<Value = (Vec<f64>, Vec<usize>, Vec<usize>)> {
    (prop::collection::vec(score(), 1..60), 0..6usize).prop_flat_map(|(scores, n_cuts)| {
        let cuts = prop::collection::vec(0..=scores.len(), n_cuts);
        let order = Just((0..=n_cuts).collect::<Vec<_>>()).prop_shuffle();
        (Just(scores), cuts, order)
    })
}

fn scores_and_a_shuffle() -> impl Strategy<Value = (Vec<f64>, Vec<f64>)> {
    prop::collection::vec(score(), 1..60)
        .prop_flat_map(|s| (Just(s.clone()), Just(s).prop_shuffle()))
}

fn max_magnitude(scores: &[f64]) -> f64 {
    scores.iter().fold(0.0, |m, s| m.max(s.abs()))
}

proptest! {
    /// What parallel workers (and Citus nodes) ship decodes to the same state, and any
    /// cut of those bytes is an error, not a wrong state.
    #[test]
    fn target_group_bytes_round_trip(
        target in prop::collection::vec(-1e30f32..1e30, 0..40),
        scores in prop::collection::vec(score(), 0..20),
        sum in any::<bool>(),
    ) {
        let pooling = if sum { Pooling::Sum } else { Pooling::Attention };
        let mut group = TargetGroup::new(&target, pooling);
        group.scores.extend(scores);
        let bytes = group.to_bytes();
        prop_assert_eq!(TargetGroup::from_bytes(&bytes).unwrap(), group);
        for cut in 0..bytes.len() {
            prop_assert!(TargetGroup::from_bytes(&bytes[..cut]).is_err());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(TargetGroup::from_bytes(&longer).is_err());
    }

    #[test]
    fn merging_any_split_in_any_order_matches_serial((scores, mut cuts, order) in split_scores()) {
        let serial: GroupState = scores.iter().copied().collect();
        cuts.push(0);
        cuts.push(scores.len());
        cuts.sort_unstable();
        let parts: Vec<GroupState> =
            cuts.windows(2).map(|w| scores[w[0]..w[1]].iter().copied().collect()).collect();
        let mut merged = GroupState::default();
        order.iter().for_each(|&i| merged.merge(&parts[i]));

        let tolerance = 1e-12 * max_magnitude(&scores);
        for pooling in [Pooling::Attention, Pooling::Sum] {
            let (want, got) = (serial.result(pooling).unwrap(), merged.result(pooling).unwrap());
            prop_assert!((want - got).abs() <= tolerance, "{}: {} vs {}", pooling, got, want);
        }
        prop_assert_eq!(merged.count(), scores.len() as u64);
    }

    #[test]
    fn member_order_does_not_matter((scores, shuffled) in scores_and_a_shuffle()) {
        let a = pool(scores.iter().copied(), Pooling::Attention).unwrap();
        let b = pool(shuffled, Pooling::Attention).unwrap();
        prop_assert!((a - b).abs() <= 1e-12 * max_magnitude(&scores), "{} vs {}", a, b);
    }

    #[test]
    fn attention_lies_between_min_and_max(scores in prop::collection::vec(score(), 1..60)) {
        let got = pool(scores.iter().copied(), Pooling::Attention).unwrap();
        let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let slack = 1e-12 * max_magnitude(&scores);
        prop_assert!(got.is_finite());
        prop_assert!(min - slack <= got && got <= max + slack, "{} not in [{}, {}]", got, min, max);
    }

    #[test]
    fn state_bytes_round_trip(scores in prop::collection::vec(score(), 0..20)) {
        let state: GroupState = scores.into_iter().collect();
        prop_assert_eq!(GroupState::from_bytes(&state.to_bytes()), Ok(state));
    }

    #[test]
    fn state_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(GroupState::from_bytes(&bytes).is_ok(), bytes.len() == 40);
    }
}

/// The golden cases with the f32-lane scores `group_influence` uses (`vector::dot_f32`), on
/// every SIMD tier this CPU has: each dot within its documented bound, and the pooled
/// results within 1e-6 relative, as the SQL aggregate is tested.
#[test]
fn golden_group_influence_with_f32_lane_scores_on_every_tier() {
    use airrep_core::simd::{with_tier, Tier};
    use airrep_core::vector::dot_f32;
    for tier in Tier::available() {
        for (i, case) in golden_cases("group_influence.json").iter().enumerate() {
            let target = vector32(&case["target"]);
            let members: Vec<Vec<f32>> = case["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(vector32)
                .collect();
            let dots: Vec<f64> = with_tier(tier, || {
                members.iter().map(|m| dot_f32(&target, m)).collect()
            })
            .unwrap();
            for (j, (&got, m)) in dots.iter().zip(&members).enumerate() {
                let exact = dot(&target, m);
                let magnitude: f64 = target
                    .iter()
                    .zip(m)
                    .map(|(&a, &b)| (a as f64 * b as f64).abs())
                    .sum();
                let bound = (target.len() as f64 / 16.0 + 8.0) * 2f64.powi(-24) * magnitude;
                assert!(
                    (got - exact).abs() <= bound * 1.001,
                    "{tier}: case {i} dot {j}: {got} vs {exact}"
                );
            }
            let state: GroupState = dots.iter().copied().collect();
            for (pooling, key) in [(Pooling::Attention, "attention"), (Pooling::Sum, "sum")] {
                let got = state.result(pooling).unwrap();
                let what = format!("{tier}: case {i} {key}");
                assert_close(got, number(&case[key]), 1e-6, 0.0, &what);
            }
        }
    }
}
