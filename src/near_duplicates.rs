//! `airrep.near_duplicates`: clusters of rows whose vectors are near copies.
//!
//! Clusters are the connected components of cosine similarity >= threshold. The relation
//! is read in chunks of rows in id order; each chunk is the query set of a streamed search
//! ([`airrep_model::Queries::pairs_at_least`], the top-k engine's product) over the rows
//! from that chunk on, so each pair is compared once and memory is one chunk, one block
//! and the rows that have a near copy. For `keep => 'central'` a member's mean similarity
//! to the rest of its cluster is `(<v_i, Σ_j v_j> − 1) / (n − 1)` over unit vectors: exact,
//! and linear in the cluster's size.

use std::collections::HashMap;

use airrep_core::clusters::{Clusters, Keep};
use airrep_model::Queries;
use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{raise, sqlstate, OrRaise};
use crate::runtime::thread_pool;
use crate::scan::{Block, Source};

/// Query rows per chunk: 16 Mi floats (64 MB) of query vectors.
const CHUNK_FLOATS: usize = 16 << 20;
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

/// Every pair of a row of `queries` and a row of `source` (only ids above `after`, if
/// given) whose cosine similarity reaches `cutoff`, as `each(query id, row id, cosine)`:
/// a [`CosineJoin`] over `source` streamed in blocks.
pub fn cosine_pairs(
    queries: &Block,
    dim: usize,
    source: &Source,
    after: Option<i64>,
    cutoff: f32,
    progress: &str,
    mut each: impl FnMut(i64, i64, f64),
) {
    let join = CosineJoin::new(queries, dim, cutoff);
    source.scan_after(
        after,
        &mut Some(dim),
        join.block_rows(),
        false,
        progress,
        |block| {
            for (q, r, s) in join.pairs(block) {
                each(queries.ids[q], block.ids[r], s);
            }
        },
    );
}

#[allow(clippy::type_complexity)]
#[pg_extern(
    schema = "airrep",
    name = "near_duplicates_by_column",
    stable,
    strict,
    parallel_restricted
)]
fn near_duplicates(
    relation: PgRelation,
    threshold: f64,
    keep: &str,
    vector_column: &str,
) -> TableIterator<
    'static,
    (
        name!(id, i64),
        name!(cluster_id, i64),
        name!(keep, bool),
        name!(nearest_id, i64),
        name!(similarity, f64),
    ),
> {
    let cutoff = check_threshold(threshold);
    let keep: Keep = keep
        .parse()
        .unwrap_or_else(|e: airrep_core::clusters::UnknownKeep| {
            raise(sqlstate::INVALID_PARAMETER_VALUE, &e.to_string())
        });
    let source = Source::vectors(&relation, "input", vector_column);
    let mut dim: Option<usize> = None;
    let mut clusters = Clusters::new();
    let mut after = None;
    loop {
        pgrx::check_for_interrupts!();
        let chunk_rows = dim.map_or(4096, |d| (CHUNK_FLOATS / d).max(1));
        let chunk = source.next_rows(after, chunk_rows, &mut dim);
        let (Some(&last), Some(d)) = (chunk.ids.last(), dim) else {
            break;
        };
        // Rows from this chunk on: pairs before it were found with an earlier chunk.
        cosine_pairs(
            &chunk,
            d,
            &source,
            after,
            cutoff,
            "airrep.near_duplicates",
            |a, b, s| {
                if b > a {
                    clusters.add_edge(a, b, s);
                }
            },
        );
        after = Some(last);
    }
    let clusters = clusters.finish();
    // Mean similarity within each cluster, from the members' unit vectors.
    let mut mean_similarity: HashMap<i64, f64> = HashMap::new();
    if keep == Keep::Central && !clusters.is_empty() {
        let d = dim.expect("clusters need rows");
        let ids: Vec<i64> = clusters
            .iter()
            .flat_map(|c| c.members.iter().map(|m| m.id))
            .collect();
        let found = source.lookup(&ids, &mut dim);
        let rows = found.unit_rows(d);
        let vector: HashMap<i64, &[f32]> = found
            .ids
            .iter()
            .copied()
            .zip(rows.chunks_exact(d))
            .collect();
        for c in &clusters {
            let mut sum = vec![0f64; d];
            for m in &c.members {
                sum.iter_mut()
                    .zip(vector[&m.id])
                    .for_each(|(s, &x)| *s += x as f64);
            }
            let n = c.members.len() as f64;
            for m in &c.members {
                let v = vector[&m.id];
                let own: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
                let with_all: f64 = v.iter().zip(&sum).map(|(&x, s)| x as f64 * s).sum();
                mean_similarity.insert(m.id, (with_all - own) / (n - 1.0));
            }
        }
    }
    let rows: Vec<_> = clusters
        .iter()
        .flat_map(|c| {
            let keeper = c.keeper(keep, |id| mean_similarity.get(&id).copied().unwrap_or(0.0));
            c.members
                .iter()
                .map(move |m| (m.id, c.id(), m.id == keeper, m.nearest_id, m.similarity))
        })
        .collect();
    TableIterator::new(rows)
}

extension_sql!(
    r#"
CREATE FUNCTION airrep.near_duplicates(relation regclass, threshold double precision DEFAULT 0.9,
                                       keep text DEFAULT 'lowest_id', vector_column name DEFAULT 'embedding')
RETURNS TABLE(id bigint, cluster_id bigint, keep boolean, nearest_id bigint, similarity double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.near_duplicates_by_column(relation, threshold, keep, vector_column::text) $$;
COMMENT ON FUNCTION airrep.near_duplicates(regclass, double precision, text, name) IS
    'clusters of rows with cosine similarity >= threshold (connected components), one row per member, one kept per cluster';
"#,
    name = "near_duplicates_wrapper",
    requires = [near_duplicates]
);
