//! `airrep-quality --explore MODEL_DIR OPTIONS...`: AirRep training recipes compared on the
//! benchmark's labels without Postgres. Each JSON object of options trains on the training
//! subsets and targets exactly as `airrep.train` does (same trainer, same defaults), then
//! the kept model is scored on the held-out subsets and targets with both poolings.
//! Prints one tab-separated line per recipe; `benches/quality.sh` stays the reference run.

use std::path::Path;
use std::time::Instant;

use airrep_core::group::Pooling;
use airrep_core::lds::lds;
use airrep_model::{
    Checkpoint, Depth, Progress, ProjectorInit, TrainData, TrainLayers, TrainOptions, Trainer,
};

use crate::Setup;

type Error = Box<dyn std::error::Error>;

fn never() -> bool {
    false
}

/// Training targets and subsets as the trainer takes them.
fn training_data(setup: &Setup) -> TrainData {
    let p = &setup.params;
    TrainData {
        examples: setup.pool.iter().map(|e| e.text()).collect(),
        targets: setup.targets[..p.train_targets]
            .iter()
            .map(|t| t.text())
            .collect(),
        subsets: setup.subsets[..p.train_subsets].to_vec(),
        losses: setup.losses[..p.train_subsets]
            .iter()
            .map(|row| row[..p.train_targets].to_vec())
            .collect(),
    }
}

/// Held-out LDS of `checkpoint` with `pooling`: its group scores on the evaluation subsets
/// and targets, through the trainer's own exact scoring (no steps, nothing held out).
fn held_out_lds(
    setup: &Setup,
    checkpoint: &Checkpoint,
    tokenizer: &[u8],
    pooling: Pooling,
) -> Result<f64, Error> {
    let (eval_subsets, eval_targets) = setup.eval();
    let data = TrainData {
        examples: setup.pool.iter().map(|e| e.text()).collect(),
        targets: eval_targets
            .iter()
            .map(|&t| setup.targets[t].text())
            .collect(),
        subsets: eval_subsets
            .iter()
            .map(|&s| setup.subsets[s].clone())
            .collect(),
        losses: eval_subsets
            .iter()
            .map(|&s| eval_targets.iter().map(|&t| setup.losses[s][t]).collect())
            .collect(),
    };
    let options = TrainOptions {
        steps: 0,
        pooling,
        holdout_fraction: 0.0,
        train_layers: TrainLayers::Projector,
        // The checkpoint as it is: a base model raw, a trained one as trained.
        depth: Depth::All,
        projector_init: ProjectorInit::Identity,
        ..TrainOptions::default()
    };
    let losses = data.losses.clone();
    let (targets, subsets) = (
        (0..data.targets.len()).collect::<Vec<_>>(),
        (0..data.subsets.len()).collect::<Vec<_>>(),
    );
    let scorer = Trainer::new(checkpoint, tokenizer, data, options, &never)?;
    Ok(lds(&scorer.group_scores(&targets, &subsets)?, &losses).0)
}

pub fn run(setup: &Setup, model_dir: &Path, recipes: &[String]) -> Result<(), Error> {
    let base = Checkpoint::from_dir(model_dir)?;
    let tokenizer = std::fs::read(model_dir.join("tokenizer.json"))?;
    println!("recipe\tseconds\tsteps\tkept\tvalidation\tlds_attention\tlds_sum");
    for recipe in recipes {
        // A recipe is one object of options, or an array of them: phases, each starting
        // from the weights the previous one kept.
        let phases = match serde_json::from_str(recipe)? {
            serde_json::Value::Array(phases) => phases,
            one => vec![one],
        };
        let started = Instant::now();
        let mut trained = base.clone();
        let mut last = None;
        for phase in &phases {
            let options = TrainOptions::from_json(phase, TrainOptions::default())?;
            let trainer =
                Trainer::new(&trained, &tokenizer, training_data(setup), options, &never)?;
            let (checkpoint, kept) = trainer.run(&never, &mut |progress| {
                if let Progress::Validated(v) = progress {
                    eprintln!(
                        "  {phase}: step {} held-out LDS {:.4}{} ({:.0} s)",
                        v.steps_done,
                        v.lds,
                        if v.best { " *" } else { "" },
                        started.elapsed().as_secs_f64()
                    );
                }
            })?;
            eprintln!("  {phase}: {}", kept.reason);
            trained = checkpoint;
            last = Some(kept);
        }
        let kept = last.ok_or("a recipe needs at least one phase")?;
        let seconds = started.elapsed().as_secs_f64();
        let attention = held_out_lds(setup, &trained, &tokenizer, Pooling::Attention)?;
        let sum = held_out_lds(setup, &trained, &tokenizer, Pooling::Sum)?;
        println!(
            "{recipe}\t{seconds:.0}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}",
            kept.steps_done,
            kept.kept_step,
            kept.validation_lds.unwrap_or(f64::NAN),
            100.0 * attention,
            100.0 * sum
        );
    }
    Ok(())
}
