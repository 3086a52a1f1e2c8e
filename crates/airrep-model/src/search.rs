//! Exact search of streamed rows for a set of query vectors: the engine behind
//! `airrep.top_k`, `airrep.select_data` and `airrep.near_duplicates`.
//!
//! The queries are held as one matrix `Q` `[queries, dim]`. Each block of rows `B`
//! `[rows, dim]` is packed once as the weight of the encoder's CPU linear kernel and
//! multiplied by all queries at once, `S = Q·Bᵀ` `[queries, rows]`, so every query's scores
//! for the block are contiguous and the per-query collectors (heaps, threshold lists) run
//! in parallel over queries. The product is plain f32 multiply-adds in the register tiles
//! of the SIMD tier (fused on AVX2 and AVX-512, `airrep_core::simd`), never the bf16
//! tiles: a ranking must not move by more than f32 rounding,
//! `|S − exact| <= (dim + 1) · 2⁻²⁴ · Σ|q_i·b_i|` on every tier (to first order). Memory is the queries, one block and
//! its `queries × rows` scores, whatever the length of the stream.

use airrep_core::top_k::{Hit, TopK};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::{linear, Epilogue, PackedLinear, Product};

/// Scores per block that the engine aims for: 4 Mi floats (16 MB).
const BLOCK_SCORES: usize = 4 << 20;

/// Query vectors, ready to be multiplied with blocks of rows.
pub struct Queries {
    matrix: Tensor,
    count: usize,
    dim: usize,
}

impl Queries {
    /// `rows` holds `rows.len() / dim` query vectors, row-major.
    pub fn new(rows: Vec<f32>, dim: usize) -> Result<Self> {
        if dim == 0 || rows.is_empty() || !rows.len().is_multiple_of(dim) {
            return Err(Error::Input(format!(
                "queries need a positive dimension and whole rows: {} values of dimension {dim}",
                rows.len()
            )));
        }
        let count = rows.len() / dim;
        Ok(Queries {
            matrix: Tensor::from_vec(rows, (count, dim), &Device::Cpu)?,
            count,
            dim,
        })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Rows per block that keep one block's scores (and their copy) at most 16 MB: with
    /// more than 4 Mi queries a block is one row, never a product the size of the queries
    /// times a fixed row count.
    pub fn block_rows(&self) -> usize {
        (BLOCK_SCORES / self.count).clamp(1, 16_384)
    }

    /// `[query][row]` dot products of every query with every row of `block` (row-major,
    /// `dim` wide), flattened query by query; [`Error::Overflow`] if one is not finite.
    pub fn dots(&self, block: &[f32]) -> Result<Vec<f32>> {
        if block.is_empty() {
            return Ok(Vec::new());
        }
        if !block.len().is_multiple_of(self.dim) {
            return Err(Error::Input(format!(
                "a block of {} values is not whole rows of dimension {}",
                block.len(),
                self.dim
            )));
        }
        let rows = block.len() / self.dim;
        // Packed straight from the caller's rows: the one copy the product needs.
        let packed = PackedLinear::from_rows(block, rows, self.dim, vec![0.0; rows], Product::F32)?;
        let scores = linear(&self.matrix, &packed, Epilogue::None)?;
        drop(packed);
        let scores = scores.flatten_all()?.to_vec1::<f32>()?;
        // Finite vectors whose product leaves f32's range would rank as +-inf or NaN.
        match scores.iter().position(|s| !s.is_finite()) {
            Some(at) => Err(Error::Overflow { row: at % rows }),
            None => Ok(scores),
        }
    }

    /// Every `(query, row of block, score)` whose score is at least `threshold`, in query
    /// then row order: a threshold join (near duplicates, contamination by embedding).
    pub fn pairs_at_least(
        &self,
        block: &[f32],
        threshold: f32,
    ) -> Result<Vec<(usize, usize, f32)>> {
        let scores = self.dots(block)?;
        if scores.is_empty() {
            return Ok(Vec::new());
        }
        let rows = scores.len() / self.count;
        Ok(scores
            .par_chunks_exact(rows)
            .enumerate()
            .flat_map_iter(|(q, row)| {
                row.iter()
                    .enumerate()
                    .filter(move |&(_, &s)| s >= threshold)
                    .map(move |(r, &s)| (q, r, s))
            })
            .collect())
    }
}

/// `rows` (row-major, `dim` wide) scaled to unit length for cosine similarity; a zero row
/// stays zero (it is similar to nothing).
pub fn unit_rows(rows: &mut [f32], dim: usize) {
    for row in rows.chunks_exact_mut(dim) {
        let norm = row.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x = (*x as f64 / norm) as f32);
        }
    }
}

