//! `airrep.train`: ranking-loss training of an encoder from SQL label tables, producing a new
//! registry model with its parent, options and a per-step log, atomically; plus
//! `airrep.sample_subsets` to plan the retraining runs that produce those labels.

use std::time::Instant;

use airrep_model::train::{Kept, Progress, StepLog, TrainData, TrainOptions, Trainer};
use airrep_model::{Checkpoint, SplitMix64};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value};

use crate::error::{raise, raise_model, sqlstate, OrRaise};
use crate::labels::LabelSet;
use crate::registry;
use crate::relation::Relation;
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
    examples: Relation,
    targets: Relation,
    subsets: Relation,
    losses: Relation,
    options_json: default!(pgrx::JsonB, "'{}'"),
) -> i64 {
    registry::require_write_privileges("airrep.train", true);
    let base_id = registry::model_identity(base_model).id;
    registry::require_unused_name(name);
    let options = read_options(&options_json.0);
    let labels = LabelSet::load(
        &examples.open(),
        &targets.open(),
        &subsets.open(),
        &losses.open(),
    );
    let (config, weights, tokenizer) = registry::model_files(base_id);
    let base = Checkpoint::from_bytes(&config, &weights).or_raise();

    let pool = thread_pool();
    let started = Instant::now();
    let trainer = run(&pool, "preparing training", || {
        Trainer::new(
            &base,
            &tokenizer,
            training_data(labels),
            options.clone(),
            &cancel_requested,
        )
    });
    report_start(&trainer, &options, started);
    let (subsets_trained, subsets_held_out) = trainer.subset_counts();
    let (targets_trained, targets_held_out) = trainer.target_counts();
    let (trained, kept, log) = train_to_the_end(&pool, trainer, &options, started);

    let mut config: Value =
        serde_json::from_slice(&trained.config.to_airrep_json()).expect("config serialises");
    let mut record = kept.to_json();
    record["base_model"] = json!(base_model);
    record["options"] = options_json.0;
    record["effective_options"] = options.to_json();
    record["subsets_trained"] = json!(subsets_trained);
    record["subsets_held_out"] = json!(subsets_held_out);
    record["targets_trained"] = json!(targets_trained);
    record["targets_held_out"] = json!(targets_held_out);
    record["layers_kept"] = json!(trained.config.num_hidden_layers);
    record["layers_of_base"] = json!(base.config.num_hidden_layers);
    record["unit_scale"] = json!(trained.unit_scale());
    record["seconds"] = json!(started.elapsed().as_secs_f64());
    config["airrep_training"] = record;
    let id = save(
        name, base_id, base_model, &trained, &config, &tokenizer, &kept,
    );
    write_log(id, log);
    id
}

/// The options of `json` over the defaults, on the device `airrep.device` names.
fn read_options(json: &Value) -> TrainOptions {
    let defaults = TrainOptions {
        max_length: crate::gucs::MAX_LENGTH.get() as usize,
        ..TrainOptions::default()
    };
    let mut options =
        TrainOptions::from_json(json, defaults).unwrap_or_else(|e| fail("reading the options", e));
    options.device = device();
    options
}

fn training_data(labels: LabelSet) -> TrainData {
    TrainData {
        examples: labels.example_texts,
        targets: labels.target_texts,
        subsets: labels.subsets,
        losses: labels.losses,
    }
}

/// NOTICEs: the start chosen, and what trains against what.
fn report_start(trainer: &Trainer, options: &TrainOptions, started: Instant) {
    let (trained_subsets, held_out) = trainer.subset_counts();
    let (trained_targets, held_out_targets) = trainer.target_counts();
    if let Some(start) = trainer.start_choice() {
        notice!(
            "airrep.train: {} (the saved model's config -> 'airrep_training' -> 'start_scores' lists them)",
            start.describe()
        );
    }
    notice!(
        "airrep.train: {trained_subsets} training and {held_out} held-out subsets, {trained_targets} training and {held_out_targets} held-out targets, train_layers {}, frozen part cached in {:.1} s",
        options.train_layers,
        started.elapsed().as_secs_f64()
    );
}

