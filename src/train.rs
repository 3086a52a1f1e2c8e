//! `airrep.train`: ranking-loss training of an encoder from SQL label tables, producing a new
//! registry model with its parent, options and a per-step log, atomically; plus
//! `airrep.sample_subsets` to plan the retraining runs that produce those labels.

use std::time::Instant;

use airrep_core::group::Pooling;
use airrep_model::train::{StepLog, TrainData, TrainOptions, Trainer};
use airrep_model::{Checkpoint, Encoder, EncoderOptions};
use pgrx::prelude::*;
use pgrx::PgRelation;
use serde_json::{json, Value};

use crate::encode::{device, encoder, thread_pool};
use crate::evaluate::subset_lds;
use crate::error::raise;
use crate::labels::{qualified, LabelSet};
use crate::registry;

extension_sql!(
    r#"
CREATE TABLE airrep.training_log (
    model_id   bigint NOT NULL REFERENCES airrep.models (id) ON DELETE CASCADE,
    step       int NOT NULL,
    loss       double precision NOT NULL,
    grad_norm  double precision NOT NULL,
    lr         double precision NOT NULL,
    kept_pairs int NOT NULL,
    seconds    double precision NOT NULL,
    PRIMARY KEY (model_id, step)
);
COMMENT ON TABLE airrep.training_log IS 'one row per optimiser step of airrep.train; grad_norm is before clipping';
"#,
    name = "training_log",
    requires = ["registry_tables"]
);

/// Training options from jsonb, over the paper's defaults; unknown keys are errors so typos
/// do not silently train with defaults.
fn options(json: &Value, base_max_length: usize) -> (TrainOptions, f64) {
    let Value::Object(map) = json else { raise("22023", "options must be a jsonb object") };
    let mut o = TrainOptions { max_length: base_max_length, ..TrainOptions::default() };
    let mut holdout = 0.0;
    for (key, value) in map {
        let number = || value.as_f64().unwrap_or_else(|| raise("22023", &format!("option \"{key}\" must be a number")));
        let count = || {
            value
                .as_u64()
                .map(|v| v as usize)
                .unwrap_or_else(|| raise("22023", &format!("option \"{key}\" must be a non-negative integer")))
        };
        match key.as_str() {
            "steps" => o.steps = count(),
            "lr" => o.lr = number(),
            "weight_decay" => o.weight_decay = number(),
            "warmup_steps" => o.warmup_steps = count(),
            "targets_per_step" => o.targets_per_step = count(),
            "subsets_per_step" => o.subsets_per_step = count(),
            "max_members_per_subset" => o.max_members_per_subset = count(),
            "t_min" => o.t_min = number(),
            "t_max" => o.t_max = number(),
            "seed" => o.seed = count() as u64,
            "max_length" => o.max_length = count(),
            "holdout_fraction" => holdout = number(),
            "pooling" => {
                o.pooling = value
                    .as_str()
                    .unwrap_or("")
                    .parse::<Pooling>()
                    .unwrap_or_else(|e| raise("22023", &e.to_string()))
            }
            other => raise(
                "22023",
                &format!(
                    "unknown training option \"{other}\" (known: steps, lr, weight_decay, warmup_steps, targets_per_step, \
                     subsets_per_step, max_members_per_subset, t_min, t_max, pooling, seed, max_length, holdout_fraction)"
                ),
            ),
        }
    }
    if !(0.0..1.0).contains(&holdout) {
        raise("22023", &format!("holdout_fraction must be in [0, 1), not {holdout}"));
    }
    (o, holdout)
}

