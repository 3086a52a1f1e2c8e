//! Evaluation: `airrep.spearman(x, y)` and the linear datamodeling score `airrep.lds(...)`.

use airrep_core::group::{self, Pooling};
use airrep_core::lds::{lds, SpearmanState};
use pgrx::datum::Internal;
use pgrx::pg_sys;
use pgrx::prelude::*;
use rayon::prelude::*;

use crate::aggstate::{self, PartialState};
use airrep_model::Encoder;

use crate::encode::{encode_texts, encoder};
use crate::error::{raise, sqlstate};
use crate::labels::LabelSet;
use crate::relation::Relation;
use crate::runtime::thread_pool;

impl PartialState for SpearmanState {
    fn to_bytes(&self) -> Vec<u8> {
        SpearmanState::to_bytes(self)
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        SpearmanState::from_bytes(bytes).map_err(|e| e.to_string())
    }

    fn merge(&mut self, other: &Self) {
        SpearmanState::merge(self, other)
    }
}

#[pg_extern(schema = "airrep", parallel_safe)]
fn spearman_step(
    mut internal: Internal,
    x: Option<f64>,
    y: Option<f64>,
    fcinfo: pg_sys::FunctionCallInfo,
) -> Internal {
    if let (Some(x), Some(y)) = (x, y) {
        if x.is_nan() || y.is_nan() {
            raise(
                sqlstate::INVALID_PARAMETER_VALUE,
                "airrep.spearman does not accept NaN",
            );
        }
        aggstate::state_mut(fcinfo, &mut internal, SpearmanState::default).push(x, y);
    }
    internal
}

#[pg_extern(schema = "airrep", parallel_safe)]
fn spearman_final(internal: Internal) -> Option<f64> {
    aggstate::state_ref::<SpearmanState>(&internal).map(SpearmanState::result)
}

#[pg_extern(schema = "airrep", strict, parallel_safe)]
fn spearman_serialize(internal: Internal) -> Vec<u8> {
    aggstate::serialize::<SpearmanState>(internal)
}

#[pg_extern(schema = "airrep", strict, parallel_safe)]
fn spearman_deserialize(bytes: &[u8], _unused: Internal) -> Internal {
    aggstate::deserialize::<SpearmanState>(bytes)
}

#[pg_extern(schema = "airrep", parallel_safe)]
fn spearman_combine(left: Internal, right: Internal, fcinfo: pg_sys::FunctionCallInfo) -> Internal {
    aggstate::combine::<SpearmanState>(fcinfo, left, right)
}

extension_sql!(
    r#"
CREATE AGGREGATE airrep.spearman(x double precision, y double precision) (
    SFUNC = airrep.spearman_step, STYPE = internal, FINALFUNC = airrep.spearman_final,
    COMBINEFUNC = airrep.spearman_combine, SERIALFUNC = airrep.spearman_serialize,
    DESERIALFUNC = airrep.spearman_deserialize, PARALLEL = SAFE
);
COMMENT ON AGGREGATE airrep.spearman(double precision, double precision) IS
    'Spearman rank correlation (average ranks for ties); NULL pairs skipped; 0 when undefined';
"#,
    name = "spearman_aggregate",
    requires = [
        spearman_step,
        spearman_final,
        spearman_serialize,
        spearman_deserialize,
        spearman_combine
    ]
);

/// Group scores `[target][subset]` of the chosen subsets for every target, encoding each
/// example once.
pub fn group_scores(
    encoder: &Encoder,
    labels: &LabelSet,
    subsets: &[usize],
    pooling: Pooling,
) -> Vec<Vec<f64>> {
    let mut used: Vec<usize> = subsets
        .iter()
        .flat_map(|&s| labels.subsets[s].iter().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    let texts: Vec<&str> = used
        .iter()
        .map(|&e| labels.example_texts[e].as_str())
        .collect();
    let union = encode_texts(encoder, &texts);
    let positions: Vec<Vec<usize>> = subsets
        .iter()
        .map(|&s| {
            labels.subsets[s]
                .iter()
                .map(|e| used.binary_search(e).expect("encoded above"))
                .collect()
        })
        .collect();
    let target_texts: Vec<&str> = labels.target_texts.iter().map(String::as_str).collect();
    let targets = encode_texts(encoder, &target_texts);
    // Targets x examples dot products: on the compute pool, a chunk at a time, with a
    // cancel check between chunks (paper-sized label sets take tens of seconds here).
    let pool = thread_pool();
    let mut scores = Vec::with_capacity(targets.len());
    for chunk in targets.chunks(SCORED_TARGETS_PER_CHECK) {
        pgrx::check_for_interrupts!();
        scores.extend(pool.install(|| {
            chunk
                .par_iter()
                .map(|t| group::group_scores(&[t], &union, &positions, pooling).remove(0))
                .collect::<Vec<_>>()
        }));
    }
    scores
}

/// Targets scored between two cancel checks.
const SCORED_TARGETS_PER_CHECK: usize = 64;

/// LDS over the chosen subsets: (mean, per target).
fn subset_lds(
    encoder: &Encoder,
    labels: &LabelSet,
    subsets: &[usize],
    pooling: Pooling,
) -> (f64, Vec<f64>) {
    let scores = group_scores(encoder, labels, subsets, pooling);
    let losses: Vec<Vec<f64>> = subsets.iter().map(|&s| labels.losses[s].clone()).collect();
    lds(&scores, &losses)
}

fn parse_pooling(pooling: &str) -> Pooling {
    pooling
        .parse()
        .unwrap_or_else(|e: airrep_core::group::UnknownPooling| {
            raise(sqlstate::INVALID_PARAMETER_VALUE, &e.to_string())
        })
}

fn per_target(
    model: &str,
    examples: Relation,
    targets: Relation,
    subsets: Relation,
    losses: Relation,
    pooling: &str,
) -> (LabelSet, f64, Vec<f64>) {
    let pooling = parse_pooling(pooling);
    let labels = LabelSet::load(
        &examples.open(),
        &targets.open(),
        &subsets.open(),
        &losses.open(),
    );
    let all: Vec<usize> = (0..labels.subsets.len()).collect();
    let (mean, per_target) = subset_lds(&encoder(model), &labels, &all, pooling);
    (labels, mean, per_target)
}

/// LDS of `model`'s group scores against measured losses (DESIGN section 1), x1 (not x100).
#[pg_extern(schema = "airrep", name = "lds", stable, strict)]
fn lds_score(
    model: &str,
    examples: Relation,
    targets: Relation,
    subsets: Relation,
    losses: Relation,
    pooling: default!(&str, "'attention'"),
) -> f64 {
    per_target(model, examples, targets, subsets, losses, pooling).1
}

/// The per-target Spearman correlations whose mean is the LDS.
#[pg_extern(schema = "airrep", stable, strict)]
fn lds_per_target(
    model: &str,
    examples: Relation,
    targets: Relation,
    subsets: Relation,
    losses: Relation,
    pooling: default!(&str, "'attention'"),
) -> TableIterator<'static, (name!(target_id, i64), name!(spearman, f64))> {
    let (labels, _, per_target) = per_target(model, examples, targets, subsets, losses, pooling);
    TableIterator::new(labels.target_ids.into_iter().zip(per_target))
}
