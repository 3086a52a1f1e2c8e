//! The one seeded generator of the project: tiny and fixed, so a seed names the same batches,
//! the same fresh projector and the same retraining plan (`airrep.sample_subsets`) in every
//! build, without a `rand` dependency.

/// SplitMix64 (Steele, Lea and Flood, 2014).
#[derive(Clone)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is below 2^-40 for any n we meet).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// `k` of `0..n` without replacement, in increasing order; all of them when `k >= n`.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..n).collect();
        if k < n {
            // Partial Fisher-Yates.
            for i in 0..k {
                let j = i + self.below(n - i);
                pool.swap(i, j);
            }
            pool.truncate(k);
            pool.sort_unstable();
        }
        pool
    }

    /// Uniform in [0, 1) with 24 bits, the precision of an f32 mantissa.
    pub fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}
