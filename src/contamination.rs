//! `airrep.contamination`: training rows that leak benchmark items.
//!
//! * `exact`: the same words after NFKC, case folding and collapsing whitespace and
//!   punctuation (`airrep_core::text`); score 1.
//! * `ngram`: at least one shared n-gram of those words (GPT-3's rule, n = 13 by default),
//!   through a hashed index of the benchmark built once per call; score = the share of
//!   the item's distinct n-grams found in the row.
//! * `embedding`: cosine similarity of the vectors >= threshold; score = the cosine. The
//!   benchmark is the query set of the top-k engine's threshold join over streamed rows.
//!
//! The benchmark is held in memory (it is the small side). Rows are made as Postgres asks
//! for them, never collected: the training relation is read a block at a time through a
//! cursor kept open between calls, and matched one training row at a time for the text
//! methods and one block at a time for the embedding (blocks small enough that a block
//! has about [`PAIRS_PER_BLOCK`] benchmark × row pairs). So memory is the benchmark, one
//! block and one row's or block's matches, whatever the size of the result (Postgres
//! keeps the rows it has taken in a tuplestore that spills to disk), and a cancel is seen
//! before each training row and each block, and within a long row's n-gram matching. The
//! text methods' rows come first, then the embedding's, each in the training relation's
//! scan order and, for one training row, in benchmark id then method order. A repeated id
//! in either relation is an error found before any of this, by a query of its own.

use std::collections::HashMap;

use airrep_core::select::Cancelled;
use airrep_core::text::{exact_key, NgramIndex};
use pgrx::prelude::*;

use crate::embedding_jobs::note_model_mismatch;
use crate::error::{raise, sqlstate};
use crate::relation::Relation;
use crate::scan::{Block, Blocks, Columns, Source};
use crate::search::{check_threshold, CosineJoin};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Exact,
    Ngram,
    Embedding,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Exact => "exact",
            Method::Ngram => "ngram",
            Method::Embedding => "embedding",
        }
    }
}

fn parse_methods(methods: &[Option<String>]) -> Vec<Method> {
    let mut out: Vec<Method> = methods
        .iter()
        .map(|m| match m.as_deref() {
            Some("exact") => Method::Exact,
            Some("ngram") => Method::Ngram,
            Some("embedding") => Method::Embedding,
            other => raise(
                sqlstate::INVALID_PARAMETER_VALUE,
                &format!(
                    "unknown contamination method {}: expected 'exact', 'ngram' or 'embedding'",
                    other.map_or("NULL".to_string(), |m| format!("\"{m}\""))
                ),
            ),
        })
        .collect();
    out.sort();
    out.dedup();
    if out.is_empty() {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            "methods must name at least one of 'exact', 'ngram', 'embedding'",
        );
    }
    out
}

/// A result row until Postgres takes it: train id, benchmark id, method, score.
type Match = (i64, i64, Method, f64);

/// Benchmark × training row pairs per block of the embedding method: all of them may
/// match, and a block's matches are held until Postgres has taken them.
const PAIRS_PER_BLOCK: usize = 1 << 20;

/// Training rows per block for the text methods (each row is matched on its own).
const TEXT_BLOCK_ROWS: usize = 4096;

const PROGRESS: &str = "airrep.contamination";

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(
    schema = "airrep",
    name = "contamination_by_column",
    stable,
    strict,
    parallel_restricted
)]
fn contamination(
    train: Relation,
    benchmark: Relation,
    methods: Vec<Option<String>>,
    ngram: i32,
    threshold: f64,
    text_column: &str,
    vector_column: &str,
) -> TableIterator<
    'static,
    (
        name!(train_id, i64),
        name!(benchmark_id, i64),
        name!(method, String),
        name!(score, f64),
    ),
> {
    let methods = parse_methods(&methods);
    if ngram < 1 {
        raise(
            sqlstate::INVALID_PARAMETER_VALUE,
            &format!("ngram must be at least 1, got {ngram}"),
        );
    }
    let threshold = check_threshold(threshold);
    let (train, benchmark) = (train.open(), benchmark.open());
    // Each kind of match reads only its own column; all are checked before any work.
    let text = Columns {
        text: Some(text_column),
        ..Columns::default()
    };
    let by_text = methods.iter().any(|&m| m != Method::Embedding).then(|| {
        (
            Source::new(&train, "train", text),
            Source::new(&benchmark, "benchmark", text),
        )
    });
    let by_vector = methods.contains(&Method::Embedding).then(|| {
        note_model_mismatch(
            "airrep.contamination",
            ("training", &train),
            ("benchmark", &benchmark),
            vector_column,
        );
        (
            Source::vectors(&train, "train", vector_column),
            Source::vectors(&benchmark, "benchmark", vector_column),
        )
    });
    // Results name rows by id: a repeated id would report one pair several times.
    for (train, benchmark) in by_text.iter().chain(&by_vector) {
        train.require_unique_relation_ids();
        benchmark.require_unique_relation_ids();
    }
    let exact = methods.contains(&Method::Exact);
    let ngram = methods.contains(&Method::Ngram).then_some(ngram as usize);
    // Each pass starts (reads its benchmark) when the rows before it are taken.
    let text_rows = by_text.into_iter().flat_map(move |(train, benchmark)| {
        let mut pass = TextMatches::new(train, &benchmark, exact, ngram);
        std::iter::from_fn(move || pass.next_row()).flatten()
    });
    let vector_rows = by_vector.into_iter().flat_map(move |(train, benchmark)| {
        let mut pass = EmbeddingMatches::new(train, &benchmark, threshold);
        std::iter::from_fn(move || pass.as_mut()?.next_block()).flatten()
    });
    TableIterator::new(
        text_rows
            .chain(vector_rows)
            .map(|(train, item, method, score)| (train, item, method.name().to_string(), score)),
    )
}

