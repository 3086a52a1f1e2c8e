//! `airrep.top_k`: for every target, the k pool rows of largest influence, exactly.
//!
//! The targets are read once and held; the pool is streamed in blocks through
//! [`airrep_model::TopKSearch`] (all targets times one block per product, a heap per
//! target), so memory is the targets, k hits per target and one block.

use pgrx::prelude::*;

use crate::embedding_jobs::note_model_mismatch;
use crate::error::{raise, sqlstate};
use crate::relation::Relation;
use crate::scan::Source;
use crate::search::{read_targets, search};

pub fn check_k(k: i32) -> usize {
    if k < 1 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("k must be at least 1, got {k}"),
        );
    }
    k as usize
}

#[pg_extern(
    schema = "airrep",
    name = "top_k_by_column",
    stable,
    strict,
    parallel_restricted
)]
fn top_k(
    targets: Relation,
    pool: Relation,
    k: i32,
    vector_column: &str,
) -> TableIterator<
    'static,
    (
        name!(target_id, i64),
        name!(example_id, i64),
        name!(rank, i32),
        name!(influence, f64),
    ),
> {
    let k = check_k(k);
    let (targets, pool) = (targets.open(), pool.open());
    note_model_mismatch(
        "airrep.top_k",
        ("targets'", &targets),
        ("pool's", &pool),
        vector_column,
    );
    let targets = Source::vectors(&targets, "targets", vector_column);
    let pool = Source::vectors(&pool, "pool", vector_column);
    let Some((target_ids, queries)) = read_targets(&targets) else {
        return TableIterator::new(Vec::new());
    };
    let hits = search(&queries, &pool, k, "airrep.top_k", |_| {});
    let rows: Vec<_> = target_ids
        .into_iter()
        .zip(hits)
        .flat_map(|(target, hits)| {
            hits.into_iter()
                .enumerate()
                .map(move |(rank, hit)| (target, hit.id, rank as i32 + 1, hit.score as f64))
        })
        .collect();
    TableIterator::new(rows)
}

// pgrx has no Rust type for SQL `name`; this wrapper gives the documented signature.
extension_sql!(
    r#"
CREATE FUNCTION airrep.top_k(targets regclass, pool regclass, k integer, vector_column name DEFAULT 'embedding')
RETURNS TABLE(target_id bigint, example_id bigint, rank integer, influence double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.top_k_by_column(targets, pool, k, vector_column::text) $$;
COMMENT ON FUNCTION airrep.top_k(regclass, regclass, integer, name) IS
    'for every target row, the k pool rows of largest influence (exact; ties to the smaller id)';
"#,
    name = "top_k_wrapper",
    requires = [top_k]
);
