//! The examples of a step's subsets, each encoded once: the union the trainer, its
//! validation and the depth choice score every subset from.

use airrep_core::group::{pool_subsets, Pooling};
use candle_core::Tensor;

use crate::error::Result;

/// The examples of several subsets, each once, ordered by length so chunks pad little.
pub(super) struct Union {
    pub(super) examples: Vec<usize>,
    /// Per subset, each member's position in `examples` (repeats repeat).
    pub(super) positions: Vec<Vec<usize>>,
}

impl Union {
    /// `cost(i)` is example i's length: similar lengths share a chunk.
    pub(super) fn new(members: &[Vec<usize>], cost: impl Fn(usize) -> usize) -> Self {
        let mut examples: Vec<usize> = members.iter().flatten().copied().collect();
        examples.sort_unstable();
        examples.dedup();
        examples.sort_by_key(|&i| (cost(i), i));
        let mut position = std::collections::HashMap::with_capacity(examples.len());
        for (p, &i) in examples.iter().enumerate() {
            position.insert(i, p);
        }
        let positions = members
            .iter()
            .map(|m| m.iter().map(|i| position[i]).collect())
            .collect();
        Self {
            examples,
            positions,
        }
    }

    /// Scores `[target][union example]` from target embeddings `t` and the union's `u`:
    /// one product on the model's device, each distinct example once.
    pub(super) fn scores(&self, t: &Tensor, u: &Tensor) -> Result<Vec<Vec<f64>>> {
        let all = t.matmul(&u.t()?)?.to_vec2::<f32>()?;
        Ok(all
            .iter()
            .map(|row| row.iter().map(|&x| f64::from(x)).collect())
            .collect())
    }

    /// Group scores `[target][subset]` from target embeddings `t` and the union's `u`.
    pub(super) fn group_scores(
        &self,
        t: &Tensor,
        u: &Tensor,
        pooling: Pooling,
    ) -> Result<Vec<Vec<f64>>> {
        Ok(pool_subsets(&self.scores(t, u)?, &self.positions, pooling))
    }
}
