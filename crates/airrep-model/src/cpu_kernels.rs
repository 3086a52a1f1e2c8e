//! Forward-only CPU kernels for the inference path, where candle's generic ops were
//! the bottleneck after matmul: its exact GELU calls a scalar libm `erf` per element and
//! its softmax a scalar `exp`, and masking the scores costs a full extra pass. These
//! use branch-free polynomial approximations (relative error ~1e-7, below f32 matmul
//! noise) that the compiler vectorises, and run on the current rayon pool.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 16 * 1024;

/// `e^x` for `x` in [-87, 88]: Cody-Waite range reduction to `2^n · e^r`, |r| <= ln2/2,
/// and a degree-6 Taylor polynomial for `e^r`. Integer work stays in float registers
/// (no saturating casts) so that loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // t = n + 1.5·2^23 rounds to the nearest integer n, which then sits in t's low bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let two_to_n =
        f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    p * two_to_n
}

/// Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7), as in PyTorch's vectorised erf.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_8,
        -1.453_152_1,
        1.061_405_4,
    ];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    (1.0 - poly * exp(-ax * ax)).copysign(x)
}

fn contiguous_f32<'a>(
    op: &str,
    storage: &'a CpuStorage,
    layout: &Layout,
) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expects an f32 tensor")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: expects a contiguous tensor"),
    }
}

/// Calls `$f` through a copy compiled for AVX-512 when the CPU has it: the default
/// x86-64 target only vectorises 4 floats wide.
macro_rules! simd_dispatch {
    ($f:ident($($arg:expr),*)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn avx512(dst: &mut [f32], src: &[f32]) {
                $f(dst, src)
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports the features `avx512` was compiled for.
                unsafe { avx512($($arg),*) }
            } else {
                $f($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        $f($($arg),*)
    }};
}

#[inline(always)]
fn gelu_slice(dst: &mut [f32], src: &[f32]) {
    for (y, &x) in dst.iter_mut().zip(src) {
        *y = 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// Softmax of one row of scores; the first `probs.len()` keys are the real tokens.
#[inline(always)]
fn softmax_slice(probs: &mut [f32], scores: &[f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    for (p, &s) in probs.iter_mut().zip(scores) {
        *p = exp(s - max);
    }
    let inv = 1.0 / probs.iter().sum::<f32>();
    probs.iter_mut().for_each(|p| *p *= inv);
}

/// Exact-form GELU, `x · Φ(x) = x/2 · (1 + erf(x/√2))`.
struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "airrep-gelu"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let src = contiguous_f32(self.name(), storage, layout)?;
        let mut dst = vec![0f32; src.len()];
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(dst, src)| simd_dispatch!(gelu_slice(dst, src)));
        Ok((CpuStorage::F32(dst), layout.shape().clone()))
    }
}

pub fn gelu(x: &Tensor) -> candle_core::Result<Tensor> {
    x.apply_op1_no_bwd(&Gelu)
}

/// Softmax over the last dim of attention scores `[batch, heads, seq, seq]`, keeping
/// only the keys where the right-padded `attention_mask` `[batch, seq]` is 1; padded
/// keys get 0.
struct MaskedSoftmax;

impl CustomOp2 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "airrep-masked-softmax"
    }

    fn cpu_fwd(
        &self,
        scores: &CpuStorage,
        scores_layout: &Layout,
        mask: &CpuStorage,
        mask_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (batch, _heads, _queries, seq) = scores_layout.shape().dims4()?;
        if mask_layout.shape().dims2()? != (batch, seq) {
            candle_core::bail!(
                "{}: mask shape {:?} does not match scores",
                self.name(),
                mask_layout.shape()
            )
        }
        let scores_data = contiguous_f32(self.name(), scores, scores_layout)?;
        let mask = contiguous_f32(self.name(), mask, mask_layout)?;
        // Padding is on the right, so a sequence's real keys are a prefix of each row.
        let lengths: Vec<usize> = mask
            .chunks(seq)
            .map(|m| m.iter().filter(|&&k| k > 0.0).count())
            .collect();
        let rows_per_sequence = scores_data.len() / batch / seq;
        let mut dst = vec![0f32; scores_data.len()];
        dst.par_chunks_mut(seq)
            .zip(scores_data.par_chunks(seq))
            .enumerate()
            .for_each(|(row, (probs, scores))| {
                let len = lengths[row / rows_per_sequence];
                simd_dispatch!(softmax_slice(&mut probs[..len], &scores[..len]));
            });
        Ok((CpuStorage::F32(dst), scores_layout.shape().clone()))
    }
}

pub fn masked_softmax(scores: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    scores.apply_op2_no_bwd(attention_mask, &MaskedSoftmax)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -8000..=8000 {
            let x = i as f32 / 100.0;
            let rel = (exp(x) as f64 - (x as f64).exp()).abs() / (x as f64).exp();
            assert!(rel < 3e-7, "exp({x}): relative error {rel:e}");
        }
        for i in -600..=600 {
            let x = i as f32 / 100.0;
            let want = candle_core::cpu::erf::erf_f64(x as f64);
            assert!((erf(x) as f64 - want).abs() < 3e-7, "erf({x})");
        }
    }

    #[test]
    fn kernels_match_candle() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (2, 3, 5, 5), &dev).unwrap();
        let max_diff = |a: &Tensor, b: &Tensor| {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
        };
        assert!(max_diff(&gelu(&x).unwrap(), &x.gelu_erf().unwrap()) < 1e-6);

        let mask = Tensor::new(&[[1f32, 1., 1., 0., 0.], [1., 1., 1., 1., 1.]], &dev).unwrap();
        let bias = ((1.0 - &mask).unwrap() * -1e9)
            .unwrap()
            .reshape((2, 1, 1, 5))
            .unwrap();
        let want = candle_nn::ops::softmax_last_dim(&x.broadcast_add(&bias).unwrap()).unwrap();
        assert!(max_diff(&masked_softmax(&x, &mask).unwrap(), &want) < 1e-6);
    }
}
