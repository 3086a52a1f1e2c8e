//! Labels from retraining and the pairwise ranking loss that trains the encoder
//! (DESIGN section 1).

/// Labels `y[d][S] = clip((mean_S L[S,d] - L[S,d]) / std_S L[S,d], -10, 10)` from measured
/// losses `subset_losses[S][d]`; std with ddof 0, a zero std replaced by 1. Higher y means the
/// subset helped target d more. Returns `[target][subset]`.
///
/// The deviations are divided by their largest magnitude before they are squared, so the
/// labels do not depend on the losses' scale: squares of deviations near 1e-170 or 1e160
/// would underflow to 0 or overflow to infinity, and every label would collapse to 0.
///
/// # Panics
/// If the rows of `subset_losses` differ in length.
pub fn labels(subset_losses: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let subsets = subset_losses.len();
    let targets = subset_losses.first().map_or(0, Vec::len);
    assert!(
        subset_losses.iter().all(|row| row.len() == targets),
        "subset_losses rows differ in length"
    );
    (0..targets)
        .map(|d| {
            let column: Vec<f64> = subset_losses.iter().map(|row| row[d]).collect();
            let mean = column.iter().sum::<f64>() / subsets as f64;
            let largest = column.iter().map(|l| (mean - l).abs()).fold(0.0, f64::max);
            if largest == 0.0 {
                // Every subset did equally well: a zero std, replaced by 1, over zero deviations.
                return vec![0.0; subsets];
            }
            let scaled: Vec<f64> = column.iter().map(|l| (mean - l) / largest).collect();
            let variance = scaled.iter().map(|x| x * x).sum::<f64>() / subsets as f64;
            let std = variance.sqrt();
            scaled
                .iter()
                .map(|x| (x / std).clamp(-10.0, 10.0))
                .collect()
        })
        .collect()
}

/// The pairwise ranking loss: over ordered pairs (j, k) of one target's subsets, a pair is kept
/// iff `y_j - y_k > t_min`, weighted `min(y_j - y_k, t_max)`, and costs
/// `w · softplus(-(s_j - s_k))`; the loss is the plain mean over every kept pair of the batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingLoss {
    pub t_min: f64,
    pub t_max: f64,
}

impl Default for RankingLoss {
    /// The paper's thresholds.
    fn default() -> Self {
        RankingLoss {
            t_min: 0.1,
            t_max: 5.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct LossAndGrad {
    pub loss: f64,
    /// d loss / d score, `[target][subset]`
    pub grad: Vec<Vec<f64>>,
    pub kept_pairs: usize,
}

/// log(1 + e^x) without overflow.
fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl RankingLoss {
    /// Loss and gradient for `scores[target][subset]` against `labels[target][subset]`.
    /// With no kept pair the loss is 0 and the gradient zero.
    ///
    /// # Panics
    /// If `scores` and `labels` differ in shape.
    pub fn loss_and_grad(&self, scores: &[Vec<f64>], labels: &[Vec<f64>]) -> LossAndGrad {
        let same_shape = scores.len() == labels.len()
            && scores.iter().zip(labels).all(|(s, y)| s.len() == y.len());
        assert!(same_shape, "scores and labels differ in shape");
        let mut total = 0.0;
        let mut kept_pairs = 0;
        let mut grad: Vec<Vec<f64>> = scores.iter().map(|row| vec![0.0; row.len()]).collect();
        for ((s, y), g) in scores.iter().zip(labels).zip(grad.iter_mut()) {
            for j in 0..s.len() {
                for k in 0..s.len() {
                    let gap = y[j] - y[k];
                    if gap <= self.t_min {
                        continue;
                    }
                    let weight = gap.min(self.t_max);
                    let margin = s[j] - s[k];
                    total += weight * softplus(-margin);
                    // d/d margin of w·softplus(-margin) = -w·sigmoid(-margin)
                    let slope = -weight * sigmoid(-margin);
                    g[j] += slope;
                    g[k] -= slope;
                    kept_pairs += 1;
                }
            }
        }
        if kept_pairs == 0 {
            return LossAndGrad {
                loss: 0.0,
                grad,
                kept_pairs,
            };
        }
        let n = kept_pairs as f64;
        grad.iter_mut().flatten().for_each(|g| *g /= n);
        LossAndGrad {
            loss: total / n,
            grad,
            kept_pairs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let scores = vec![vec![0.3, -1.2, 2.0, 0.7], vec![5.0, 4.0, -3.0, 0.0]];
        let labels = vec![vec![1.0, -0.5, 0.05, 2.0], vec![-1.0, 0.0, 1.0, 7.0]];
        let loss = RankingLoss::default();
        let exact = loss.loss_and_grad(&scores, &labels);
        let h = 1e-6;
        for r in 0..scores.len() {
            for k in 0..scores[r].len() {
                let mut up = scores.clone();
                up[r][k] += h;
                let mut down = scores.clone();
                down[r][k] -= h;
                let numeric = (loss.loss_and_grad(&up, &labels).loss
                    - loss.loss_and_grad(&down, &labels).loss)
                    / (2.0 * h);
                assert!(
                    (numeric - exact.grad[r][k]).abs() < 1e-7,
                    "[{r}][{k}] {numeric} vs {}",
                    exact.grad[r][k]
                );
            }
        }
    }

    #[test]
    fn no_kept_pairs_gives_zero() {
        let out = RankingLoss::default().loss_and_grad(&[vec![1.0, 2.0]], &[vec![0.0, 0.05]]);
        assert_eq!((out.loss, out.kept_pairs), (0.0, 0));
        assert_eq!(out.grad, vec![vec![0.0, 0.0]]);
    }

    #[test]
    fn softplus_is_stable() {
        assert_eq!(softplus(1000.0), 1000.0);
        assert!(softplus(-1000.0) >= 0.0 && softplus(-1000.0) < 1e-300);
        assert!((softplus(0.0) - 2f64.ln()).abs() < 1e-15);
    }
}
