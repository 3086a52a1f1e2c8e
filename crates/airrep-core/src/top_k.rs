//! Exact top-k per query over a stream of scored rows.
//!
//! A row's rank for a query orders by score, higher first, and breaks ties by the smaller
//! id, so the result is one well-defined list whatever order the rows arrive in and however
//! the stream is cut into blocks. [`TopK`] holds the `k` best rows seen so far in a heap
//! whose root is the worst of them; a row that does not beat the root is rejected with one
//! comparison, so a long stream costs about one comparison per row once the heap is full.
//! Memory is `k` hits per query, never the stream.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A row and its score for one query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub id: i64,
    pub score: f32,
}

impl Hit {
    /// The rank order: a higher score first, then the smaller id. Scores are finite;
    /// `-0.0` and `0.0` tie, as they are equal numbers.
    pub fn rank_cmp(&self, other: &Hit) -> Ordering {
        other
            .score
            .partial_cmp(&self.score)
            .unwrap_or(Ordering::Equal)
            .then(self.id.cmp(&other.id))
    }
}

/// Heap order: the worst-ranked hit is the greatest, so it sits at the root.
#[derive(Debug, Clone, Copy)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Worst {}

impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.rank_cmp(&other.0)
    }
}

/// The `k` best-ranked rows of one query among those offered so far.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            // Grows as rows arrive: a huge k costs nothing until the stream fills it.
            heap: BinaryHeap::with_capacity(k.min(1024)),
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Hits held so far (at most `k`).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Offer a block of rows: `ids[i]` scored `scores[i]`. Non-finite scores are skipped
    /// (they have no rank).
    pub fn offer(&mut self, ids: &[i64], scores: &[f32]) {
        debug_assert_eq!(ids.len(), scores.len());
        if self.k == 0 {
            return;
        }
        for (&id, &score) in ids.iter().zip(scores) {
            if !score.is_finite() {
                continue;
            }
            let hit = Hit { id, score };
            if self.heap.len() < self.k {
                self.heap.push(Worst(hit));
                continue;
            }
            let mut root = self.heap.peek_mut().expect("k > 0 hits held");
            // The common case on a long stream: not better than the k-th best.
            if hit.rank_cmp(&root.0) == Ordering::Less {
                *root = Worst(hit);
            }
        }
    }

    /// Merge another query's partial result for the same query (e.g. from a parallel
    /// worker that saw other rows).
    pub fn merge(&mut self, other: TopK) {
        for Worst(hit) in other.heap {
            self.offer(&[hit.id], &[hit.score]);
        }
    }

    /// The hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self.heap.into_iter().map(|w| w.0).collect();
        hits.sort_by(Hit::rank_cmp);
        hits
    }
}