/// Exact top-k rows per query over a stream of blocks (ties to the smaller id).
pub struct TopKSearch<'q> {
    queries: &'q Queries,
    heaps: Vec<TopK>,
}

impl<'q> TopKSearch<'q> {
    pub fn new(queries: &'q Queries, k: usize) -> Self {
        let heaps = (0..queries.len()).map(|_| TopK::new(k)).collect();
        TopKSearch { queries, heaps }
    }

    /// Score one block of rows (`ids[i]` is row `i` of `block`) and keep the best.
    pub fn add_block(&mut self, ids: &[i64], block: &[f32]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let scores = self.queries.dots(block)?;
        self.heaps
            .par_iter_mut()
            .zip(scores.par_chunks_exact(ids.len()))
            .for_each(|(heap, row)| heap.offer(ids, row));
        Ok(())
    }

    /// Each query's hits, best first.
    pub fn finish(self) -> Vec<Vec<Hit>> {
        self.heaps.into_iter().map(TopK::into_sorted).collect()
    }
}

#[cfg(test)]
mod tests {
    use airrep_core::simd::{with_tier, Tier};

    use super::*;
    use crate::rng::SplitMix64;

    /// Brute force: every dot product in f64, sorted by score then id.
    fn brute_force(
        queries: &[f32],
        rows: &[f32],
        ids: &[i64],
        dim: usize,
        k: usize,
    ) -> Vec<Vec<Hit>> {
        queries
            .chunks(dim)
            .map(|q| {
                let mut hits: Vec<(f64, i64)> = rows
                    .chunks(dim)
                    .zip(ids)
                    .map(|(r, &id)| (airrep_core::vector::dot(q, r), id))
                    .collect();
                hits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                hits.into_iter()
                    .take(k)
                    .map(|(score, id)| Hit {
                        id,
                        score: score as f32,
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn blocks_of_any_size_give_the_brute_force_top_k() {
        let mut rng = SplitMix64(7);
        for (queries, rows, dim, k, block) in
            [(3, 50, 5, 4, 7), (40, 300, 33, 10, 64), (1, 9, 2, 20, 4)]
        {
            // Small integers: products and sums are exact in f32, and many scores tie.
            let mut ints = |n: usize| -> Vec<f32> {
                (0..n).map(|_| (rng.next_u64() % 5) as f32 - 2.0).collect()
            };
            let q = ints(queries * dim);
            let r = ints(rows * dim);
            let ids: Vec<i64> = (0..rows as i64).map(|i| (i * 37) % 101 - 50).collect();
            let queries = Queries::new(q.clone(), dim).unwrap();
            let want = brute_force(&q, &r, &ids, dim, k);
            for tier in Tier::available() {
                let got = with_tier(tier, || {
                    let mut search = TopKSearch::new(&queries, k);
                    for (chunk, chunk_ids) in r.chunks(block * dim).zip(ids.chunks(block)) {
                        search.add_block(chunk_ids, chunk).unwrap();
                    }
                    search.finish()
                })
                .unwrap();
                assert_eq!(got, want, "{tier}");
            }
        }
    }

    /// On every SIMD tier the CPU has, `|S − exact| <= dim · 2⁻²³ · Σ|q_i·b_i|` (the
    /// module's bound with room: 2⁻²³ is f32's epsilon).
    #[test]
    fn dots_are_f32_accurate() {
        let mut rng = SplitMix64(11);
        let dim = 384;
        let mut uniform =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_unit() * 2.0 - 1.0).collect() };
        let (q, r) = (uniform(5 * dim), uniform(70 * dim));
        let queries = Queries::new(q.clone(), dim).unwrap();
        for tier in Tier::available() {
            let dots = with_tier(tier, || queries.dots(&r)).unwrap().unwrap();
            check_dots_bound(&q, &r, &dots, dim, tier);
        }
    }

    fn check_dots_bound(q: &[f32], r: &[f32], dots: &[f32], dim: usize, tier: Tier) {
        let rows = r.len() / dim;
        for (i, qi) in q.chunks(dim).enumerate() {
            for (j, rj) in r.chunks(dim).enumerate() {
                let exact = airrep_core::vector::dot(qi, rj);
                let bound: f64 = qi
                    .iter()
                    .zip(rj)
                    .map(|(a, b)| (a * b).abs() as f64)
                    .sum::<f64>()
                    * dim as f64
                    * f32::EPSILON as f64;
                assert!(
                    (dots[i * rows + j] as f64 - exact).abs() <= bound,
                    "{tier}: query {i} row {j}"
                );
            }
        }
    }

    #[test]
    fn threshold_pairs_are_the_brute_force_pairs() {
        let mut rng = SplitMix64(3);
        let dim = 6;
        let mut rows: Vec<f32> = (0..40 * dim)
            .map(|_| (rng.next_u64() % 3) as f32 - 1.0)
            .collect();
        unit_rows(&mut rows, dim);
        let queries = Queries::new(rows[..10 * dim].to_vec(), dim).unwrap();
        let got = queries.pairs_at_least(&rows, 0.7).unwrap();
        let mut want = Vec::new();
        for q in 0..10 {
            for r in 0..40 {
                let s = airrep_core::vector::dot(
                    &rows[q * dim..(q + 1) * dim],
                    &rows[r * dim..(r + 1) * dim],
                );
                // Pairs within f32 rounding of the threshold may go either way.
                if s >= 0.7 + 1e-6 {
                    want.push((q, r));
                }
            }
        }
        let got_pairs: Vec<(usize, usize)> = got.iter().map(|&(q, r, _)| (q, r)).collect();
        assert!(want.iter().all(|p| got_pairs.contains(p)));
        assert!(got.iter().all(|&(q, r, s)| s >= 0.7
            && (s as f64
                - airrep_core::vector::dot(
                    &rows[q * dim..(q + 1) * dim],
                    &rows[r * dim..(r + 1) * dim]
                ))
            .abs()
                < 1e-6));
        // every row is its own pair (norm 1) unless it is zero
        assert!((0..10).all(|q| got_pairs.contains(&(q, q))
            || rows[q * dim..(q + 1) * dim].iter().all(|&x| x == 0.0)));
    }

    #[test]
    fn rejects_ragged_input() {
        assert!(Queries::new(vec![1.0; 5], 2).is_err());
        assert!(Queries::new(vec![], 2).is_err());
        let queries = Queries::new(vec![1.0; 4], 2).unwrap();
        assert!(queries.dots(&[1.0; 3]).is_err());
        assert!(queries.dots(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_product_beyond_f32_is_an_overflow_naming_its_row() {
        // Each vector is finite; the products of rows 1 and 3 with the second query are not.
        let queries = Queries::new(vec![1.0, 0.0, 3e38, 3e38], 2).unwrap();
        let block = [1.0, -1.0, 3e38, 3e38, 0.0, 1.0, -3e38, 3e38];
        let dots = queries.dots(&block);
        assert!(matches!(dots, Err(Error::Overflow { row: 1 })), "{dots:?}");
        let mut search = TopKSearch::new(&queries, 2);
        assert!(matches!(
            search.add_block(&[10, 11, 12, 13], &block),
            Err(Error::Overflow { row: 1 })
        ));
        // Large but representable products still rank.
        let fine = [0.5, 0.25, -1.0, 1.0];
        assert_eq!(queries.dots(&fine).unwrap().len(), 4);
    }
}
