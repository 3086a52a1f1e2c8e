//! Forward-only CPU kernels for the inference path, where candle's generic ops were
//! the bottleneck after matmul: its exact GELU calls a scalar libm `erf` per element and
//! its softmax a scalar `exp`, and masking the scores costs a full extra pass. These
//! use branch-free polynomial approximations (relative error ~1e-7, below f32 matmul
//! noise) that the compiler vectorises, and run on the current rayon pool.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};

use std::ops::Range;

use crate::amx;
use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 16 * 1024;

/// Rows per block of [`linear`]: its output block (`ROW_BLOCK × out` floats, 768 KB
/// for MiniLM's intermediate layer) stays in a core's L2 between fill, product and
/// epilogue.
const ROW_BLOCK: usize = 128;

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

/// Runs a function through a copy compiled for AVX-512 when the CPU has it. Defines
/// `$vis fn $name(args)` with the body `$body`.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($($arg: $ty),*) {
                    generic($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports the features `avx512` was compiled for.
                    return unsafe { avx512($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

simd_fn! {
    /// GELU of every element, in place.
    fn gelu_in_place(x: &mut [f32]) {
        for x in x.iter_mut() {
            *x = 0.5 * *x * (1.0 + erf(*x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

simd_fn! {
    /// Softmax of each `len`-long row of `rows`, in place.
    fn softmax_rows_in_place(rows: &mut [f32], len: usize) {
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
    fn layer_norm_rows_in_place(rows: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
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

/// The contiguous f32 data of a CPU tensor, borrowed for as long as the guard lives.
struct F32View<'a> {
    storage: candle_core::StorageRef<'a>,
    start: usize,
    end: usize,
}

impl std::ops::Deref for F32View<'_> {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match &*self.storage {
            candle_core::Storage::Cpu(CpuStorage::F32(data)) => &data[self.start..self.end],
            _ => unreachable!("checked in view()"),
        }
    }
}

fn view<'a>(op: &str, t: &'a Tensor) -> candle_core::Result<F32View<'a>> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(CpuStorage::F32(_)) = &*storage else {
        candle_core::bail!("{op}: expects an f32 CPU tensor")
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op}: expects a contiguous tensor")
    };
    Ok(F32View {
        storage,
        start,
        end,
    })
}

/// A vector of `len` floats whose every element `init` writes, in parallel chunks of
/// `chunk`; no zeroing pass first.
fn filled(
    len: usize,
    chunk: usize,
    init: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| init(i, c));
    // SAFETY: `init` wrote every element (each caller writes whole chunks).
    unsafe { v.set_len(len) };
    v
}

/// Output features per packed weight panel: two AVX-512 registers (and two AMX tiles:
/// tasks split the columns by panels of either layout alike).
const NR: usize = 32;
const _: () = assert!(NR == amx::PANEL);
/// Rows per register tile: 12 × 2 accumulators of the 32 registers.
const MR: usize = 12;
/// Depth per pass over a panel: a `KC × NR` panel slice (32 KB) stays in L1.
const KC: usize = 256;

/// How the packed CPU products multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// f32 fused multiply-adds (AVX-512 where the CPU has it).
    F32,
    /// AMX bf16 tiles over split operands (`amx.rs`): f32 accuracy to ~1e-5, several
    /// times the f32 rate.
    AmxSplit,
    /// AMX bf16 tiles over bf16-rounded operands, f32 accumulation and output: bf16
    /// mixed precision at three times the rate of [`Product::AmxSplit`].
    AmxBf16,
}

impl Product {
    /// The products for CPU inference in `dtype`, AMX ones only if `amx` is wanted and
    /// this CPU has it; None where the fused CPU kernels do not apply (bf16 without AMX,
    /// other dtypes).
    pub fn for_cpu(dtype: candle_core::DType, amx: bool) -> Option<Self> {
        let amx = amx && amx::available();
        match dtype {
            candle_core::DType::F32 if amx => Some(Product::AmxSplit),
            candle_core::DType::F32 => Some(Product::F32),
            candle_core::DType::BF16 if amx => Some(Product::AmxBf16),
            _ => None,
        }
    }
}

/// A linear layer's weight `[out, in]`, packed once for [`linear`]'s product so it never
/// repacks it per call.
pub struct PackedLinear {
    weight: PackedWeight,
    bias: Vec<f32>,
    out_dim: usize,
    in_dim: usize,
}

enum PackedWeight {
    /// Panels of [`NR`] output features, each `in` rows of NR floats (zero past `out`).
    F32(Vec<f32>),
    /// Split bf16 tiles (needs `out` a multiple of [`amx::PANEL`]).
    Amx(amx::Panels),
}

impl PackedLinear {
    pub fn new(weight: &Tensor, bias: &Tensor, product: Product) -> candle_core::Result<Self> {
        let (n, k) = weight.dims2()?;
        let w = weight
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let bias = bias.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        if bias.len() != n {
            candle_core::bail!("packed linear: bias {} for {n} outputs", bias.len())
        }
        if n == 0 || k == 0 {
            candle_core::bail!("packed linear: empty weight [{n}, {k}]")
        }
        // `available` also asks the OS for the tile state, without which AMX traps.
        let split = match product {
            Product::AmxSplit => Some(amx::Split::Three),
            Product::AmxBf16 => Some(amx::Split::One),
            Product::F32 => None,
        };
        let weight = if let Some(split) =
            split.filter(|_| amx::available() && n.is_multiple_of(amx::PANEL))
        {
            PackedWeight::Amx(amx::Panels::pack(&w, n, k, split))
        } else {
            let panels = n.div_ceil(NR);
            let mut packed = vec![0f32; panels * k * NR];
            for (p, panel) in packed.chunks_exact_mut(k * NR).enumerate() {
                for (kk, lanes) in panel.chunks_exact_mut(NR).enumerate() {
                    for (j, lane) in lanes.iter_mut().enumerate() {
                        if let Some(row) = w.get((p * NR + j) * k..(p * NR + j + 1) * k) {
                            *lane = row[kk];
                        }
                    }
                }
            }
            PackedWeight::F32(packed)
        };
        Ok(Self {
            weight,
            bias,
            out_dim: n,
            in_dim: k,
        })
    }

    /// Rows per row block are a multiple of this (whole register or tile blocks).
    fn row_granularity(&self) -> usize {
        match self.weight {
            PackedWeight::F32(_) => MR,
            PackedWeight::Amx(_) => amx::ROWS_PER_BLOCK,
        }
    }

    /// Rows the output must have for `m` rows of input: AMX tiles write whole tiles.
    fn padded_rows(&self, m: usize) -> usize {
        match self.weight {
            PackedWeight::F32(_) => m,
            PackedWeight::Amx(_) => m.next_multiple_of(amx::TILE),
        }
    }
}

/// `c[r, j] += Σ_kk a[r, kk] · b[kk, j]` for `R` rows and the first `cols` (<= NR)
/// columns; `a` row stride `lda`, `b` a packed panel slice (`kc × NR`), `c` stride `ldc`.
/// Portable fallback of [`tile_avx512`].
///
/// # Safety
/// The pointers must cover the ranges described.
#[inline(always)]
unsafe fn tile_portable<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    let mut acc = [[0f32; NR]; R];
    for kk in 0..kc {
        let bk = std::slice::from_raw_parts(b.add(kk * NR), NR);
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = *a.add(r * lda + kk);
            for (x, &bv) in acc.iter_mut().zip(bk) {
                *x += av * bv;
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let c = std::slice::from_raw_parts_mut(c.add(r * ldc), cols);
        for (c, &x) in c.iter_mut().zip(acc) {
            *c += x;
        }
    }
}

/// [`tile_portable`] in AVX-512 registers: 2·R accumulators, one broadcast FMA pair
/// per row and depth step.
///
/// # Safety
/// As [`tile_portable`], and the CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn tile_avx512<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    use std::arch::x86_64::*;
    let mut lo = [_mm512_setzero_ps(); R];
    let mut hi = [_mm512_setzero_ps(); R];
    for kk in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(kk * NR));
        let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
        for r in 0..R {
            let av = _mm512_set1_ps(*a.add(r * lda + kk));
            lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
            hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
        }
    }
    let mask = |from: usize| -> __mmask16 {
        let n = cols.saturating_sub(from).min(16);
        ((1u32 << n) - 1) as __mmask16
    };
    let (m0, m1) = (mask(0), mask(16));
    for r in 0..R {
        let cp = c.add(r * ldc);
        let c0 = _mm512_maskz_loadu_ps(m0, cp);
        _mm512_mask_storeu_ps(cp, m0, _mm512_add_ps(c0, lo[r]));
        let c1 = _mm512_maskz_loadu_ps(m1, cp.add(16));
        _mm512_mask_storeu_ps(cp.add(16), m1, _mm512_add_ps(c1, hi[r]));
    }
}

