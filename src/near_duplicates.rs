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
use pgrx::prelude::*;

use crate::error::{raise, sqlstate};
use crate::relation::Relation;
use crate::scan::{Block, Source};
use crate::search::{check_threshold, CosineJoin};

/// Every pair of a row of `queries` and a row of `source` (only ids above `after`, if
/// given) whose cosine similarity reaches `threshold`, as `each(query id, row id, cosine)`:
/// a [`CosineJoin`] over `source` streamed in blocks.
pub fn cosine_pairs(
    queries: &Block,
    dim: usize,
    source: &Source,
    after: Option<i64>,
    threshold: f64,
    progress: &str,
    mut each: impl FnMut(i64, i64, f64),
) {
    let join = CosineJoin::new(queries, dim, threshold);
    source.scan_after(
        after,
        &mut Some(dim),
        join.block_rows(),
        false,
        progress,
        |block| {
            for (q, r, s) in join.pairs(queries, block) {
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
    relation: Relation,
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
    let threshold = check_threshold(threshold);
    let relation = relation.open();
    let keep: Keep = keep
        .parse()
        .unwrap_or_else(|e: airrep_core::clusters::UnknownKeep| {
            raise(sqlstate::INVALID_PARAMETER_VALUE, &e.to_string())
        });
    let source = Source::vectors(&relation, "input", vector_column);
    // Results name rows by id; the chunks are read by id, so a repeat would go unseen.
    source.require_unique_relation_ids();
    let mut dim: Option<usize> = None;
    let mut clusters = Clusters::new();
    let mut after = None;
    loop {
        pgrx::check_for_interrupts!();
        // A chunk is one block's worth of vectors (`airrep.max_block_mb`).
        let chunk_rows = Source::rows_per_block(dim.unwrap_or(airrep_core::vector::MAX_DIM));
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
            threshold,
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
    // Mean similarity within each cluster, from the members' unit vectors, read for a
    // block's worth of members at a time (a cluster larger than a block is read whole).
    let mut mean_similarity: HashMap<i64, f64> = HashMap::new();
    if keep == Keep::Central && !clusters.is_empty() {
        let d = dim.expect("clusters need rows");
        let per_block = Source::rows_per_block(d);
        let mut at = 0;
        while at < clusters.len() {
            let mut end = at + 1;
            let mut members = clusters[at].members.len();
            while end < clusters.len() && members + clusters[end].members.len() <= per_block {
                members += clusters[end].members.len();
                end += 1;
            }
            let batch = &clusters[at..end];
            let mut ids: Vec<i64> = batch
                .iter()
                .flat_map(|c| c.members.iter().map(|m| m.id))
                .collect();
            ids.sort_unstable();
            let found = source.lookup(&ids, &mut dim);
            let rows = found.unit_rows(d);
            let vector: HashMap<i64, &[f32]> = found
                .ids
                .iter()
                .copied()
                .zip(rows.chunks_exact(d))
                .collect();
            for c in batch {
                mean_similarity.extend(central_means(c, &vector, d));
            }
            at = end;
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

/// Each member's mean similarity to the rest of its cluster, from unit vectors:
/// `(<v_i, Σ_j v_j> − <v_i, v_i>) / (n − 1)`.
fn central_means<'a>(
    cluster: &'a airrep_core::clusters::Cluster,
    vector: &'a HashMap<i64, &[f32]>,
    d: usize,
) -> impl Iterator<Item = (i64, f64)> + 'a {
    let mut sum = vec![0f64; d];
    for m in &cluster.members {
        sum.iter_mut()
            .zip(vector[&m.id])
            .for_each(|(s, &x)| *s += x as f64);
    }
    let n = cluster.members.len() as f64;
    cluster.members.iter().map(move |m| {
        let v = vector[&m.id];
        let own: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
        let with_all: f64 = v.iter().zip(&sum).map(|(&x, s)| x as f64 * s).sum();
        (m.id, (with_all - own) / (n - 1.0))
    })
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
