//! The two baselines scored outside Postgres, both with sum pooling: TF-IDF cosine and
//! TracIn-style loss-gradient dot products on the tiny GPT (at the fine-tuning start weights)
//! under a seeded CountSketch projection.

use crate::gpt::{batch_loss, Batch, Gpt};
use crate::rng::Rng;
use crate::Setup;
use candle_core::Result;
use std::collections::HashMap;
use std::time::Instant;

pub struct Measured {
    pub method: String,
    pub lds: f64,
    /// Spearman per evaluation target (their mean is `lds`), for bootstrap intervals.
    pub per_target: Vec<f64>,
    pub encode_ms: f64,
    pub bytes: f64,
    pub train_s: f64,
    /// The vectors scored: pool examples and all targets (for the selection experiment).
    pub pool: Vec<Vec<f32>>,
    pub targets: Vec<Vec<f32>>,
}

/// LDS (and per-target Spearman) of sum-pooled dot products of `embed`ded pool examples and
/// targets, over the evaluation subsets and targets. Vectors are dense (TF-IDF's length is
/// the vocabulary).
fn sum_pooled_lds(setup: &Setup, pool: &[Vec<f32>], targets: &[Vec<f32>]) -> (f64, Vec<f64>) {
    let (eval_subsets, eval_targets) = setup.eval();
    let sums: Vec<Vec<f32>> = eval_subsets
        .iter()
        .map(|&s| {
            let mut sum = vec![0f32; pool[0].len()];
            for &m in &setup.subsets[s] {
                sum.iter_mut().zip(&pool[m]).for_each(|(a, b)| *a += b);
            }
            sum
        })
        .collect();
    let scores: Vec<Vec<f64>> = eval_targets
        .iter()
        .map(|&t| {
            sums.iter()
                .map(|s| s.iter().zip(&targets[t]).map(|(a, b)| (a * b) as f64).sum())
                .collect()
        })
        .collect();
    let losses: Vec<Vec<f64>> = eval_subsets
        .iter()
        .map(|&s| eval_targets.iter().map(|&t| setup.losses[s][t]).collect())
        .collect();
    airrep_core::lds::lds(&scores, &losses)
}

/// The labels' noise ceiling: LDS of the retested evaluation subsets' second label set
/// (another data order) as the scores of the first, per evaluation target. A method that
/// knew the noise-free effect of each subset could score about the square root of this
/// (test-retest reliability), so it is a floor on the best possible, not a hard cap.
pub fn retest(setup: &Setup) -> Option<(f64, Vec<f64>)> {
    let (eval_subsets, eval_targets) = setup.eval();
    let retested = &eval_subsets[..setup.retest_losses.len()];
    if retested.len() < 2 {
        return None;
    }
    let scores: Vec<Vec<f64>> = eval_targets
        .iter()
        .map(|&t| setup.retest_losses.iter().map(|row| -row[t]).collect())
        .collect();
    let losses: Vec<Vec<f64>> = retested
        .iter()
        .map(|&s| eval_targets.iter().map(|&t| setup.losses[s][t]).collect())
        .collect();
    Some(airrep_core::lds::lds(&scores, &losses))
}

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

pub fn tfidf(setup: &Setup) -> Measured {
    let start = Instant::now();
    let mut vocab: HashMap<String, usize> = HashMap::new();
    let mut df: Vec<f64> = Vec::new();
    let docs: Vec<HashMap<usize, f64>> = setup
        .pool
        .iter()
        .map(|p| {
            let mut tf = HashMap::new();
            for w in words(&p.text()) {
                let n = vocab.len();
                let id = *vocab.entry(w).or_insert(n);
                if id == df.len() {
                    df.push(0.0);
                }
                *tf.entry(id).or_insert(0.0) += 1.0;
            }
            tf.keys().for_each(|&id| df[id] += 1.0);
            tf
        })
        .collect();
    let n = docs.len() as f64;
    // smoothed idf (scikit-learn's default); words unseen in the pool are dropped
    let idf: Vec<f64> = df
        .iter()
        .map(|d| ((1.0 + n) / (1.0 + d)).ln() + 1.0)
        .collect();
    let dense = |tf: &HashMap<usize, f64>| {
        let mut v = vec![0f32; idf.len()];
        tf.iter().for_each(|(&id, c)| v[id] = (c * idf[id]) as f32);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
        v
    };
    let pool: Vec<Vec<f32>> = docs.iter().map(dense).collect();
    let encode_ms = start.elapsed().as_secs_f64() * 1e3 / pool.len() as f64;
    let targets: Vec<Vec<f32>> = setup
        .targets
        .iter()
        .map(|p| {
            let mut tf = HashMap::new();
            words(&p.text())
                .filter_map(|w| vocab.get(&w))
                .for_each(|&id| *tf.entry(id).or_insert(0.0) += 1.0);
            dense(&tf)
        })
        .collect();
    // stored sparse: a u32 index and an f32 value per non-zero
    let nnz = docs.iter().map(|d| d.len()).sum::<usize>() as f64 / n;
    let (lds, per_target) = sum_pooled_lds(setup, &pool, &targets);
    Measured {
        method: "TF-IDF cosine (sum)".into(),
        lds,
        per_target,
        encode_ms,
        bytes: nnz * 8.0,
        train_s: 0.0,
        pool,
        targets,
    }
}

