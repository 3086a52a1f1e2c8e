//! Model selection: the best validated weights kept, patience and the time budget.

use super::*;

#[test]
fn best_validated_weights_are_kept() {
    let options = TrainOptions {
        steps: 12,
        head_lr: 0.05, // large steps, so the LDS moves and the last step is rarely best
        targets_per_step: 4,
        subsets_per_step: 4,
        holdout_fraction: 0.34,
        eval_every: 2,
        patience: 0,
        seed: 3,
        ..TrainOptions::default()
    };
    let mut trainer = tiny_trainer(selection_data(), options.clone()).unwrap();
    assert_eq!(trainer.subset_counts(), (8, 4));
    let mut history = Vec::new();
    loop {
        if trainer.validation_due() {
            history.push(trainer.validate(&never).unwrap());
        }
        if trainer.finished() {
            break;
        }
        trainer.step(&never).unwrap();
    }
    let steps: Vec<usize> = history.iter().map(|v| v.steps_done).collect();
    assert_eq!(steps, vec![0, 2, 4, 6, 8, 10, 12]);
    let best = history.iter().map(|v| v.lds).fold(f64::MIN, f64::max);
    let (checkpoint, selection) = trainer.into_checkpoint().unwrap();
    assert_eq!(selection.validation_lds, Some(best));
    assert_eq!(selection.validation_lds_start, Some(history[0].lds));
    let kept = history.iter().find(|v| v.lds == best).unwrap();
    assert_eq!(selection.kept_step, kept.steps_done);

    // The saved checkpoint is those weights: validated afresh, it scores the best LDS.
    let tokenizer = tokenizer_json();
    // (every layer of the saved model: a fresh depth choice could truncate it further)
    let options = TrainOptions {
        depth: Depth::All,
        ..options
    };
    let mut again =
        Trainer::new(&checkpoint, &tokenizer, selection_data(), options, &never).unwrap();
    let revalidated = again.validate(&never).unwrap();
    assert!(
        (revalidated.lds - best).abs() < 1e-9,
        "kept weights score {} on the holdout, the best validation was {best}",
        revalidated.lds
    );
}

#[test]
fn patience_stops_after_validations_without_a_new_best() {
    let options = TrainOptions {
        holdout_fraction: 0.34,
        patience: 2,
        ..TrainOptions::default()
    };
    let mut trainer = tiny_trainer(selection_data(), options).unwrap();
    let record = |trainer: &mut Trainer, lds: f64| {
        let best = trainer.validations.iter().all(|v| lds > v.lds);
        let steps_done = trainer.validations.len();
        trainer.validations.push(Validation {
            steps_done,
            lds,
            best,
        });
    };
    for lds in [0.1, 0.3, 0.2] {
        record(&mut trainer, lds);
        assert!(!trainer.finished());
    }
    record(&mut trainer, 0.3); // a tie is not a new best
    assert!(trainer.finished());
    let selection = trainer.kept();
    assert!(selection.stopped_early && selection.kept_step == 1);
    assert!(selection
        .reason
        .contains("stopped early after 2 validations"));
}

#[test]
fn the_time_budget_ends_the_run_and_keeps_the_best_validated_weights() {
    let options = TrainOptions {
        holdout_fraction: 0.34,
        max_seconds: 1e-9,
        ..TrainOptions::default()
    };
    let mut trainer = tiny_trainer(selection_data(), options).unwrap();
    assert!(trainer.finished() && trainer.validation_due());
    trainer.validate(&never).unwrap();
    assert!(!trainer.validation_due());
    let (_, selection) = trainer.into_checkpoint().unwrap();
    assert_eq!((selection.kept_step, selection.steps_done), (0, 0));
    assert!(
        selection.reason.contains("stopped at the time budget"),
        "{}",
        selection.reason
    );
}