/// `c[rows, panels] += a[rows, :] · Wᵀ` for one task's block: `rows` rows of `a`
/// (stride `k`) and `c` (stride `n`), the packed panels `panels`.
///
/// # Safety
/// `a` and `c` cover those rows; no other thread touches this block of `c`.
unsafe fn product_block(
    w: &PackedLinear,
    packed: &[f32],
    a: *const f32,
    c: *mut f32,
    rows: usize,
    panels: std::ops::Range<usize>,
    avx512: bool,
) {
    let (n, k) = (w.out_dim, w.in_dim);
    macro_rules! tile {
        ($r:literal, $($args:expr),*) => {{
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                tile_avx512::<$r>($($args),*)
            } else {
                tile_portable::<$r>($($args),*)
            }
            #[cfg(not(target_arch = "x86_64"))]
            tile_portable::<$r>($($args),*)
        }};
    }
    for kc0 in (0..k).step_by(KC) {
        let kc = KC.min(k - kc0);
        for p in panels.clone() {
            let b = packed.as_ptr().add((p * k + kc0) * NR);
            let cols = NR.min(n - p * NR);
            let mut r = 0;
            while r < rows {
                let t = MR.min(rows - r);
                let (ap, cp) = (a.add(r * k + kc0), c.add(r * n + p * NR));
                match t {
                    12 => tile!(12, ap, k, b, kc, cp, n, cols),
                    11 => tile!(11, ap, k, b, kc, cp, n, cols),
                    10 => tile!(10, ap, k, b, kc, cp, n, cols),
                    9 => tile!(9, ap, k, b, kc, cp, n, cols),
                    8 => tile!(8, ap, k, b, kc, cp, n, cols),
                    7 => tile!(7, ap, k, b, kc, cp, n, cols),
                    6 => tile!(6, ap, k, b, kc, cp, n, cols),
                    5 => tile!(5, ap, k, b, kc, cp, n, cols),
                    4 => tile!(4, ap, k, b, kc, cp, n, cols),
                    3 => tile!(3, ap, k, b, kc, cp, n, cols),
                    2 => tile!(2, ap, k, b, kc, cp, n, cols),
                    _ => tile!(1, ap, k, b, kc, cp, n, cols),
                }
                r += t;
            }
        }
    }
}

