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
//! The benchmark is held in memory (it is the small side); the training relation streams.

use std::collections::HashMap;

use airrep_core::text::{exact_key, NgramIndex};
use pgrx::prelude::*;
use pgrx::PgRelation;

use crate::error::{raise, sqlstate};
use crate::near_duplicates::{check_threshold, cosine_pairs};
use crate::scan::{Columns, Source};

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

type Row = (i64, i64, String, f64);

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
#[pg_extern(
    schema = "airrep",
    name = "contamination_by_column",
    stable,
    strict,
    parallel_restricted
)]
fn contamination(
    train: PgRelation,
    benchmark: PgRelation,
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
    let cutoff = check_threshold(threshold);
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
        (
            Source::vectors(&train, "train", vector_column),
            Source::vectors(&benchmark, "benchmark", vector_column),
        )
    });
    let mut rows: Vec<Row> = Vec::new();
    if let Some((train, benchmark)) = &by_text {
        rows.extend(text_matches(train, benchmark, &methods, ngram as usize));
    }
    if let Some((train, benchmark)) = &by_vector {
        rows.extend(embedding_matches(train, benchmark, cutoff));
    }
    rows.sort_by(|a, b| (a.0, a.1, &a.2).cmp(&(b.0, b.1, &b.2)));
    TableIterator::new(rows)
}

/// Exact and n-gram matches: the benchmark's keys and grams indexed once, train streamed.
fn text_matches(train: &Source, benchmark: &Source, methods: &[Method], n: usize) -> Vec<Row> {
    let mut dim = None;
    let items = benchmark.read_all(&mut dim);
    let mut by_key: HashMap<String, Vec<i64>> = HashMap::new();
    let mut index = NgramIndex::new(n);
    for (&id, text) in items.ids.iter().zip(&items.texts) {
        let key = exact_key(text);
        if !key.is_empty() {
            by_key.entry(key).or_default().push(id);
        }
        index.add(text);
    }
    let (exact, ngram) = (
        methods.contains(&Method::Exact),
        methods.contains(&Method::Ngram),
    );
    let mut rows = Vec::new();
    let mut dim = None;
    train.scan(&mut dim, 4096, false, "airrep.contamination", |block| {
        for (&id, text) in block.ids.iter().zip(&block.texts) {
            if exact {
                for &b in by_key.get(&exact_key(text)).into_iter().flatten() {
                    rows.push((id, b, Method::Exact.name().to_string(), 1.0));
                }
            }
            if ngram {
                for (item, share) in index.matches(text) {
                    rows.push((id, items.ids[item], Method::Ngram.name().to_string(), share));
                }
            }
        }
    });
    rows
}

/// Pairs of cosine >= threshold: the benchmark's unit vectors against streamed train rows.
fn embedding_matches(train: &Source, benchmark: &Source, cutoff: f32) -> Vec<Row> {
    let mut dim = None;
    let items = benchmark.read_all(&mut dim);
    let Some(d) = dim else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    cosine_pairs(
        &items,
        d,
        train,
        None,
        cutoff,
        "airrep.contamination",
        |item, row, s| rows.push((row, item, Method::Embedding.name().to_string(), s)),
    );
    rows
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