/// Exact and n-gram matches, a training row at a time: the benchmark's keys and grams are
/// indexed once, the training relation is read a block at a time.
struct TextMatches {
    train: Blocks,
    block: Block,
    /// The next row of `block` to match.
    at: usize,
    /// Benchmark ids, in the n-gram index's item order.
    items: Vec<i64>,
    /// Exact key -> benchmark ids, when `exact` is asked for.
    by_key: Option<HashMap<String, Vec<i64>>>,
    index: Option<NgramIndex>,
}

impl TextMatches {
    fn new(train: Source, benchmark: &Source, exact: bool, ngram: Option<usize>) -> Self {
        let items = benchmark.read_all(&mut None);
        let by_key = exact.then(|| {
            let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
            for (&id, text) in items.ids.iter().zip(&items.texts) {
                let key = exact_key(text);
                if !key.is_empty() {
                    by_key.entry(key).or_default().push(id);
                }
            }
            by_key
        });
        let index = ngram.map(|n| {
            let mut index = NgramIndex::new(n);
            for text in &items.texts {
                index.add(text);
            }
            index
        });
        TextMatches {
            train: train.blocks(None, TEXT_BLOCK_ROWS, PROGRESS),
            block: Block::default(),
            at: 0,
            items: items.ids,
            by_key,
            index,
        }
    }

    /// The next training row's matches (often none), in benchmark id then method order;
    /// None after the last row.
    fn next_row(&mut self) -> Option<Vec<Match>> {
        if self.at == self.block.len() {
            if !self.train.next(&mut self.block) {
                return None;
            }
            self.at = 0;
        }
        pgrx::check_for_interrupts!();
        let (id, text) = (self.block.ids[self.at], &self.block.texts[self.at]);
        self.at += 1;
        let mut rows = Vec::new();
        if let Some(by_key) = &self.by_key {
            let items = by_key.get(&exact_key(text)).into_iter().flatten();
            rows.extend(items.map(|&item| (id, item, Method::Exact, 1.0)));
        }
        if let Some(index) = &self.index {
            // A long row is checked for cancel within it too; a cancel raises from here.
            let interrupted = || {
                pgrx::check_for_interrupts!();
                false
            };
            let items = index
                .matches(text, &interrupted)
                .unwrap_or_else(|Cancelled| unreachable!("the callback raises a cancel"))
                .into_iter();
            rows.extend(items.map(|(item, share)| (id, self.items[item], Method::Ngram, share)));
        }
        rows.sort_by_key(|&(_, item, method, _)| (item, method));
        Some(rows)
    }
}

/// Pairs of cosine >= threshold, a block of training rows at a time: the benchmark's unit
/// vectors are the [`CosineJoin`]'s query set.
struct EmbeddingMatches {
    train: Blocks,
    block: Block,
    join: CosineJoin,
    /// The benchmark's rows, in the join's query order (their vectors decide each pair).
    items: Block,
}

impl EmbeddingMatches {
    /// None when the benchmark has no vectors: nothing can match.
    fn new(train: Source, benchmark: &Source, threshold: f64) -> Option<Self> {
        let mut dim = None;
        let items = benchmark.read_all(&mut dim);
        let d = dim?;
        let join = CosineJoin::new(&items, d, threshold);
        let block_rows = join.block_rows().min(PAIRS_PER_BLOCK / items.len()).max(1);
        Some(EmbeddingMatches {
            train: train.blocks(Some(d), block_rows, PROGRESS),
            block: Block::default(),
            join,
            items,
        })
    }

    /// The next block's matches, in scan order and, for one row, in benchmark id order;
    /// None after the last block.
    fn next_block(&mut self) -> Option<Vec<Match>> {
        if !self.train.next(&mut self.block) {
            return None;
        }
        // The join lists pairs benchmark item first; a stable sort by row keeps item order.
        let mut pairs = self.join.pairs(&self.items, &self.block);
        pairs.sort_by_key(|&(_, row, _)| row);
        let (ids, items) = (&self.block.ids, &self.items.ids);
        Some(
            pairs
                .into_iter()
                .map(|(item, row, s)| (ids[row], items[item], Method::Embedding, s))
                .collect(),
        )
    }
}

extension_sql!(
    r#"
CREATE FUNCTION airrep.contamination(
    train regclass, benchmark regclass, methods text[] DEFAULT '{exact,ngram,embedding}',
    ngram integer DEFAULT 13, threshold double precision DEFAULT 0.9,
    text_column name DEFAULT 'text', vector_column name DEFAULT 'embedding')
RETURNS TABLE(train_id bigint, benchmark_id bigint, method text, score double precision)
LANGUAGE sql STABLE STRICT PARALLEL RESTRICTED
AS $$ SELECT * FROM airrep.contamination_by_column(train, benchmark, methods, ngram, threshold,
                                                    text_column::text, vector_column::text) $$;
COMMENT ON FUNCTION airrep.contamination(regclass, regclass, text[], integer, double precision, name, name) IS
    'training rows that leak benchmark items: exact (normalised text), ngram (shared word n-gram), embedding (cosine >= threshold)';
"#,
    name = "contamination_wrapper",
    requires = [contamination]
);
