//! The golden reference values of DESIGN section 2, computed with PyTorch.

use airrep_core::group::{GroupState, Pooling};
use airrep_core::lds::lds;
use airrep_core::ranking::{labels, RankingLoss};
use airrep_core::vector::dot;
use serde_json::Value;

fn golden(file: &str) -> Value {
    let path = format!("{}/../../tests/golden/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(floats).collect()
}

fn vector32(v: &Value) -> Vec<f32> {
    floats(v).into_iter().map(|x| x as f32).collect()
}

fn assert_rel(actual: f64, expected: f64, tolerance: f64, what: &str) {
    let error = (actual - expected).abs() / expected.abs().max(1e-300);
    assert!(error <= tolerance || (actual - expected).abs() <= 1e-12, "{what}: {actual} vs {expected} (rel {error:e})");
}

#[test]
fn group_influence_cases() {
    let cases = golden("group_influence.json")["cases"].as_array().unwrap().clone();
    assert!(!cases.is_empty());
    for (i, case) in cases.iter().enumerate() {
        let target = vector32(&case["target"]);
        let dots: Vec<f64> = case["members"].as_array().unwrap().iter().map(|m| dot(&target, &vector32(m))).collect();
        for (j, (d, expected)) in dots.iter().zip(floats(&case["dots"])).enumerate() {
            assert_rel(*d, expected, 1e-6, &format!("case {i} dot {j}"));
        }
        let mut state = GroupState::default();
        dots.iter().for_each(|&s| state.push(s));
        assert_rel(state.result(Pooling::Attention).unwrap(), case["attention"].as_f64().unwrap(), 1e-6, &format!("case {i} attention"));
        assert_rel(state.result(Pooling::Sum).unwrap(), case["sum"].as_f64().unwrap(), 1e-6, &format!("case {i} sum"));
        // Any split merged back gives the same score: what parallel workers rely on.
        for split in 0..=dots.len() {
            let (mut left, mut right) = (GroupState::default(), GroupState::default());
            dots[..split].iter().for_each(|&s| left.push(s));
            dots[split..].iter().for_each(|&s| right.push(s));
            right.merge(&left);
            assert_rel(right.result(Pooling::Attention).unwrap(), state.result(Pooling::Attention).unwrap(), 1e-12, "merged");
        }
    }
}

#[test]
fn ranking_loss_cases() {
    for (i, case) in golden("ranking_loss.json")["cases"].as_array().unwrap().iter().enumerate() {
        let expected_labels = matrix(&case["labels"]);
        let got_labels = labels(&matrix(&case["subset_losses"]));
        for (got, want) in got_labels.iter().flatten().zip(expected_labels.iter().flatten()) {
            assert_rel(*got, *want, 1e-9, &format!("case {i} label"));
        }
        let loss = RankingLoss { t_min: case["t_min"].as_f64().unwrap(), t_max: case["t_max"].as_f64().unwrap() };
        let out = loss.loss_and_grad(&matrix(&case["scores"]), &expected_labels);
        assert_eq!(out.kept_pairs as u64, case["kept_pairs"].as_u64().unwrap(), "case {i} kept pairs");
        assert_rel(out.loss, case["loss"].as_f64().unwrap(), 1e-9, &format!("case {i} loss"));
        for (got, want) in out.grad.iter().flatten().zip(matrix(&case["grad"]).iter().flatten()) {
            assert_rel(*got, *want, 1e-9, &format!("case {i} grad"));
        }
    }
}

#[test]
fn lds_cases() {
    for (i, case) in golden("lds.json")["cases"].as_array().unwrap().iter().enumerate() {
        let (score, per_target) = lds(&matrix(&case["scores"]), &matrix(&case["losses"]));
        for (got, want) in per_target.iter().zip(floats(&case["per_target"])) {
            assert_rel(*got, want, 1e-12, &format!("case {i} per-target"));
        }
        assert_rel(score, case["lds"].as_f64().unwrap(), 1e-12, &format!("case {i} lds"));
    }
}
