//! Spearman correlation and LDS: the golden cases, and properties of the aggregate state.

mod common;

use airrep_core::lds::{lds, spearman, SpearmanState};
use common::{assert_close, floats, golden_cases, matrix, number};
use proptest::prelude::*;

#[test]
fn golden_lds() {
    for (i, case) in golden_cases("lds.json").iter().enumerate() {
        let (score, per_target) = lds(&matrix(&case["scores"]), &matrix(&case["losses"]));
        let want = floats(&case["per_target"]);
        assert_eq!(per_target.len(), want.len(), "case {i} targets");
        for (d, (&got, want)) in per_target.iter().zip(want).enumerate() {
            assert_close(got, want, 1e-14, 1e-15, &format!("case {i} target {d}"));
        }
        assert_close(
            score,
            number(&case["lds"]),
            1e-14,
            1e-15,
            &format!("case {i} lds"),
        );
    }
}

/// Paired samples with ties: values drawn from a small set.
fn pairs() -> impl Strategy<Value = Vec<(f64, f64)>> {
    let value = prop_oneof![(-3i32..3).prop_map(f64::from), -1e6..1e6f64];
    prop::collection::vec((value.clone(), value), 0..40)
}

fn unzip(pairs: &[(f64, f64)]) -> (Vec<f64>, Vec<f64>) {
    pairs.iter().copied().unzip()
}

proptest! {
    #[test]
    fn spearman_is_a_symmetric_correlation(pairs in pairs()) {
        let (x, y) = unzip(&pairs);
        let rho = spearman(&x, &y);
        prop_assert!((-1.0 - 1e-12..=1.0 + 1e-12).contains(&rho), "{}", rho);
        prop_assert_eq!(rho, spearman(&y, &x));
    }

    #[test]
    fn spearman_sees_only_ranks(pairs in pairs()) {
        let (x, y) = unzip(&pairs);
        // A strictly increasing map keeps every rank and tie.
        let stretched: Vec<f64> = x.iter().map(|v| v.cbrt() * 3.0 - 7.0).collect();
        prop_assert_eq!(spearman(&x, &y), spearman(&stretched, &y));
    }

    #[test]
    fn state_merges_and_round_trips(pairs in pairs(), cut in any::<prop::sample::Index>()) {
        let (x, y) = unzip(&pairs);
        let cut = cut.index(pairs.len() + 1);
        let (mut left, mut right) = (SpearmanState::default(), SpearmanState::default());
        pairs[..cut].iter().for_each(|&(a, b)| left.push(a, b));
        pairs[cut..].iter().for_each(|&(a, b)| right.push(a, b));
        let right = SpearmanState::from_bytes(&right.to_bytes()).unwrap();
        left.merge(&right);
        prop_assert_eq!(left.result(), spearman(&x, &y));
    }

    #[test]
    fn state_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = SpearmanState::from_bytes(&bytes);
    }
}
