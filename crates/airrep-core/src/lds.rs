//! The linear datamodeling score (LDS): how well predicted group scores rank held-out
//! subsets the way measured retraining losses do (DESIGN section 1).

use crate::state::{self, Reader, StateError};

/// Ranks 1..n with ties given their average rank.
fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // positions start..end (0-based) share the mean of ranks start+1..=end
        let rank = (start + end + 1) as f64 / 2.0;
        order[start..end].iter().for_each(|&i| ranks[i] = rank);
        start = end;
    }
    ranks
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    sxy / (sxx * syy).sqrt()
}

/// Spearman correlation with average ranks for ties; 0 when undefined (fewer than two points
/// or a constant input).
///
/// # Panics
/// If `x` and `y` differ in length.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len(), "spearman needs paired samples");
    if x.len() < 2 {
        return 0.0;
    }
    let rho = pearson(&average_ranks(x), &average_ranks(y));
    if rho.is_finite() {
        rho
    } else {
        0.0
    }
}

/// LDS of `scores[target][subset]` against measured `losses[subset][target]`: per target,
/// Spearman between the predicted score and `-loss` across subsets; the mean over targets.
/// Returns (LDS, per-target correlations); the LDS of no targets is 0.
///
/// # Panics
/// If a row of `losses` has fewer targets than `scores`, or a target's scores are not one
/// per row of `losses`.
pub fn lds(scores: &[Vec<f64>], losses: &[Vec<f64>]) -> (f64, Vec<f64>) {
    let per_target: Vec<f64> = scores
        .iter()
        .enumerate()
        .map(|(d, predicted)| {
            let helped: Vec<f64> = losses.iter().map(|row| -row[d]).collect();
            spearman(predicted, &helped)
        })
        .collect();
    let mean = if per_target.is_empty() {
        0.0
    } else {
        per_target.iter().sum::<f64>() / per_target.len() as f64
    };
    (mean, per_target)
}

/// The pairs of an `airrep.spearman(x, y)` aggregate: ranks need every value, so the state
/// buffers them; partial states from parallel workers concatenate.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpearmanState {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl SpearmanState {
    /// Add one pair (the SQL aggregate skips pairs with a NULL).
    pub fn push(&mut self, x: f64, y: f64) {
        self.x.push(x);
        self.y.push(y);
    }

    /// Append another partial state's pairs: order does not matter to ranks.
    pub fn merge(&mut self, other: &SpearmanState) {
        self.x.extend_from_slice(&other.x);
        self.y.extend_from_slice(&other.y);
    }

    /// `spearman` of all pairs so far: 0 when undefined, as in LDS.
    pub fn result(&self) -> f64 {
        spearman(&self.x, &self.y)
    }

    /// Little-endian: count, then the x values, then the y values.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 16 * self.x.len());
        state::put_u64(&mut out, self.x.len() as u64);
        state::put_f64s(&mut out, self.x.iter().chain(&self.y));
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateError> {
        let mut reader = Reader::new(bytes);
        let n = reader.u64()?;
        let x = reader.f64s(n)?;
        let y = reader.f64s(n)?;
        reader.finish()?;
        Ok(SpearmanState { x, y })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 5.0]),
            vec![2.5, 4.0, 2.5, 1.0]
        );
    }

    #[test]
    fn undefined_correlation_is_zero() {
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), 0.0);
        assert_eq!(spearman(&[1.0], &[2.0]), 0.0);
        assert_eq!(spearman(&[], &[]), 0.0);
    }

    #[test]
    fn monotone_maps_give_one() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[1.0, 8.0, 27.0, 64.0]) - 1.0).abs() < 1e-15);
        assert!((spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]) + 1.0).abs() < 1e-15);
    }
}
