//! The golden training trace: the reference's AdamW steps on tiny-airrep, reproduced.

use super::*;

/// On every device the build and the machine have (`testing::devices`): the CPU at each
/// SIMD tier it has, and a GPU in a `--features cuda` build on a GPU machine. (Training's
/// products are candle's, whose `gemm` picks its own kernels; the tier reaches the
/// airrep-core math and the fused kernels, with the same bounds.)
#[test]
fn train_reproduces_golden_steps() {
    for target in crate::testing::targets().into_iter().filter(|t| !t.amx) {
        eprintln!("golden training steps on {target:?}");
        target.run(|| train_reproduces_golden_steps_on(target.device));
    }
}

fn train_reproduces_golden_steps_on(device: crate::DeviceSpec) {
    let golden = golden();
    let data = golden_data(&golden);
    let options = TrainOptions {
        device,
        ..golden_options(&golden)
    };
    let mut trainer = tiny_trainer(data, options).unwrap();
    assert_matrix_rel(&trainer.labels, &golden.labels, 1e-12, "labels");
    for (t, want) in golden.trace.iter().enumerate() {
        let log = trainer.step(&never).unwrap();
        assert_eq!(log.step, t);
        assert_relative(log.lr, want.lr, 1e-12, &format!("step {t} lr"));
        assert_relative(log.loss, want.loss, 1e-4, &format!("step {t} loss"));
        assert_relative(
            log.grad_norm,
            want.grad_norm_before_clip,
            1e-4,
            &format!("step {t} grad norm"),
        );
        assert_matrix_rel(
            &log.group_scores,
            &want.group_scores,
            1e-4,
            &format!("step {t} group scores"),
        );
    }
    assert!(trainer.finished() && !trainer.validation_due());
    let all_targets: Vec<usize> = (0..golden.targets.len()).collect();
    let all_subsets: Vec<usize> = (0..golden.subsets.len()).collect();
    let after = trainer.group_scores(&all_targets, &all_subsets).unwrap();
    assert_matrix_rel(
        &after,
        &golden.group_scores_after,
        1e-3,
        "group scores after",
    );

    let (checkpoint, selection) = trainer.into_checkpoint().unwrap();
    assert_eq!(selection.kept_step, golden.trace.len());
    assert_eq!(selection.validation_lds, None);
    let row = checkpoint.tensors()["projector.weight"]
        .get(0)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    crate::testing::assert_close(
        &row,
        &golden.projector_weight_after_first_row,
        1e-4,
        "projector row 0",
    );
}
