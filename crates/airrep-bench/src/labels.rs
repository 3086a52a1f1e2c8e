//! Ground truth by retraining: pretrain the GPT on general text until its loss flattens, then
//! fine-tune a fresh copy on each subset and record every target's mean token loss on its
//! response. A share of the evaluation subsets is fine-tuned a second time with another data
//! order: how well one label set ranks the other is the most any method can score.

use crate::gpt::{batch_loss, sequence_losses, Batch, Gpt};
use crate::rng::Rng;
use crate::Setup;
use candle_core::Result;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Pretraining steps averaged per loss reading, and the relative drop between two readings
/// under which the loss has flattened.
const FLAT_WINDOW: usize = 100;
const FLAT_DROP: f64 = 0.01;

/// The pretrained LM and a line saying how pretraining ended.
pub fn pretrain(setup: &Setup) -> Result<(Gpt, String)> {
    let p = &setup.params;
    let mut rng = Rng::new(p.seed ^ 0x5052_4554);
    let model = Gpt::new(p.gpt, &mut rng)?;
    let corpus = setup.vocab.encode(&setup.corpus.general);
    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: p.pretrain_lr,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let window = p.pretrain_window + 1;
    let start = Instant::now();
    let (mut window_loss, mut last_mean) = (0.0, f64::INFINITY);
    let mut ended = format!("{} steps (the cap)", p.pretrain_steps);
    for step in 0..p.pretrain_steps {
        let seqs: Vec<_> = (0..p.batch)
            .map(|_| {
                let at = rng.below(corpus.len() - window);
                (corpus[at..at + window].to_vec(), 1)
            })
            .collect();
        let loss = batch_loss(&model, &Batch::new(&seqs)?)?;
        opt.backward_step(&loss)?;
        window_loss += loss.to_scalar::<f32>()? as f64;
        if (step + 1).is_multiple_of(FLAT_WINDOW) {
            let mean = window_loss / FLAT_WINDOW as f64;
            window_loss = 0.0;
            eprintln!(
                "pretrain step {}: mean loss {mean:.3} ({:.0} s)",
                step + 1,
                start.elapsed().as_secs_f64()
            );
            if mean > last_mean * (1.0 - FLAT_DROP) {
                ended = format!(
                    "{} steps: the mean loss over {FLAT_WINDOW} steps fell less than {}% ({last_mean:.3} -> {mean:.3})",
                    step + 1,
                    100.0 * FLAT_DROP
                );
                break;
            }
            last_mean = mean;
        }
    }
    eprintln!("pretraining ended after {ended}");
    Ok((model, ended))
}

/// losses[subset][target] after fine-tuning `base` on each subset for a fixed number of steps.
pub fn retrain_all(setup: &Setup, base: &Gpt) -> Result<Vec<Vec<f64>>> {
    let runs: Vec<(usize, u64)> = (0..setup.subsets.len()).map(|s| (s, s as u64)).collect();
    retrain(setup, base, &runs)
}

/// losses of the first `retest_subsets` evaluation subsets, fine-tuned again with data
/// orders no other run uses.
pub fn retest(setup: &Setup, base: &Gpt) -> Result<Vec<Vec<f64>>> {
    let first = setup.params.train_subsets;
    let runs: Vec<(usize, u64)> = (first..first + setup.params.retest_subsets)
        .map(|s| (s, (setup.subsets.len() + s) as u64))
        .collect();
    retrain(setup, base, &runs)
}

/// One fine-tuning per (subset, data-order run), in parallel; losses in the order given.
fn retrain(setup: &Setup, base: &Gpt, runs: &[(usize, u64)]) -> Result<Vec<Vec<f64>>> {
    let targets: Vec<_> = setup
        .targets
        .iter()
        .map(|t| setup.vocab.sft_sequence(t))
        .collect();
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    // Runs are independent and each has its own seed: run them in parallel (small ops
    // keep one core busy badly), results in order whatever the schedule.
    runs.par_iter()
        .map(|&(s, run)| {
            let losses = fine_tune(setup, base, &setup.subsets[s], run, &targets)?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10) || n == runs.len() {
                let secs = start.elapsed().as_secs_f64();
                let eta = secs / n as f64 * (runs.len() - n) as f64;
                eprintln!(
                    "fine-tuned {n}/{} subsets ({secs:.0} s, ~{eta:.0} s left)",
                    runs.len()
                );
            }
            Ok(losses)
        })
        .collect()
}

/// Fine-tune a fresh copy of `base` on the pool rows `members` (the labels' recipe:
/// `finetune_steps` batches, epochs in a fresh order drawn from `run`'s seed) and return
/// the loss on each of `targets`.
pub fn fine_tune(
    setup: &Setup,
    base: &Gpt,
    members: &[usize],
    run: u64,
    targets: &[(Vec<u32>, usize)],
) -> Result<Vec<f64>> {
    let p = &setup.params;
    let model = base.fork()?;
    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: p.finetune_lr,
            weight_decay: 0.0,
            ..Default::default()
        },
    )?;
    let mut rng = Rng::new(p.seed ^ (run + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let mut order: Vec<usize> = members.to_vec();
    let mut next = order.len();
    for _ in 0..p.finetune_steps() {
        // epochs over the members in a fresh random order each time
        let seqs: Vec<_> = (0..p.batch)
            .map(|_| {
                if next == order.len() {
                    rng.shuffle(&mut order);
                    next = 0;
                }
                next += 1;
                setup.vocab.sft_sequence(&setup.pool[order[next - 1]])
            })
            .collect();
        opt.backward_step(&batch_loss(&model, &Batch::new(&seqs)?)?)?;
    }
    evaluate(&model, targets)
}

fn evaluate(model: &Gpt, seqs: &[(Vec<u32>, usize)]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(seqs.len());
    for chunk in seqs.chunks(64) {
        let l = sequence_losses(model, &Batch::new(chunk)?)?.to_vec1::<f32>()?;
        out.extend(l.into_iter().map(f64::from));
    }
    Ok(out)
}
