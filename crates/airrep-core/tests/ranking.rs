//! Labels from retraining and the ranking loss: the golden cases, and properties of the loss.

mod common;

use airrep_core::ranking::{labels, RankingLoss};
use common::{assert_close, golden_cases, matrix, number};
use proptest::prelude::*;

fn assert_matrix_close(got: &[Vec<f64>], want: &[Vec<f64>], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: rows");
    for (r, (got, want)) in got.iter().zip(want).enumerate() {
        assert_eq!(got.len(), want.len(), "{what}: row {r} length");
        for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert_close(g, w, 1e-9, 1e-15, &format!("{what}[{r}][{k}]"));
        }
    }
}

#[test]
fn golden_ranking_loss() {
    for (i, case) in golden_cases("ranking_loss.json").iter().enumerate() {
        let want_labels = matrix(&case["labels"]);
        assert_matrix_close(
            &labels(&matrix(&case["subset_losses"])),
            &want_labels,
            &format!("case {i} labels"),
        );

        let loss = RankingLoss {
            t_min: number(&case["t_min"]),
            t_max: number(&case["t_max"]),
        };
        let out = loss.loss_and_grad(&matrix(&case["scores"]), &want_labels);
        assert_eq!(
            Some(out.kept_pairs as u64),
            case["kept_pairs"].as_u64(),
            "case {i} kept pairs"
        );
        assert_close(
            out.loss,
            number(&case["loss"]),
            1e-9,
            0.0,
            &format!("case {i} loss"),
        );
        assert_matrix_close(&out.grad, &matrix(&case["grad"]), &format!("case {i} grad"));
    }
}

/// Scores and labels for a few targets over the same number of subsets.
fn batch() -> impl Strategy<Value = (Vec<Vec<f64>>, Vec<Vec<f64>>)> {
    (1..4usize, 2..8usize).prop_flat_map(|(targets, subsets)| {
        let rows = |range: std::ops::Range<f64>| {
            prop::collection::vec(prop::collection::vec(range, subsets), targets)
        };
        (rows(-50.0..50.0), rows(-10.0..10.0))
    })
}

proptest! {
    #[test]
    fn loss_is_nonnegative_and_gradients_of_a_target_cancel((scores, labels) in batch()) {
        let out = RankingLoss::default().loss_and_grad(&scores, &labels);
        prop_assert!(out.loss >= 0.0 && out.loss.is_finite());
        // Each pair pushes s_j up exactly as much as it pushes s_k down.
        for row in &out.grad {
            prop_assert!(row.iter().sum::<f64>().abs() <= 1e-12, "{:?}", row);
        }
    }

    #[test]
    fn only_score_differences_matter((scores, labels) in batch(), shift in -100.0..100.0f64) {
        let shifted: Vec<Vec<f64>> =
            scores.iter().map(|row| row.iter().map(|s| s + shift).collect()).collect();
        let loss = RankingLoss::default();
        let (a, b) = (loss.loss_and_grad(&scores, &labels), loss.loss_and_grad(&shifted, &labels));
        prop_assert_eq!(a.kept_pairs, b.kept_pairs);
        prop_assert!((a.loss - b.loss).abs() <= 1e-9 * a.loss.max(1.0), "{} vs {}", a.loss, b.loss);
    }

    #[test]
    fn labels_do_not_depend_on_the_losses_scale(
        losses in prop::collection::vec(prop::collection::vec(1.0..5.0f64, 3), 2..20),
        exponent in prop::sample::select(vec![-170i32, -100, 0, 100, 160]),
    ) {
        // Squared deviations of losses this small or large under- or overflow f64.
        let scale = 10f64.powi(exponent);
        let scaled: Vec<Vec<f64>> =
            losses.iter().map(|row| row.iter().map(|l| l * scale).collect()).collect();
        for (want, got) in labels(&losses).iter().zip(labels(&scaled)) {
            for (w, g) in want.iter().zip(&got) {
                prop_assert!((w - g).abs() <= 1e-9, "{:?} against {:?} at 1e{}", want, got, exponent);
            }
        }
    }

    #[test]
    fn labels_are_clipped_and_centred(losses in prop::collection::vec(prop::collection::vec(-5.0..5.0f64, 3), 2..20)) {
        for row in labels(&losses) {
            prop_assert!(row.iter().all(|y| (-10.0..=10.0).contains(y)));
            if row.iter().all(|y| y.abs() < 10.0) {
                prop_assert!(row.iter().sum::<f64>().abs() <= 1e-9, "{:?}", row);
            }
        }
    }
}