/// What [`linear`] applies to `x·Wᵀ + b`.
#[derive(Clone, Copy)]
pub enum Epilogue<'a> {
    None,
    Gelu,
    /// `layer_norm(x·Wᵀ + b + residual)`.
    AddLayerNorm {
        residual: &'a Tensor,
        weight: &'a Tensor,
        bias: &'a Tensor,
        eps: f32,
    },
}

/// `x·Wᵀ + b` over the last dim of `x`, then `epilogue`. The output is made in blocks
/// of rows (and, when there are too few rows to keep the threads busy, of output
/// panels): each block is filled with the bias (plus residual), the product
/// accumulates onto it and the epilogue finishes it while it is still in cache. No
/// zeroing pass, no separate add, no repacking of the weight.
pub fn linear(x: &Tensor, w: &PackedLinear, epilogue: Epilogue) -> candle_core::Result<Tensor> {
    chain(x, &[(w, epilogue)])
}

/// BERT's feed-forward block, `layer_norm(gelu(x·W1ᵀ + b1)·W2ᵀ + b2 + x)`. With rows
/// enough to occupy the threads, each block of rows goes through both layers at once and
/// the 4x wider intermediate lives only in a per-thread scratch (at batch 128 it would
/// be 89 MB of fresh pages per layer, faulted in and zeroed by the kernel).
pub fn feed_forward(
    x: &Tensor,
    up: &PackedLinear,
    down: &PackedLinear,
    norm_weight: &Tensor,
    norm_bias: &Tensor,
    eps: f32,
) -> candle_core::Result<Tensor> {
    let norm = Epilogue::AddLayerNorm {
        residual: x,
        weight: norm_weight,
        bias: norm_bias,
        eps,
    };
    chain(x, &[(up, Epilogue::Gelu), (down, norm)])
}

/// One layer of a [`chain`], its epilogue's tensors checked and borrowed as slices.
struct Step<'a> {
    w: &'a PackedLinear,
    gelu: bool,
    residual: Option<F32View<'a>>,
    norm: Option<(F32View<'a>, F32View<'a>, f32)>,
}

impl<'a> Step<'a> {
    const OP: &'static str = "airrep-linear";