/// 0..count in a random order fixed by `seed` (Fisher-Yates over a 64-bit LCG, so plans and
/// splits do not change with a dependency's RNG).
fn shuffled(count: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    for i in (1..count).rev() {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    order
}

/// Deterministic split of subset indices into (training, held out), each in index order.
fn split_subsets(count: usize, holdout: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let held = (count as f64 * holdout).round() as usize;
    if holdout > 0.0 && (held == 0 || held >= count) {
        raise("22023", &format!("holdout_fraction {holdout} of {count} subsets leaves no subsets on one side"));
    }
    let order = shuffled(count, seed);
    let (mut held_out, mut training) = (order[..held].to_vec(), order[held..].to_vec());
    training.sort_unstable();
    held_out.sort_unstable();
    (training, held_out)
}

/// Whether a cancel (pg_cancel_backend, statement_timeout) or terminate is pending. Only these
/// flags: InterruptPending is also set by requests that do not end the query. Reading them is
/// safe from any thread; acting on them happens on the backend's own thread.
fn cancel_requested() -> bool {
    unsafe {
        std::ptr::read_volatile(&raw const pg_sys::QueryCancelPending) != 0
            || std::ptr::read_volatile(&raw const pg_sys::ProcDiePending) != 0
    }
}

/// One optimiser step, stopping within a subset when the query is cancelled: the trainer
/// leaves its state unchanged on a cancelled step, and Postgres raises the cancel here.
fn step(pool: &rayon::ThreadPool, trainer: &mut Trainer) -> StepLog {
    match pool.install(|| trainer.step(&cancel_requested)) {
        Ok(step) => step,
        Err(airrep_model::Error::Cancelled) => {
            pgrx::check_for_interrupts!();
            raise("57014", "airrep.train was cancelled")
        }
        Err(e) => raise("XX000", &format!("training step failed: {e}")),
    }
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
    let (base_id, _) = registry::model_key(base_model);
    registry::require_unused_name(name);
    let (mut opts, holdout) = options(&options_json.0, crate::gucs::MAX_LENGTH.get() as usize);
    // Train where airrep.device says (cpu, or a GPU in a cuda build).
    opts.device = device();
    let labels = LabelSet::load(&examples, &targets, &subsets, &losses);
    let (training, held_out) = split_subsets(labels.subsets.len(), holdout, opts.seed);

    let (config, weights, tokenizer) = registry::model_files(base_id);
    let checkpoint = Checkpoint::from_bytes(&config, &weights).unwrap_or_else(|e| raise("XX000", &e.to_string()));
    let data = TrainData {
        examples: labels.example_texts.clone(),
        targets: labels.target_texts.clone(),
        subsets: training.iter().map(|&s| labels.subsets[s].clone()).collect(),
        losses: training.iter().map(|&s| labels.losses[s].clone()).collect(),
    };
    let pool = thread_pool();
    let mut trainer = pool
        .install(|| Trainer::new(&checkpoint, &tokenizer, data, opts.clone()))
        .unwrap_or_else(|e| raise("22023", &format!("cannot train: {e}")));
    // Held-out LDS of the base model as stored, and later of the trained one.
    let validate = |encoder: &Encoder| subset_lds(encoder, &labels, &held_out, opts.pooling).0;
    let lds_before = (!held_out.is_empty()).then(|| validate(&encoder(base_model)));

    let started = Instant::now();
    let mut log = Vec::with_capacity(opts.steps);
    for _ in 0..opts.steps {
        pgrx::check_for_interrupts!();
        let step_started = Instant::now();
        let step = step(&pool, &mut trainer);
        let seconds = step_started.elapsed().as_secs_f64();
        let rate = (step.step + 1) as f64 / started.elapsed().as_secs_f64();
        notice!(
            "airrep.train: step {}/{} loss {:.5} grad_norm {:.4} lr {:.3e}, {:.2} steps/s, ETA {:.0} s",
            step.step + 1,
            opts.steps,
            step.loss,
            step.grad_norm,
            step.lr,
            rate,
            (opts.steps - step.step - 1) as f64 / rate
        );
        log.push((step, seconds));
    }
    let trained = pool.install(|| trainer.into_checkpoint()).unwrap_or_else(|e| raise("XX000", &e.to_string()));
    let lds_after = (!held_out.is_empty()).then(|| {
        let options = EncoderOptions { max_length: opts.max_length, device: opts.device, ..EncoderOptions::default() };
        let encoder = pool
            .install(|| Encoder::new(&trained, &tokenizer, options))
            .unwrap_or_else(|e| raise("XX000", &e.to_string()));
        validate(&encoder)
    });
    let weights = trained.to_safetensors().unwrap_or_else(|e| raise("XX000", &e.to_string()));

    let mut config: Value = serde_json::from_slice(&trained.config.to_airrep_json()).expect("config serialises");
    config["airrep_training"] = json!({
        "base_model": base_model,
        "options": options_json.0,
        "subsets_trained": training.len(),
        "subsets_held_out": held_out.len(),
        "validation_lds_before": lds_before,
        "validation_lds_after": lds_after,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let description = match (lds_before, lds_after) {
        (Some(b), Some(a)) => format!("trained from {base_model}; held-out LDS {b:.4} -> {a:.4}"),
        _ => format!("trained from {base_model}"),
    };
    let id = registry::insert_model(name, &config, &weights, &tokenizer, Some(base_id), Some(&description));
    for (step, seconds) in log {
        Spi::run_with_args(
            "INSERT INTO airrep.training_log (model_id, step, loss, grad_norm, lr, kept_pairs, seconds)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                id.into(),
                (step.step as i32).into(),
                step.loss.into(),
                step.grad_norm.into(),
                step.lr.into(),
                (step.kept_pairs as i32).into(),
                seconds.into(),
            ],
        )
        .unwrap_or_else(|e| raise("XX000", &e.to_string()));
    }
    id
}

/// A retraining plan: `n` random subsets of `size` examples each (without replacement within a
/// subset), deterministic for `seed`, as (subset_id, example_id) rows.
#[pg_extern(schema = "airrep", volatile, strict)]
fn sample_subsets(
    examples: PgRelation,
    n: i32,
    size: i32,
    seed: default!(i64, 0),
) -> TableIterator<'static, (name!(subset_id, i64), name!(example_id, i64))> {
    if n < 1 || size < 1 {
        raise("22023", &format!("need n >= 1 and size >= 1, not n = {n}, size = {size}"));
    }
    let ids: Vec<i64> = Spi::connect(|client| {
        client
            .select(&format!("SELECT id::bigint FROM {} ORDER BY 1", qualified(&examples)), None, &[])
            .unwrap_or_else(|e| raise("22023", &e.to_string()))
            .filter_map(|r| r.get::<i64>(1).ok().flatten())
            .collect()
    });
    if (size as usize) > ids.len() {
        raise("22023", &format!("subset size {size} exceeds the {} examples", ids.len()));
    }
    let rows: Vec<(i64, i64)> = (1..=n as i64)
        .flat_map(|subset| {
            let mut members: Vec<i64> =
                shuffled(ids.len(), (seed as u64).wrapping_add(subset as u64)).into_iter().take(size as usize).map(|i| ids[i]).collect();
            members.sort_unstable();
            members.into_iter().map(move |id| (subset, id))
        })
        .collect();
    TableIterator::new(rows)
}
