//! The engines the search and cleaning functions share: targets read once and held, the
//! pool streamed through the exact top-k search ([`airrep_model::TopKSearch`]), and the
//! cosine threshold join over unit vectors. `top_k` and `select_data` rank with the first,
//! `near_duplicates` and `contamination` join with the second.

use airrep_core::top_k::Hit;
use airrep_core::vector::cosine;
use airrep_model::{Queries, TopKSearch};

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

/// The threshold of a cosine join, checked: in (0, 1].
pub fn check_threshold(threshold: f64) -> f64 {
    if !(threshold > 0.0 && threshold <= 1.0) {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("threshold must be in (0, 1], got {threshold}"),
        );
    }
    threshold
}

/// One side of a cosine threshold join, held as unit vectors: the query set of the top-k
/// engine's threshold join, which other rows are then compared with a block at a time.
///
/// The f32 product of unit vectors finds candidates down to a margin below the threshold
/// that covers its rounding (the engine's bound, `(dim + 1) · 2⁻²⁴`, plus 2⁻²³ for the
/// rounded unit vectors); each candidate's cosine is then recomputed in f64 from the
/// original vectors ([`airrep_core::vector::cosine`]) and kept only if it reaches the
/// threshold. So nothing below the threshold is returned and nothing at or above it is
/// lost; a zero vector is similar to nothing.
pub struct CosineJoin {
    unit: Queries,
    dim: usize,
    threshold: f64,
    cutoff: f32,
}

impl CosineJoin {
    /// `queries`' vectors (`dim` wide, at least one row) against a cosine `threshold`.
    pub fn new(queries: &Block, dim: usize, threshold: f64) -> Self {
        let margin = (dim as f64 + 3.0) * f32::EPSILON as f64;
        CosineJoin {
            unit: Queries::new(queries.unit_rows(dim), dim).or_raise(),
            dim,
            threshold,
            cutoff: (threshold - margin) as f32,
        }
    }

    /// Rows per block that keep one block's scores near the engine's target.
    pub fn block_rows(&self) -> usize {
        self.unit.block_rows()
    }

    /// Every `(query, row of block, cosine)` reaching the threshold, by index, in query
    /// then row order; `queries` is the block this join was made from.
    pub fn pairs(&self, queries: &Block, block: &Block) -> Vec<(usize, usize, f64)> {
        let d = self.dim;
        let candidates = thread_pool()
            .install(|| self.unit.pairs_at_least(&block.unit_rows(d), self.cutoff))
            .or_raise();
        candidates
            .into_iter()
            .filter_map(|(q, r, _)| {
                let (a, b) = (
                    &queries.rows[q * d..(q + 1) * d],
                    &block.rows[r * d..(r + 1) * d],
                );
                let cosine = cosine(a, b).filter(|&c| c >= self.threshold)?;
                Some((q, r, cosine))
            })
            .collect()
    }
}
