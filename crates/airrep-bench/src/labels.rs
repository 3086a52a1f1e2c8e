//! Ground truth by retraining: pretrain the tiny GPT on general text, then fine-tune a fresh
//! copy on each subset and record every target's mean token loss on its response.

use crate::gpt::{batch_loss, sequence_losses, tokenize, Batch, Gpt};
use crate::rng::Rng;
use crate::Setup;
use candle_core::Result;
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use rayon::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// An instruction pair as LM input; only the response's tokens count.
pub fn sft_sequence(pair: &crate::data::Pair) -> (Vec<u32>, usize) {
    // +1: tokenize() prepends the start token
    (tokenize(&pair.text()), pair.response_start() + 1)
}

pub fn pretrain(setup: &Setup) -> Result<Gpt> {
    let p = &setup.params;
    let mut rng = Rng::new(p.seed ^ 0x5052_4554);
    let model = Gpt::new(p.gpt, &mut rng)?;
    let corpus = tokenize(&setup.corpus.general);
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
    for step in 0..p.pretrain_steps {
        let seqs: Vec<_> = (0..p.batch)
            .map(|_| {
                let at = rng.below(corpus.len() - window);
                (corpus[at..at + window].to_vec(), 1)
            })
            .collect();
        let loss = batch_loss(&model, &Batch::new(&seqs)?)?;
        opt.backward_step(&loss)?;
        if step.is_multiple_of(200) || step + 1 == p.pretrain_steps {
            eprintln!(
                "pretrain step {step}: loss {:.3} ({:.0} s)",
                loss.to_scalar::<f32>()?,
                start.elapsed().as_secs_f64()
            );
        }
    }
    Ok(model)
}

/// losses[subset][target] after fine-tuning `base` on each subset for a fixed number of steps.
pub fn retrain_all(setup: &Setup, base: &Gpt) -> Result<Vec<Vec<f64>>> {
    let targets: Vec<_> = setup.targets.iter().map(sft_sequence).collect();
    let start = Instant::now();
    let done = AtomicUsize::new(0);
    // Subsets are independent and each has its own seed: run them in parallel (small ops
    // keep one core busy badly), results in subset order whatever the schedule.
    setup
        .subsets
        .par_iter()
        .enumerate()
        .map(|(s, members)| {
            let losses = fine_tune(setup, base, members, s as u64, &targets)?;
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(10) || n == setup.subsets.len() {
                let secs = start.elapsed().as_secs_f64();
                let eta = secs / n as f64 * (setup.subsets.len() - n) as f64;
                eprintln!(
                    "fine-tuned {n}/{} subsets ({secs:.0} s, ~{eta:.0} s left)",
                    setup.subsets.len()
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
                sft_sequence(&setup.pool[order[next - 1]])
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