    /// `residual` (if any) must be `[m, out]`.
    fn new(
        w: &'a PackedLinear,
        epilogue: Epilogue<'a>,
        m: usize,
        keep: &'a mut Option<Tensor>,
    ) -> candle_core::Result<Self> {
        let n = w.out_dim;
        let (mut residual, mut norm) = (None, None);
        if let Epilogue::AddLayerNorm {
            residual: r,
            weight,
            bias,
            eps,
        } = epilogue
        {
            if r.elem_count() != m * n || r.dims().last() != Some(&n) {
                candle_core::bail!("{}: residual {:?} is not [{m}, {n}]", Self::OP, r.dims())
            }
            residual = Some(view(Self::OP, keep.insert(r.contiguous()?))?);
            let (lw, lb) = (view(Self::OP, weight)?, view(Self::OP, bias)?);
            if lw.len() != n || lb.len() != n {
                candle_core::bail!("{}: layer norm weight is not [{n}]", Self::OP)
            }
            norm = Some((lw, lb, eps));
        }
        Ok(Self {
            w,
            gelu: matches!(epilogue, Epilogue::Gelu),
            residual,
            norm,
        })
    }

    /// Rows `row0..end` of `dst` (stride `out`), columns `cols`: the bias plus the
    /// residual for rows below `m`, zero for the padding rows at and past `m`.
    ///
    /// # Safety
    /// `dst` covers those rows and columns and no other thread writes them.
    unsafe fn fill(&self, dst: *mut f32, row0: usize, end: usize, m: usize, cols: Range<usize>) {
        let n = self.w.out_dim;
        for r in row0..end {
            let row = std::slice::from_raw_parts_mut(
                dst.add((r - row0) * n + cols.start) as *mut std::mem::MaybeUninit<f32>,
                cols.len(),
            );
            let real = r < m;
            fill_row(
                row,
                if real {
                    &self.w.bias[cols.clone()]
                } else {
                    &[]
                },
                self.residual
                    .as_ref()
                    .filter(|_| real)
                    .map(|rs| &rs[r * n + cols.start..r * n + cols.end]),
            );
        }
    }

    /// `dst[rows, panels] += x[rows] · Wᵀ` for `rows` rows of `x` (stride `in`), which
    /// start at row `row0` of `shared` when the rows were packed for the tiles up front.
    ///
    /// # Safety
    /// As [`Step::fill`], and `dst` has [`PackedLinear::padded_rows`] of `rows` rows.
    unsafe fn multiply(
        &self,
        x: &[f32],
        rows: usize,
        panels: Range<usize>,
        dst: *mut f32,
        shared: Option<(&amx::Rows, usize)>,
    ) {
        let (w, n) = (self.w, self.w.out_dim);
        match (&w.weight, shared) {
            (PackedWeight::F32(packed), _) => {
                product_block(w, packed, x.as_ptr(), dst, rows, panels, avx512())
            }
            (PackedWeight::Amx(tiles), Some((a, row0))) => {
                amx::product(tiles, a, row0..row0 + rows, panels, dst, n)
            }
            (PackedWeight::Amx(tiles), None) => {
                amx::pack_and_multiply(tiles, x, w.in_dim, rows, panels, dst, n)
            }
        }
    }

