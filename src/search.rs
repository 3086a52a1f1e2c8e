//! The engines the search and cleaning functions share: targets read once and held, the
//! pool streamed through the exact top-k search ([`airrep_model::TopKSearch`]), and the
//! cosine threshold join over unit vectors. `top_k` and `select_data` rank with the first,
//! `near_duplicates` and `contamination` join with the second.

use airrep_core::top_k::Hit;
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

/// Cosines this close below the threshold count as reaching it: f32 dot products of unit
/// vectors are within about 1e-6 of the exact cosine, so identical rows meet threshold 1.
const COSINE_SLACK: f64 = 2e-6;

pub fn check_threshold(threshold: f64) -> f32 {
    if !(threshold > 0.0 && threshold <= 1.0) {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("threshold must be in (0, 1], got {threshold}"),
        );
    }
    (threshold - COSINE_SLACK) as f32
}

/// One side of a cosine threshold join, held as unit vectors: the query set of the top-k
/// engine's threshold join, which other rows are then compared with a block at a time.
pub struct CosineJoin {
    unit: Queries,
    dim: usize,
    cutoff: f32,
}

impl CosineJoin {
    /// `queries`' vectors (`dim` wide, at least one row) against a cosine `cutoff`.
    pub fn new(queries: &Block, dim: usize, cutoff: f32) -> Self {
        CosineJoin {
            unit: Queries::new(queries.unit_rows(dim), dim).or_raise(),
            dim,
            cutoff,
        }
    }

    /// Rows per block that keep one block's scores near the engine's target.
    pub fn block_rows(&self) -> usize {
        self.unit.block_rows()
    }

    /// Every `(query, row of block, cosine)` reaching the cutoff, by index, in query then
    /// row order.
    pub fn pairs(&self, block: &Block) -> impl Iterator<Item = (usize, usize, f64)> {
        let pairs = thread_pool()
            .install(|| {
                self.unit
                    .pairs_at_least(&block.unit_rows(self.dim), self.cutoff)
            })
            .or_raise();
        pairs
            .into_iter()
            .map(|(q, r, s)| (q, r, (s as f64).min(1.0)))
    }
}
