//! `airrep.train`: ranking-loss training of an encoder from SQL label tables, producing a new
//! registry model with its parent, options and a per-step log, atomically; plus
//! `airrep.sample_subsets` to plan the retraining runs that produce those labels.

use std::time::Instant;

use airrep_model::train::{StepLog, TrainData, TrainOptions, Trainer};
use airrep_model::{Checkpoint, SplitMix64};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value};

use crate::error::{raise, raise_model, sqlstate, OrRaise};
use crate::labels::LabelSet;
use crate::registry;
use crate::runtime::{cancel_requested, device, thread_pool};
use crate::scan::{Columns, Source};

extension_sql_file!(
    "../sql/training_log.sql",
    name = "training_log",
    requires = ["registry_tables"]
);

/// Runs `work` on the backend's thread pool; a cancel raises here (the trainer leaves its
/// state unchanged on a cancelled step or validation), other errors as `what` failed.
fn run<T: Send>(
    pool: &rayon::ThreadPool,
    what: &str,
    work: impl FnOnce() -> airrep_model::Result<T> + Send,
) -> T {
    pool.install(work).unwrap_or_else(|e| fail(what, e))
}

/// Raises a trainer's error with its SQLSTATE from [`raise_model`]: bad input as the trainer
/// words it, a cancel as Postgres's own, anything else as `what` failed.
fn fail(what: &str, error: airrep_model::Error) -> ! {
    raise_model(error, |error| match error {
        airrep_model::Error::Cancelled => "airrep.train was cancelled".to_string(),
        airrep_model::Error::Input(message) => message.clone(),
        other => format!("{what} failed: {other}"),
    })
}

