//! Multi-head self-attention over packed q/k/v projections, one task per sequence and
//! head, reading the heads in place.

use candle_core::Tensor;
use rayon::prelude::*;

use super::buffers::{filled, view, SharedMut};
use super::math::softmax_rows_in_place;

/// Multi-head self-attention from the packed projections `qkv` `[batch, seq, 3·hidden]`
/// (q, then k, then v, each `heads` heads wide) to the context `[batch, seq, hidden]`.
/// One task per sequence and head: `q·kᵀ/√d` over that sequence's real tokens only
/// (`attention_mask` `[batch, seq]`, right-padded), softmax and `·v` stay in a
/// `len × len` scratch in cache, reading heads in place (no transposes). Padding rows
/// of the context are 0 (they never reach a real token's output).
pub fn attention(
    qkv: &Tensor,
    attention_mask: &Tensor,
    heads: usize,
) -> candle_core::Result<Tensor> {
    const OP: &str = "airrep-attention";
    let (batch, seq, width) = qkv.dims3()?;
    let hidden = width / 3;
    let d = hidden / heads;
    if hidden * 3 != width || d * heads != hidden || attention_mask.dims2()? != (batch, seq) {
        candle_core::bail!(
            "{OP}: bad shapes {:?} {:?}",
            qkv.dims(),
            attention_mask.dims()
        )
    }
    let qkv = qkv.contiguous()?;
    let mask = attention_mask.contiguous()?;
    let (qs, ms) = (view(OP, &qkv)?, view(OP, &mask)?);
    let lengths: Vec<usize> = ms
        .chunks(seq.max(1))
        .map(|m| m.iter().filter(|&&k| k > 0.0).count())
        .collect();
    // Padding rows are zeroed here; the tasks below write every real row.
    let mut ctx = filled(batch * seq * hidden, seq * hidden, |b, dst| {
        let real = lengths[b] * hidden;
        dst[real..].iter_mut().for_each(|x| {
            x.write(0.0);
        });
    });
    let out = SharedMut(ctx.as_mut_ptr());
    let scale = 1.0 / (d as f32).sqrt();
    (0..batch * heads)
        .into_par_iter()
        .for_each_init(Vec::new, |scores: &mut Vec<f32>, task| {
            let (b, h) = (task / heads, task % heads);
            let len = lengths[b];
            if len == 0 {
                return;
            }
            scores.resize(len * len, 0.0);
            let base = &qs[b * seq * width..];
            let (q, k, v) = (
                &base[h * d..],
                &base[hidden + h * d..],
                &base[2 * hidden + h * d..],
            );
            // SAFETY: q, k and v are `len` rows of `d` floats at stride `width` inside `qs`;
            // the scores are len × len; this task alone writes rows b·seq.. of the context
            // in columns h·d..(h+1)·d.
            unsafe {
                gemm::gemm(
                    len,
                    len,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    len as isize,
                    false,
                    q.as_ptr(),
                    1,
                    width as isize,
                    k.as_ptr(),
                    width as isize,
                    1,
                    0.0,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                softmax_rows_in_place(scores, len);
                gemm::gemm(
                    len,
                    d,
                    len,
                    out.ptr().add(b * seq * hidden + h * d),
                    1,
                    hidden as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    len as isize,
                    v.as_ptr(),
                    1,
                    width as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    drop((qs, ms));
    Tensor::from_vec(ctx, (batch, seq, hidden), &candle_core::Device::Cpu)
}