/// A CountSketch: parameter i adds sign_i * g_i to coordinate bucket_i. A JL-style random
/// projection that costs O(parameters) per example instead of a dense dim x P matrix.
struct Sketch {
    bucket: Vec<u32>,
    sign: Vec<f32>,
    dim: usize,
}

impl Sketch {
    fn new(params: usize, dim: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed ^ 0x534B_4554);
        let (mut bucket, mut sign) = (Vec::with_capacity(params), Vec::with_capacity(params));
        for _ in 0..params {
            let r = rng.next_u64();
            bucket.push((r % dim as u64) as u32);
            sign.push(if r >> 63 == 1 { 1.0 } else { -1.0 });
        }
        Sketch { bucket, sign, dim }
    }

    fn project(&self, grad: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.dim];
        for ((g, &b), s) in grad.iter().zip(&self.bucket).zip(&self.sign) {
            out[b as usize] += g * s;
        }
        out
    }
}

fn loss_gradient(setup: &Setup, model: &Gpt, pair: &crate::data::Pair) -> Result<Vec<f32>> {
    let sequence = setup.vocab.sft_sequence(pair);
    let grads = batch_loss(model, &Batch::new(&[sequence])?)?.backward()?;
    let mut flat = Vec::new();
    for var in model.vars() {
        match grads.get(var.as_tensor()) {
            Some(g) => flat.extend(g.flatten_all()?.to_vec1::<f32>()?),
            None => flat.extend(std::iter::repeat_n(0.0, var.elem_count())),
        }
    }
    Ok(flat)
}

/// TracIn-style gradient dot products, one row per projection dimension in `dims` (the
/// gradients are computed once and sketched to each).
pub fn gradient(setup: &Setup, model: &Gpt, dims: &[usize]) -> Result<Vec<Measured>> {
    let params: usize = model.vars().iter().map(|v| v.elem_count()).sum();
    let sketches: Vec<Sketch> = dims
        .iter()
        .map(|&dim| Sketch::new(params, dim, setup.params.seed))
        .collect();
    let project = |pairs: &[crate::data::Pair]| -> Result<Vec<Vec<Vec<f32>>>> {
        let mut out = vec![Vec::with_capacity(pairs.len()); sketches.len()];
        for p in pairs {
            let grad = loss_gradient(setup, model, p)?;
            for (o, sketch) in out.iter_mut().zip(&sketches) {
                o.push(sketch.project(&grad));
            }
        }
        Ok(out)
    };
    let start = Instant::now();
    let pool = project(&setup.pool)?;
    let encode_ms = start.elapsed().as_secs_f64() * 1e3 / setup.pool.len() as f64;
    let targets = project(&setup.targets)?;
    eprintln!("gradient baseline: {params} LM parameters projected to {dims:?} dimensions");
    Ok(dims
        .iter()
        .zip(pool.into_iter().zip(targets))
        .map(|(&dim, (pool, targets))| {
            let (lds, per_target) = sum_pooled_lds(setup, &pool, &targets);
            Measured {
                method: format!("TracIn gradient, CountSketch {dim} (sum)"),
                lds,
                per_target,
                encode_ms,
                bytes: (dim * 4) as f64,
                train_s: 0.0,
                pool,
                targets,
            }
        })
        .collect())
}
