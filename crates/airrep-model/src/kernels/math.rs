//! Branch-free approximations of `e^x` and `erf` (relative error ~1e-7, below f32
//! matmul noise) and the row-wise epilogues built on them, written so the compiler
//! vectorises them (16 lanes under AVX-512, 8 under AVX2: `airrep_core::simd`).

use airrep_core::simd_fn;

/// `e^x` for `x` in [-87, 88]: Cody-Waite range reduction to `2^n · e^r`, |r| <= ln2/2,
/// and a degree-6 Taylor polynomial for `e^r`. Integer work stays in float registers
/// (no saturating casts) so that loops over it vectorise.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
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
pub(super) fn erf(x: f32) -> f32 {
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

simd_fn! {
    /// GELU of every element, in place.
    pub(super) fn gelu_in_place(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    /// Softmax of each `len`-long row of `rows`, in place.
    pub(super) fn softmax_rows_in_place(rows: &mut [f32], len: usize) {
        for row in rows.chunks_exact_mut(len) {
            // Lane-wise max and sum (16 partials) vectorise; one accumulator would be
            // a serial chain that keeps the exp loop scalar.
            let mut lanes = [f32::NEG_INFINITY; 16];
            for chunk in row.chunks(16) {
                for (m, &s) in lanes.iter_mut().zip(chunk) {
                    *m = if s > *m { s } else { *m };
                }
            }
            let max = lanes.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            row.iter_mut().for_each(|p| *p = exp(*p - max));
            let mut lanes = [0f32; 16];
            for chunk in row.chunks(16) {
                for (a, &p) in lanes.iter_mut().zip(chunk) {
                    *a += p;
                }
            }
            let inv = 1.0 / lanes.iter().sum::<f32>();
            row.iter_mut().for_each(|p| *p *= inv);
        }
    }
}

simd_fn! {
    /// Layer norm of each `weight.len()`-long row of `rows`, in place (two-pass
    /// mean and variance, as accurate as candle-nn's).
    pub(super) fn layer_norm_rows_in_place(rows: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let n = weight.len();
        for row in rows.chunks_exact_mut(n) {
            // Eight partial sums vectorise; a single accumulator would be a serial chain.
            let mut acc = [0f32; 16];
            for chunk in row.chunks(16) {
                for (a, &x) in acc.iter_mut().zip(chunk) {
                    *a += x;
                }
            }
            let mean = acc.iter().sum::<f32>() / n as f32;
            let mut acc = [0f32; 16];
            for chunk in row.chunks(16) {
                for (a, &x) in acc.iter_mut().zip(chunk) {
                    *a += (x - mean) * (x - mean);
                }
            }
            let rstd = 1.0 / (acc.iter().sum::<f32>() / n as f32 + eps).sqrt();
            for ((x, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
                *x = (*x - mean) * rstd * w + b;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn row_kernels_match_candle() {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 3.0, (6, 5), &dev).unwrap();
        let values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let max_diff = |got: &[f32], want: &Tensor| {
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            got.iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let mut gelu = values.clone();
        gelu_in_place(&mut gelu);
        assert!(max_diff(&gelu, &x.gelu_erf().unwrap()) < 1e-6);
        let mut softmax = values.clone();
        softmax_rows_in_place(&mut softmax, 5);
        let want = candle_nn::ops::softmax_last_dim(&x).unwrap();
        assert!(max_diff(&softmax, &want) < 1e-6);
        let (w, b) = (vec![1.5f32; 5], vec![0.25f32; 5]);
        let mut norm = values.clone();
        layer_norm_rows_in_place(&mut norm, &w, &b, 1e-12);
        let want = candle_nn::ops::layer_norm(
            &x,
            &Tensor::new(w.as_slice(), &dev).unwrap(),
            &Tensor::new(b.as_slice(), &dev).unwrap(),
            1e-12,
        )
        .unwrap();
        assert!(max_diff(&norm, &want) < 1e-5);
    }
}
