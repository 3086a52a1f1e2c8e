//! `airrep.top_k`: for every target, the k pool rows of largest influence, exactly.
//!
//! The targets are read once and held; the pool is streamed in blocks through
//! [`airrep_model::TopKSearch`] (all targets times one block per product, a heap per
//! target), so memory is the targets, k hits per target and one block.

use airrep_core::topk::Hit;
use airrep_model::{Queries, TopKSearch};
use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::embedding_jobs::note_model_mismatch;
use crate::error::{raise, sqlstate, OrRaise};
use crate::runtime::thread_pool;
use crate::scan::{Block, Source};

/// The targets' ids and vectors, in id order, and their dimension; None if there are none.
/// A repeated id is an error.
pub fn read_targets(targets: &Source) -> Option<(Vec<i64>, Queries)> {
    let mut dim = None;
    let all = targets.read_all(&mut dim);
    targets.require_unique_ids(&all.ids);
    let dim = dim?;
    let queries = Queries::new(all.rows, dim).or_raise();
    Some((all.ids, queries))
}

/// The scores of `result`, or its error raised; an overflow names the pool row by its id
/// (`row_ids` are the ids of the pool rows scored).
pub fn scores_or_raise<T>(result: airrep_model::Result<T>, row_ids: &[i64]) -> T {
    match result {
        Err(airrep_model::Error::Overflow { row }) => raise(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            &format!(
                "influence out of range: a target's dot product with pool row {} overflows float4; scale such vectors down",
                row_ids[row]
            ),
        ),
        other => other.or_raise(),
    }
}

/// Stream `pool` through a search for the `k` best rows of each query; `each` also sees
/// every block (select_data gathers pool statistics there). A pool id that repeats within
/// a query's hits is an error: checking there keeps memory independent of the pool's size.
pub fn search(
    queries: &Queries,
    pool: &Source,
    k: usize,
    what: &str,
    mut each: impl FnMut(&Block),
) -> Vec<Vec<Hit>> {
    let threads = thread_pool();
    let mut dim = Some(queries.dim());
    let block_rows = queries.block_rows();
    let mut search = TopKSearch::new(queries, k);
    pool.scan(&mut dim, block_rows, false, what, |block| {
        let added = threads.install(|| search.add_block(&block.ids, &block.rows));
        scores_or_raise(added, &block.ids);
        each(block);
    });
    let hits = search.finish();
    for query_hits in &hits {
        pool.require_unique_ids(query_hits.iter().map(|hit| &hit.id));
    }
    hits
}

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
    targets: PgRelation,
    pool: PgRelation,
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