    /// The epilogue, on whole rows of the output.
    fn finish(&self, rows: &mut [f32]) {
        if self.gelu {
            gelu_in_place(rows);
        }
        if let Some((lw, lb, eps)) = &self.norm {
            layer_norm_rows_in_place(rows, lw, lb, *eps);
        }
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512f");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The largest packed-rows buffer a thread keeps between [`chain`] calls.
const SHARED_ROWS_KEPT_BYTES: usize = 4 << 20;

thread_local! {
    /// The rows a [`chain`] packed for all its tasks, kept for the next call's allocation.
    static SHARED_ROWS: std::cell::Cell<amx::Rows> = const { std::cell::Cell::new(amx::Rows::new()) };
    /// The intermediate rows of a [`chain`] task, one buffer per hidden layer, reused
    /// across calls.
    static CHAIN_SCRATCH: std::cell::RefCell<Vec<Vec<f32>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `x` through `layers` in turn, each `x·Wᵀ + b` then its epilogue. Tasks take blocks
/// of rows through every layer, so only the last layer's output is materialised.
/// A single layer also splits its output columns between tasks when there are too few
/// row blocks for the threads; a longer chain then runs its layers one at a time.
fn chain(x: &Tensor, layers: &[(&PackedLinear, Epilogue)]) -> candle_core::Result<Tensor> {
    const OP: &str = Step::OP;
    let x = x.contiguous()?;
    let k = layers[0].0.in_dim;
    let n = layers[layers.len() - 1].0.out_dim;
    let mut dims = x.dims().to_vec();
    if dims.last() != Some(&k) || layers.windows(2).any(|p| p[0].0.out_dim != p[1].0.in_dim) {
        let shapes: Vec<_> = layers.iter().map(|(w, _)| (w.out_dim, w.in_dim)).collect();
        candle_core::bail!(
            "{OP}: input {:?} does not match weights {shapes:?}",
            x.dims()
        )
    }
    *dims.last_mut().unwrap() = n;
    let m = x.elem_count() / k;

    // Task grid: row blocks of about ROW_BLOCK rows (whole register or tile blocks), and
    // column groups of panels only when the row blocks alone cannot occupy the threads.
    let threads = rayon::current_num_threads().max(1);
    let granularity = layers
        .iter()
        .map(|(w, _)| w.row_granularity())
        .max()
        .unwrap_or(1);
    let block = m
        .div_ceil(m.div_ceil(ROW_BLOCK).max(1))
        .next_multiple_of(granularity);
    let row_blocks = m.div_ceil(block.max(1)).max(1);
    let too_few_blocks = threads > 1 && row_blocks < 2 * threads;
    if layers.len() > 1 && too_few_blocks {
        let mut h = x;
        for layer in layers {
            h = chain(&h, std::slice::from_ref(layer))?;
        }
        return Ok(h);
    }
    let panels = n.div_ceil(NR);
    let col_groups = if too_few_blocks {
        (2 * threads).div_ceil(row_blocks).min(panels).max(1)
    } else {
        1
    };
    let group = panels.div_ceil(col_groups);
    let col_groups = panels.div_ceil(group.max(1)).max(1);

    let xs = view(OP, &x)?;
    let mut kept: Vec<Option<Tensor>> = layers.iter().map(|_| None).collect();
    let steps = layers
        .iter()
        .zip(kept.iter_mut())
        .map(|(&(w, epilogue), keep)| Step::new(w, epilogue, m, keep))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let (last, hidden) = steps.split_last().expect("at least one layer");
    let padded_rows = last.w.padded_rows(m);
    // With several column groups, every task of a row block would pack the same rows for
    // the tiles: pack them once. (Only a single layer has column groups: x is its input.)
    let shared_rows = match &last.w.weight {
        PackedWeight::Amx(tiles) if col_groups > 1 => {
            assert!(
                hidden.is_empty(),
                "{OP}: column groups in a chain of layers"
            );
            let mut a = SHARED_ROWS.replace(amx::Rows::new());
            a.pack_in_parallel(tiles, &xs, k, m);
            Some(a)
        }
        _ => None,
    };
    let mut out: Vec<f32> = Vec::with_capacity(padded_rows * n);
    let dst = SharedMut(out.as_mut_ptr());
    (0..row_blocks * col_groups)
        .into_par_iter()
        .for_each(|task| {
            let (rb, cg) = (task / col_groups, task % col_groups);
            let row0 = rb * block;
            let rows = block.min(m - row0);
            let panels = cg * group..((cg + 1) * group).min(panels);
            let cols = panels.start * NR..(panels.end * NR).min(n);
            let x_rows = &xs[row0 * k..(row0 + rows) * k];
            CHAIN_SCRATCH.with_borrow_mut(|scratch| {
                // Layer i writes whole rows into scratch[i] (padded for tiles) from the
                // rows of scratch[i - 1], or of x.
                scratch.resize_with(hidden.len(), Vec::new);
                for (i, step) in hidden.iter().enumerate() {
                    let (done, rest) = scratch.split_at_mut(i);
                    let input = done.last().map_or(x_rows, |h| &h[..rows * step.w.in_dim]);
                    let width = step.w.out_dim;
                    let h = &mut rest[0];
                    h.resize(step.w.padded_rows(rows) * width, 0.0);
                    // SAFETY: h has the padded rows; this task owns it.
                    unsafe {
                        step.fill(h.as_mut_ptr(), row0, row0 + rows, m, 0..width);
                        step.multiply(input, rows, 0..width.div_ceil(NR), h.as_mut_ptr(), None);
                    }
                    step.finish(&mut h[..rows * width]);
                }
                let input = scratch
                    .last()
                    .map_or(x_rows, |h| &h[..rows * last.w.in_dim]);
                // The last block also owns the padding rows (zero: products of zero rows).
                let end = if row0 + rows == m {
                    padded_rows
                } else {
                    row0 + rows
                };
                // SAFETY: this task alone writes columns `cols` of rows row0..end, which the
                // output's capacity covers.
                unsafe {
                    let c = dst.ptr().add(row0 * n);
                    last.fill(c, row0, end, m, cols);
                    let shared = shared_rows.as_ref().map(|a| (a, row0));
                    last.multiply(input, rows, panels, c, shared);
                }
            });
            if col_groups == 1 {
                // SAFETY: the task owns these whole rows, initialised now.
                last.finish(unsafe {
                    std::slice::from_raw_parts_mut(dst.ptr().add(row0 * n), rows * n)
                });
            }
        });
    // SAFETY: the tasks wrote every element of the first m rows.
    unsafe { out.set_len(m * n) };
    if col_groups > 1 && (last.gelu || last.norm.is_some()) {
        out.par_chunks_mut((CHUNK / n).max(1) * n)
            .for_each(|rows| last.finish(rows));
    }
    drop((xs, steps));
    // Kept for the next call only while small: column groups mean few rows.
    if let Some(a) = shared_rows.filter(|a| a.bytes() <= SHARED_ROWS_KEPT_BYTES) {
        SHARED_ROWS.set(a);
    }
    Tensor::from_vec(out, dims, &candle_core::Device::Cpu)
}

simd_fn! {
    /// `dst` := bias (+ residual), element-wise; zero without a bias (`bias` empty).
    fn fill_row(dst: &mut [std::mem::MaybeUninit<f32>], bias: &[f32], residual: Option<&[f32]>) {
        match residual {
            Some(res) => {
                for ((d, &r), &b) in dst.iter_mut().zip(res).zip(bias) {
                    d.write(r + b);
                }
            }
            None if bias.is_empty() => {
                for d in dst.iter_mut() {
                    d.write(0.0);
                }
            }
            None => {
                for (d, &b) in dst.iter_mut().zip(bias) {
                    d.write(b);
                }
            }
        }
    }
}

/// A pointer shared by tasks that write disjoint parts of its buffer.
#[derive(Clone, Copy)]
struct SharedMut(*mut f32);

impl SharedMut {
    /// The pointer, through a method so that closures capture the whole (Sync) wrapper
    /// rather than its raw-pointer field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: each task writes elements no other task touches (see `attention`).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

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

    /// The feed-forward block against candle's ops, with f32 and AMX products, for row
    /// counts that run fused (many row blocks, a ragged last one) and layer by layer
    /// (too few rows for the threads), on a 2-thread pool.
    #[test]
    fn feed_forward_matches_candle() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (hidden, inner) = (64, 256);
        let randn = |dims: &[usize], std: f32| Tensor::randn(0f32, std, dims, &dev);
        let (w1, b1) = (randn(&[inner, hidden], 0.1)?, randn(&[inner], 0.1)?);
        let (w2, b2) = (randn(&[hidden, inner], 0.1)?, randn(&[hidden], 0.1)?);
        let (gamma, beta) = ((randn(&[hidden], 0.1)? + 1.0)?, randn(&[hidden], 0.1)?);
        let linear = |x: &Tensor, w: &Tensor, b: &Tensor| x.matmul(&w.t()?)?.broadcast_add(b);
        let norm = |t: &Tensor| t.sqr()?.sum_all()?.to_scalar::<f32>().map(f32::sqrt);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for product in [Product::F32, Product::for_cpu(DType::F32, true).unwrap()] {
            let (up, down) = (
                PackedLinear::new(&w1, &b1, product)?,
                PackedLinear::new(&w2, &b2, product)?,
            );
            for rows in [1100, 50] {
                let x = randn(&[rows, hidden], 1.0)?;
                let sum = (linear(&linear(&x, &w1, &b1)?.gelu_erf()?, &w2, &b2)? + &x)?;
                let want = candle_nn::ops::layer_norm(&sum, &gamma, &beta, 1e-12)?;
                let got = pool.install(|| feed_forward(&x, &up, &down, &gamma, &beta, 1e-12))?;
                let err = norm(&(&got - &want)?)? / norm(&want)?;
                // f32 FMA: rounding only; AMX split: ~1e-5 per product.
                let bound = if product == Product::F32 { 1e-6 } else { 1e-4 };
                assert!(
                    err < bound,
                    "{product:?}, {rows} rows: relative error {err:e}"
                );
            }
        }
        Ok(())
    }
}
