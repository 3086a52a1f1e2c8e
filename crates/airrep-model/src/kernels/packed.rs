//! The packed linear layer `x·Wᵀ + b` and its fused epilogues: the weight is packed once
//! into panels (f32 for the FMA register tiles of the SIMD tier, or split bf16 tiles for
//! AMX, `amx.rs`), and
//! [`chain`] takes blocks of rows through one or several layers while they stay in cache.

use std::ops::Range;

use candle_core::Tensor;
use rayon::prelude::*;

use super::amx;
use super::buffers::{view, F32View, SharedMut};
use super::math::{gelu_in_place, layer_norm_rows_in_place};
use airrep_core::simd::{tier, Lanes, Tier};
use airrep_core::simd_fn;

/// Elements per parallel task: large enough to amortise scheduling.
const CHUNK: usize = 16 * 1024;

/// Rows per block of [`linear`]: its output block (`ROW_BLOCK × out` floats, 768 KB
/// for MiniLM's intermediate layer) stays in a core's L2 between fill, product and
/// epilogue.
const ROW_BLOCK: usize = 128;

/// Output features per packed weight panel: two AVX-512 registers, four AVX2 ones (and two
/// AMX tiles: tasks split the columns by panels of either layout alike).
const NR: usize = 32;
const _: () = assert!(NR == amx::PANEL);
/// Most rows per register tile (AVX-512's 12 × 2 accumulators of its 32 registers); row
/// blocks are whole multiples of it on every tier.
const MR: usize = 12;
/// Depth per pass over a panel: a `KC × NR` panel slice (32 KB) stays in L1.
const KC: usize = 256;

/// How the packed CPU products multiply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Product {
    /// f32 fused multiply-adds in the register tiles of the SIMD tier (`airrep_core::simd`).
    F32,
    /// AMX bf16 tiles over split operands (`amx.rs`): f32 accuracy to ~1e-5, several
    /// times the f32 rate.
    AmxSplit,
    /// AMX bf16 tiles over bf16-rounded operands, f32 accumulation and output: bf16
    /// mixed precision at three times the rate of [`Product::AmxSplit`].
    AmxBf16,
}