/// One row of `airrep.training_log`.
struct LogRow {
    step: StepLog,
    seconds: f64,
    validation_lds: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
#[pg_extern(schema = "airrep", volatile, strict)]
fn train(
    name: &str,
    base_model: &str,
    examples: PgRelation,
    targets: PgRelation,
    subsets: PgRelation,
    losses: PgRelation,
    options_json: default!(pgrx::JsonB, "'{}'"),
) -> i64 {
    registry::require_write_privileges("airrep.train", true);
    let base_id = registry::model_identity(base_model).id;
    registry::require_unused_name(name);
    let defaults = TrainOptions {
        max_length: crate::gucs::MAX_LENGTH.get() as usize,
        ..TrainOptions::default()
    };
    let mut opts = TrainOptions::from_json(&options_json.0, defaults)
        .unwrap_or_else(|e| fail("reading the options", e));
    // Train where airrep.device says (cpu, or a GPU in a cuda build).
    opts.device = device();
    let labels = LabelSet::load(&examples, &targets, &subsets, &losses);

    let (config, weights, tokenizer) = registry::model_files(base_id);
    let checkpoint = Checkpoint::from_bytes(&config, &weights).or_raise();
    let data = TrainData {
        examples: labels.example_texts,
        targets: labels.target_texts,
        subsets: labels.subsets,
        losses: labels.losses,
    };
    let pool = thread_pool();
    let started = Instant::now();
    let mut trainer = run(&pool, "preparing training", || {
        Trainer::new(
            &checkpoint,
            &tokenizer,
            data,
            opts.clone(),
            &cancel_requested,
        )
    });
    let (trained_subsets, held_out) = trainer.subset_counts();
    let (trained_targets, held_out_targets) = trainer.target_counts();
    if let Some(depth) = trainer.depth() {
        notice!(
            "airrep.train: {} (the saved model's config -> 'airrep_training' -> 'start_scores' lists them)",
            depth.describe()
        );
    }
    notice!(
        "airrep.train: {trained_subsets} training and {held_out} held-out subsets, {trained_targets} training and {held_out_targets} held-out targets, train_layers {}, frozen part cached in {:.1} s",
        opts.train_layers,
        started.elapsed().as_secs_f64()
    );

    let mut log: Vec<LogRow> = Vec::new();
    let steps_started = Instant::now();
    loop {
        pgrx::check_for_interrupts!();
        if trainer.validation_due() {
            let v = run(&pool, "validation", || trainer.validate(&cancel_requested));
            if let Some(row) = log.last_mut() {
                row.validation_lds = Some(v.lds);
            }
            notice!(
                "airrep.train: held-out LDS {:.4} after {} steps{}",
                v.lds,
                v.steps_done,
                if v.best { " (best so far)" } else { "" }
            );
        }
        if trainer.finished() {
            break;
        }
        let step_started = Instant::now();
        let mut step = run(&pool, "training step", || trainer.step(&cancel_requested));
        // The log keeps a step's figures, not its batch's scores: a fast run takes hundreds
        // of steps a second, and 64 x 32 scores each would add up to gigabytes.
        step.group_scores = Vec::new();
        let done = step.step + 1;
        let rate = done as f64 / steps_started.elapsed().as_secs_f64();
        // At most the steps left at this rate, and never past the time budget.
        let mut eta = (opts.steps - done) as f64 / rate;
        if opts.max_seconds > 0.0 {
            eta = eta.min((opts.max_seconds - started.elapsed().as_secs_f64()).max(0.0));
        }
        if done == 1 || done % 10 == 0 || done == opts.steps {
            notice!(
                "airrep.train: step {done}/{} loss {:.5} grad_norm {:.4} lr {:.3e}, {:.2} steps/s, ETA {eta:.0} s at most",
                opts.steps,
                step.loss,
                step.grad_norm,
                step.lr,
                rate,
            );
        }
        log.push(LogRow {
            step,
            seconds: step_started.elapsed().as_secs_f64(),
            validation_lds: None,
        });
    }
    let (trained, selection) = run(&pool, "saving the model", || trainer.into_checkpoint());
    notice!("airrep.train: {}", selection.reason);
    let weights = trained.to_safetensors().or_raise();

    let mut config: Value =
        serde_json::from_slice(&trained.config.to_airrep_json()).expect("config serialises");
    config["airrep_training"] = json!({
        "base_model": base_model,
        "options": options_json.0,
        "effective_options": opts.to_json(),
        "subsets_trained": trained_subsets,
        "subsets_held_out": held_out,
        "targets_trained": trained_targets,
        "targets_held_out": held_out_targets,
        "layers_kept": trained.config.num_hidden_layers,
        "layers_of_base": checkpoint.config.num_hidden_layers,
        "centered": selection.depth.as_ref().map(|d| d.kept.centered),
        "unit_scale_start": selection.depth.as_ref().map(|d| d.kept.unit_scale),
        "unit_scale": trained.unit_scale(),
        "start_scores": selection.depth.as_ref().map(|d| d.scores.iter()
            .map(|s| json!({"layers": s.start.layers, "centered": s.start.centered,
                            "unit_scale": s.start.unit_scale, "lds": s.lds}))
            .collect::<Vec<_>>()),
        "steps_done": selection.steps_done,
        "kept_step": selection.kept_step,
        "stopped_early": selection.stopped_early,
        "selection": selection.reason,
        "validation_lds_before": selection.validation_lds_start,
        "validation_lds_after": selection.validation_lds,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let description = match (selection.validation_lds_start, selection.validation_lds) {
        (Some(b), Some(a)) => {
            format!(
                "trained from {base_model}; held-out LDS {b:.4} -> {a:.4} (kept step {})",
                selection.kept_step
            )
        }
        _ => format!("trained from {base_model}"),
    };
    // The base may have been dropped while this ran. The trained model stands on its own
    // (its weights and tokenizer are its own), so it is kept, without a parent.
    let parent = registry::model_id_exists_now(base_id).then_some(base_id);
    if parent.is_none() {
        warning!("airrep.train: base model \"{base_model}\" was dropped during training; \"{name}\" is saved without a parent");
    }
    let id = registry::insert_model(
        name,
        &config,
        &weights,
        &tokenizer,
        parent,
        Some(&description),
    );
    for row in log {
        Spi::run_with_args(
            "INSERT INTO airrep.training_log (model_id, step, loss, grad_norm, lr, kept_pairs, seconds, validation_lds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                id.into(),
                (row.step.step as i32).into(),
                row.step.loss.into(),
                row.step.grad_norm.into(),
                row.step.lr.into(),
                (row.step.kept_pairs as i32).into(),
                row.seconds.into(),
                row.validation_lds.into(),
            ],
        )
        .unwrap_or_else(|e| raise(sqlstate::INTERNAL_ERROR, &e.to_string()));
    }
    id
}

/// A retraining plan: `n` random subsets of `size` examples each (without replacement within a
/// subset), deterministic for `seed`, as (subset_id, example_id) rows. The rows are made one
/// subset at a time, so a large plan streams and can be cancelled.
#[pg_extern(schema = "airrep", volatile, strict)]
fn sample_subsets(
    examples: PgRelation,
    n: i32,
    size: i32,
    seed: default!(i64, 0),
) -> TableIterator<'static, (name!(subset_id, i64), name!(example_id, i64))> {
    if n < 1 || size < 1 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("need n >= 1 and size >= 1, not n = {n}, size = {size}"),
        );
    }
    let ids = distinct_ids(&examples);
    if (size as usize) > ids.len() {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("subset size {size} exceeds the {} examples", ids.len()),
        );
    }
    // One generator draws every subset in turn: seeding each subset by `seed + subset`
    // made the plan of seed s + 1 the plan of seed s shifted by one subset.
    let mut rng = SplitMix64(seed as u64);
    TableIterator::new((1..=n as i64).flat_map(move |subset| {
        pgrx::check_for_interrupts!();
        let mut members: Vec<i64> = rng
            .sample(ids.len(), size as usize)
            .into_iter()
            .map(|i| ids[i])
            .collect();
        members.sort_unstable();
        members.into_iter().map(move |id| (subset, id))
    }))
}

/// The relation's ids in order, read as every search reads a relation (a NULL id is an
/// error there); a repeated id is an error too, since it would put one example in a subset
/// twice.
fn distinct_ids(examples: &PgRelation) -> Vec<i64> {
    let source = Source::new(examples, "examples", Columns::default());
    let ids = source.read_all(&mut None).ids;
    source.require_unique_ids(&ids);
    ids
}