/// Drives [`Trainer::advance`] to the end: each piece runs on the pool and is reported
/// here, on the backend's thread (NOTICEs with an ETA, the log rows), with a cancel check
/// between pieces. Returns the weights kept, why, and the log.
fn train_to_the_end(
    pool: &rayon::ThreadPool,
    mut trainer: Trainer,
    options: &TrainOptions,
    started: Instant,
) -> (Checkpoint, Kept, Vec<LogRow>) {
    let mut log: Vec<LogRow> = Vec::new();
    let steps_started = Instant::now();
    loop {
        pgrx::check_for_interrupts!();
        let piece_started = Instant::now();
        let Some(done) = run(pool, "training", || trainer.advance(&cancel_requested)) else {
            break;
        };
        match done {
            Progress::Validated(v) => {
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
            Progress::Stepped(mut step) => {
                // The log keeps a step's figures, not its batch's scores: a fast run takes
                // hundreds of steps a second, and 64 x 32 scores each would add up to
                // gigabytes.
                step.group_scores = Vec::new();
                report_step(&step, options, steps_started, started);
                log.push(LogRow {
                    step,
                    seconds: piece_started.elapsed().as_secs_f64(),
                    validation_lds: None,
                });
            }
        }
    }
    let (trained, kept) = run(pool, "saving the model", || trainer.into_checkpoint());
    notice!("airrep.train: {}", kept.reason);
    (trained, kept, log)
}

/// A NOTICE on the first step, every tenth and the last, with the rate and an ETA.
fn report_step(step: &StepLog, options: &TrainOptions, steps_started: Instant, started: Instant) {
    let done = step.step + 1;
    if !(done == 1 || done.is_multiple_of(10) || done == options.steps) {
        return;
    }
    let rate = done as f64 / steps_started.elapsed().as_secs_f64();
    // At most the steps left at this rate, and never past the time budget.
    let mut eta = (options.steps - done) as f64 / rate;
    if options.max_seconds > 0.0 {
        eta = eta.min((options.max_seconds - started.elapsed().as_secs_f64()).max(0.0));
    }
    notice!(
        "airrep.train: step {done}/{} loss {:.5} grad_norm {:.4} lr {:.3e}, {:.2} steps/s, ETA {eta:.0} s at most",
        options.steps,
        step.loss,
        step.grad_norm,
        step.lr,
        rate,
    );
}

/// Inserts the trained model under `name`, its parent the base unless the base was dropped
/// meanwhile (the trained model stands on its own: its weights and tokenizer are its own).
fn save(
    name: &str,
    base_id: i64,
    base_model: &str,
    trained: &Checkpoint,
    config: &Value,
    tokenizer: &[u8],
    kept: &Kept,
) -> i64 {
    let weights = trained.to_safetensors().or_raise();
    let description = match (kept.validation_lds_start, kept.validation_lds) {
        (Some(b), Some(a)) => {
            format!(
                "trained from {base_model}; held-out LDS {b:.4} -> {a:.4} (kept step {})",
                kept.kept_step
            )
        }
        _ => format!("trained from {base_model}"),
    };
    let parent = registry::model_id_exists_now(base_id).then_some(base_id);
    if parent.is_none() {
        warning!("airrep.train: base model \"{base_model}\" was dropped during training; \"{name}\" is saved without a parent");
    }
    registry::insert_model(
        name,
        config,
        &weights,
        tokenizer,
        parent,
        Some(&description),
    )
}

fn write_log(model_id: i64, log: Vec<LogRow>) {
    for row in log {
        Spi::run_with_args(
            "INSERT INTO airrep.training_log (model_id, step, loss, grad_norm, lr, kept_pairs, seconds, validation_lds)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                model_id.into(),
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
}

/// A retraining plan: `n` random subsets of `size` examples each (without replacement within a
/// subset), deterministic for `seed`, as (subset_id, example_id) rows. The rows are made one
/// subset at a time, so a large plan streams and can be cancelled.
#[pg_extern(schema = "airrep", volatile, strict)]
fn sample_subsets(
    examples: Relation,
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
    let ids = distinct_ids(&examples.open());
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