impl Product {
    /// The products for CPU inference in `dtype`: AMX ones only if `amx` is wanted, this
    /// CPU has AMX and the SIMD tier is its best, AVX-512 (AMX is a step beyond that tier:
    /// a lower `airrep_core::simd` tier turns it off too); else f32 products in the tier's
    /// register tiles, for bf16 too (the bf16 weights widened to f32 once, when packed:
    /// never slower than f32). None for other dtypes.
    pub fn for_cpu(dtype: candle_core::DType, amx: bool) -> Option<Self> {
        let amx = amx && tier() == Tier::Avx512 && amx::available();
        match dtype {
            candle_core::DType::F32 if amx => Some(Product::AmxSplit),
            candle_core::DType::BF16 if amx => Some(Product::AmxBf16),
            candle_core::DType::F32 | candle_core::DType::BF16 => Some(Product::F32),
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
        Self::from_rows(&w, n, k, bias, product)
    }

    /// The same from `n` rows of `k` floats, row-major: packed straight from the slice, so
    /// a caller that holds the rows (the block search) makes no other copy.
    pub fn from_rows(
        w: &[f32],
        n: usize,
        k: usize,
        bias: Vec<f32>,
        product: Product,
    ) -> candle_core::Result<Self> {
        if w.len() != n * k {
            candle_core::bail!("packed linear: {} weights for [{n}, {k}]", w.len())
        }
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
            PackedWeight::Amx(amx::Panels::pack(w, n, k, split))
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

/// Rows per register tile of a tier whose vectors are `L`: two vectors of accumulators per
/// row, and registers left for the two panel vectors and the broadcast row value. AVX-512:
/// 12 rows × 32 columns (24 of the 32 zmm registers); AVX2: 6 × 16 (12 of the 16 ymm);
/// portable: 2 × 16 (SSE2 holds a vector of 8 in 2 of its 16 registers).
fn tile_rows<L: Lanes>() -> usize {
    ((L::REGISTERS - 4) / 2).min(MR)
}

/// `c[r, j] += Σ_kk a[r, kk] · b[kk, j]` for `R` rows and the first `cols` (<= 2·W)
/// columns, in `2·R` vector accumulators with one broadcast fused multiply-add pair per
/// row and depth step; `a` row stride `lda`, `b` within a packed panel slice (`kc` steps
/// of stride NR), `c` stride `ldc`.
///
/// # Safety
/// Runs on `L`'s tier; the pointers cover the ranges described.
#[inline(always)]
unsafe fn tile<const R: usize, L: Lanes>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
) {
    let w = L::WIDTH;
    let mut lo = [L::zero(); R];
    let mut hi = [L::zero(); R];
    for kk in 0..kc {
        let b0 = L::load(b.add(kk * NR));
        let b1 = L::load(b.add(kk * NR + w));
        for r in 0..R {
            let av = L::splat(*a.add(r * lda + kk));
            lo[r] = L::mul_add(av, b0, lo[r]);
            hi[r] = L::mul_add(av, b1, hi[r]);
        }
    }
    for r in 0..R {
        let cp = c.add(r * ldc);
        L::add_to(cp, lo[r], cols.min(w));
        if cols > w {
            L::add_to(cp.add(w), hi[r], (cols - w).min(w));
        }
    }
}

airrep_core::simd_fn! {
    /// `c[rows, panels] += a[rows, :] · Wᵀ` for one task's block: `rows` rows of `a`
    /// (stride `k`) and `c` (stride `n`), the packed panels `panels`, in register tiles of
    /// the current tier ([`tile_rows`] × 2 vectors). f32 sums of at most [`KC`] products
    /// per depth pass, fused on AVX2 and AVX-512: `|error| <= k · 2⁻²⁴ · Σ|a·w|` per
    /// output on every tier, the tiers differing by rounding only.
    ///
    /// # Safety
    /// `a` and `c` cover those rows; no other thread touches this block of `c`.
    unsafe fn product_block(
        w: &PackedLinear,
        packed: &[f32],
        a: *const f32,
        c: *mut f32,
        rows: usize,
        panels: Range<usize>,
    ) where L: Lanes {
        let (n, k) = (w.out_dim, w.in_dim);
        let (width, tile_rows) = (2 * L::WIDTH, tile_rows::<L>());
        for kc0 in (0..k).step_by(KC) {
            let kc = KC.min(k - kc0);
            for p in panels.clone() {
                let panel_cols = NR.min(n - p * NR);
                for col0 in (0..panel_cols).step_by(width) {
                    let b = packed.as_ptr().add((p * k + kc0) * NR + col0);
                    let cols = width.min(panel_cols - col0);
                    let mut r = 0;
                    while r < rows {
                        let t = tile_rows.min(rows - r);
                        let (ap, cp) = (a.add(r * k + kc0), c.add(r * n + p * NR + col0));
                        macro_rules! tiles {
                            ($($r:literal)*) => {
                                match t {
                                    $($r => tile::<$r, L>(ap, k, b, kc, cp, n, cols),)*
                                    _ => unreachable!("tile rows are 1..=MR"),
                                }
                            };
                        }
                        tiles!(12 11 10 9 8 7 6 5 4 3 2 1);
                        r += t;
                    }
                }
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
                product_block(w, packed, x.as_ptr(), dst, rows, panels)
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    /// The feed-forward block against candle's ops, with f32 products on every SIMD tier
    /// the CPU has and AMX products where it has them, for row counts that run fused (many row blocks, a ragged last one) and layer by layer
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
        let mut runs: Vec<_> = Tier::available()
            .into_iter()
            .map(|t| (Product::F32, t))
            .collect();
        if let Some(amx) = Product::for_cpu(DType::F32, true).filter(|&p| p != Product::F32) {
            runs.push((amx, Tier::best()));
        }
        for (product, simd) in runs {
            let (up, down) = (
                PackedLinear::new(&w1, &b1, product)?,
                PackedLinear::new(&w2, &b2, product)?,
            );
            for rows in [1100, 50] {
                let x = randn(&[rows, hidden], 1.0)?;
                let sum = (linear(&linear(&x, &w1, &b1)?.gelu_erf()?, &w2, &b2)? + &x)?;
                let want = candle_nn::ops::layer_norm(&sum, &gamma, &beta, 1e-12)?;
                let got = airrep_core::simd::with_tier(simd, || {
                    pool.install(|| feed_forward(&x, &up, &down, &gamma, &beta, 1e-12))
                })
                .unwrap()?;
                let err = norm(&(&got - &want)?)? / norm(&want)?;
                // f32 FMA: rounding only; AMX split: ~1e-5 per product.
                let bound = if product == Product::F32 { 1e-6 } else { 1e-4 };
                assert!(
                    err < bound,
                    "{product:?} {simd}, {rows} rows: relative error {err:e}"
                );
            }
        }
        Ok(())
    }
}
