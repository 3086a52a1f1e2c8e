//! Intel AMX tile products at f32 accuracy, for the CPU linear layers.
//!
//! An AMX tile product multiplies bf16 operands into f32 accumulators at 16 times the
//! f32 FMA rate of AVX-512, but rounding an operand to bf16 costs up to 2⁻⁸ ≈ 4e-3 of it,
//! far outside f32 parity. So each f32 `x` is split into `hi = bf16(x)` and
//! `lo = bf16(x − hi)` and a product is taken as `a_hi·b_hi + a_hi·b_lo + a_lo·b_hi`
//! (the "bf16x3" split): three bf16 products, error at most 3·2⁻¹⁶ ≈ 4.6e-5 of `|a·b|`
//! (about 1e-5 end to end in MiniLM), accumulated in f32. The three terms are laid out along the depth, so the kernel is a
//! plain bf16 product over three times the depth: per group of 16 depth indices, the
//! activations hold `[hi, hi, lo]` and the weights `[hi, lo, hi]`. For bf16 mixed
//! precision ([`Split::One`]) only `hi` is kept: one product per term, a third of the work.
//!
//! Linux hands out the 8 KB of tile state per process on request ([`available`] asks
//! once); each task loads the tile configuration on its own thread and releases the tiles
//! when it is done.

use std::cell::RefCell;
use std::ops::Range;
use std::sync::OnceLock;

/// Depth of one tile product: 32 bf16, one 64-byte tile row.
const STEP: usize = 32;
/// Rows of a tile, and f32 columns of an accumulator tile.
pub const TILE: usize = 16;
/// Rows the kernel takes at a time: two row tiles share each weight tile load.
pub const ROWS_PER_BLOCK: usize = 2 * TILE;
/// Output features per packed weight panel: two accumulator tiles side by side.
pub const PANEL: usize = 2 * TILE;
/// Original depth indices per `[hi, hi, lo]` group.
const GROUP: usize = 16;
/// Weight bytes of the panels that all rows of a block pass through before the next
/// panels: they stay in L2. (Each 32 × 32 output block accumulates over the whole depth
/// in tiles, loaded and stored once: measured 20% faster than passes of 8 steps.)
const PANEL_GROUP_BYTES: usize = 256 * 1024;
/// u16 elements of the two weight tiles of one panel and step.
const PANEL_STEP: usize = 2 * TILE * STEP;
// A tile row is 64 bytes: 32 bf16 of depth, or (weights) 16 columns x 2 depth; a panel is
// two column tiles side by side.
const _: () = assert!(STEP * 2 == 64 && PANEL == 2 * TILE && TILE * 2 == STEP);

/// Whether this CPU and OS run AMX bf16 tile products (asked once per process).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    if __cpuid(0).eax < 7 {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    // The kernel enables the tile data state only for processes that ask for it.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with these arguments only changes this process's permissions.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// One tile row of 32 bf16, cache-line aligned: tile loads from unaligned rows run
/// several times slower (measured 2.4 vs 15 ns per tile here).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; STEP]);

const ZERO_LINE: Line = Line([0; STEP]);

/// The bf16 elements of `lines`, in order.
fn elements(lines: &mut [Line]) -> &mut [u16] {
    // SAFETY: a Line is exactly 32 u16 (64 bytes, no padding), so the lines are one
    // contiguous, suitably aligned run of u16.
    unsafe { std::slice::from_raw_parts_mut(lines.as_mut_ptr().cast(), lines.len() * STEP) }
}

/// `x` rounded to the nearest bf16 (ties to even), as its bits. No NaN check, to keep
/// the packing loop branch-free (4% of encoding time): a NaN whose top 16 mantissa bits
/// are all set would round to ±0, but arithmetic only makes quiet NaNs with a zero
/// payload (which stay NaN), and checkpoints with NaN weights are rejected at load.
#[inline(always)]
fn bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

/// `(hi, lo)`: `hi = bf16(x)`, `lo = bf16(x − hi)`.
#[inline(always)]
fn hi_lo(x: f32) -> (u16, u16) {
    let hi = bf16_bits(x);
    (hi, bf16_bits(x - f32::from_bits((hi as u32) << 16)))
}

/// Depth steps of a product over `k` original depth indices (three terms each, whole
/// groups of 16, whole steps of 32).
fn steps_for(k: usize, split: Split) -> usize {
    (split.terms() * k.div_ceil(GROUP) * GROUP).div_ceil(STEP)
}

/// How the products stand in for f32 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `a_hi·b_hi + a_hi·b_lo + a_lo·b_hi`: f32 results to about 1e-5.
    Three,
    /// `bf16(a)·bf16(b)`: bf16 mixed precision (f32 accumulation and output).
    One,
}

impl Split {
    fn terms(self) -> usize {
        match self {
            Split::Three => 3,
            Split::One => 1,
        }
    }
}

/// A weight `[out, in]` (`out` a multiple of [`PANEL`]) split into bf16 `[hi, lo, hi]`
/// terms and laid out as the tile loads read it: per panel of 32 output features and per
/// depth step, two 16 × 32 bf16 tiles in the pair-interleaved ("VNNI") order of
/// `tdpbf16ps`, tile row `i` holding depth `2i, 2i+1` of each of 16 columns.
pub struct Panels {
    data: Vec<Line>,
    steps: usize,
    split: Split,
}

impl Panels {
    pub fn pack(weight: &[f32], out_dim: usize, in_dim: usize, split: Split) -> Self {
        assert!(out_dim.is_multiple_of(PANEL) && weight.len() == out_dim * in_dim);
        let (steps, terms) = (steps_for(in_dim, split), split.terms());
        let mut lines = vec![ZERO_LINE; out_dim / PANEL * steps * PANEL_STEP / STEP];
        let data = elements(&mut lines);
        for (col, row) in weight.chunks_exact(in_dim).enumerate() {
            let (panel, tile, c) = (col / PANEL, col % PANEL / TILE, col % TILE);
            for (kk, &w) in row.iter().enumerate() {
                let (hi, lo) = hi_lo(w);
                for (term, value) in [hi, lo, hi].into_iter().take(terms).enumerate() {
                    let d = kk / GROUP * terms * GROUP + term * GROUP + kk % GROUP;
                    let (step, d) = (d / STEP, d % STEP);
                    let at = ((panel * steps + step) * 2 + tile) * TILE * STEP
                        + (d / 2) * STEP
                        + c * 2
                        + d % 2;
                    data[at] = value;
                }
            }
        }
        Self {
            data: lines,
            steps,
            split,
        }
    }
}

crate::cpu_kernels::simd_fn! {
    /// Packs each `in_dim`-long row of `x` as `[hi, hi, lo]` groups (`terms` 3) or `[hi]`
    /// groups (`terms` 1) into `dst` (`depth` u16 per row, zero past the data).
    fn pack_rows(x: &[f32], in_dim: usize, dst: &mut [u16], depth: usize, terms: usize) {
        for (src, dst) in x.chunks_exact(in_dim).zip(dst.chunks_exact_mut(depth)) {
            let (groups, tail) = dst.split_at_mut(terms * in_dim.div_ceil(GROUP) * GROUP);
            tail.fill(0);
            for (src, dst) in src.chunks(GROUP).zip(groups.chunks_exact_mut(terms * GROUP)) {
                let (mut hi, mut lo) = ([0u16; GROUP], [0u16; GROUP]);
                for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(src) {
                    (*h, *l) = hi_lo(x);
                }
                for (term, dst) in dst.chunks_exact_mut(GROUP).enumerate() {
                    dst.copy_from_slice(if term < 2 { &hi } else { &lo });
                }
            }
        }
    }
}

/// Activation rows packed for [`product`]: `[hi, hi, lo]` groups per row, cache-line
/// aligned, whole 16-row tiles (zero past the data).
pub struct Rows {
    lines: Vec<Line>,
    depth: usize,
}

impl Rows {
    pub const fn new() -> Self {
        Self {
            lines: Vec::new(),
            depth: 0,
        }
    }

    /// Packs `rows` rows of `x` (stride `in_dim`) for products with `w`, reusing the
    /// allocation.
    pub fn pack(&mut self, w: &Panels, x: &[f32], in_dim: usize, rows: usize) {
        self.pack_in(w, x, in_dim, rows, usize::MAX);
    }

    /// [`Rows::pack`] on the current rayon pool, a row tile per task: for rows that
    /// several tasks will share.
    pub fn pack_in_parallel(&mut self, w: &Panels, x: &[f32], in_dim: usize, rows: usize) {
        self.pack_in(w, x, in_dim, rows, TILE);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.lines.capacity() * std::mem::size_of::<Line>()
    }

    fn pack_in(&mut self, w: &Panels, x: &[f32], in_dim: usize, rows: usize, chunk: usize) {
        use rayon::prelude::*;
        let padded = rows.next_multiple_of(TILE);
        let (depth, terms) = (w.steps * STEP, w.split.terms());
        self.depth = depth;
        self.lines.resize(padded * w.steps, ZERO_LINE);
        let (a, pad) = elements(&mut self.lines).split_at_mut(rows * depth);
        pad.fill(0);
        let x = &x[..rows * in_dim];
        if chunk >= rows {
            pack_rows(x, in_dim, a, depth, terms);
        } else {
            a.par_chunks_mut(chunk * depth)
                .zip(x.par_chunks(chunk * in_dim))
                .for_each(|(a, x)| pack_rows(x, in_dim, a, depth, terms));
        }
    }
}

thread_local! {
    /// The packed activation rows of the current task, reused across calls.
    static PACKED_ROWS: RefCell<Rows> = const { RefCell::new(Rows::new()) };
}

/// [`product`] of `rows` rows of `x` (stride `in_dim`), packed on this thread.
///
/// # Safety
/// As [`product`].
pub unsafe fn pack_and_multiply(
    w: &Panels,
    x: &[f32],
    in_dim: usize,
    rows: usize,
    panels: Range<usize>,
    c: *mut f32,
    ldc: usize,
) {
    PACKED_ROWS.with_borrow_mut(|a| {
        a.pack(w, x, in_dim, rows);
        product(w, a, 0..rows, panels, c, ldc);
    });
}

/// `c[r, j] += Σ a[r, :] · w[j, :]` for the packed rows `rows` of `a` and the output
/// features of `panels`, into `c` (row stride `ldc` floats; its row 0 is `a`'s row
/// `rows.start`). `c` must have `rows.len().next_multiple_of(16)` rows: the tiles write
/// whole 16-row blocks, and rows past `rows` get the product of zero rows (`c`
/// unchanged).
///
/// # Safety
/// [`available`] returned true; `a` was packed for `w` and its rows past `rows.end` up to
/// the next multiple of 16 are zero (true when `rows.end` is where packing ended); `c`
/// covers the rows described and no other thread touches its part of them.
pub unsafe fn product(
    w: &Panels,
    a: &Rows,
    rows: Range<usize>,
    panels: Range<usize>,
    c: *mut f32,
    ldc: usize,
) {
    let padded = rows.len().next_multiple_of(TILE);
    let depth = a.depth;
    // A mismatch would make the tiles read past the rows: check it even in release builds.
    assert!(depth == w.steps * STEP && (rows.start + padded) * depth <= a.lines.len() * STEP);
    let a = a.lines.as_ptr().cast::<u16>().add(rows.start * depth);
    tiles::configure();
    let group = (PANEL_GROUP_BYTES / (depth * 2 * PANEL)).max(1);
    let panels: Vec<usize> = panels.collect();
    for group in panels.chunks(group) {
        for r in (0..padded).step_by(ROWS_PER_BLOCK) {
            let (ap, rows) = (a.add(r * depth), padded - r);
            for &p in group {
                let (b, cp) = (
                    w.data.as_ptr().cast::<u16>().add(p * w.steps * PANEL_STEP),
                    c.add(r * ldc + p * PANEL),
                );
                if rows >= ROWS_PER_BLOCK {
                    tiles::block::<2>(ap, depth * 2, b, w.steps, cp, ldc * 4);
                } else {
                    tiles::block::<1>(ap, depth * 2, b, w.steps, cp, ldc * 4);
                }
            }
        }
    }
    tiles::release();
}

/// The tile instructions. Tiles 0-3 accumulate (row tile `r`, column tile `j` in tile
/// `2r + j`), 4-5 hold activation rows, 6-7 weight columns; all 16 rows × 64 bytes.
mod tiles {
    use std::arch::asm;

    #[repr(C, align(64))]
    struct Config([u8; 64]);

    /// Palette 1; eight tiles of 16 rows × 64 bytes.
    static CONFIG: Config = {
        let mut b = [0u8; 64];
        b[0] = 1;
        let mut t = 0;
        while t < 8 {
            b[16 + 2 * t] = 64;
            b[48 + t] = 16;
            t += 1;
        }
        Config(b)
    };

    /// # Safety
    /// AMX is available and permitted for this process.
    pub unsafe fn configure() {
        asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    }

    /// # Safety
    /// As [`configure`].
    pub unsafe fn release() {
        asm!("tilerelease", options(nostack, nomem));
    }

    /// `C += A · B` for `ROW_TILES` × 16 rows and 32 columns: `a` packed rows (stride
    /// `lda` bytes), `b` a panel's tiles from the current step (2 tiles per step,
    /// `steps` steps), `c` the f32 output (stride `ldc` bytes).
    ///
    /// # Safety
    /// [`configure`]d on this thread; the pointers cover the ranges described.
    #[inline(always)]
    pub unsafe fn block<const ROW_TILES: usize>(
        a: *const u16,
        lda: usize,
        b: *const u16,
        steps: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        let c1 = c.byte_add(TILE_BYTES);
        asm!("tileloadd tmm0, [{p} + {s}]", p = in(reg) c, s = in(reg) ldc, options(nostack));
        asm!("tileloadd tmm1, [{p} + {s}]", p = in(reg) c1, s = in(reg) ldc, options(nostack));
        if ROW_TILES == 2 {
            let (c2, c3) = (c.byte_add(16 * ldc), c1.byte_add(16 * ldc));
            asm!("tileloadd tmm2, [{p} + {s}]", p = in(reg) c2, s = in(reg) ldc, options(nostack));
            asm!("tileloadd tmm3, [{p} + {s}]", p = in(reg) c3, s = in(reg) ldc, options(nostack));
        }
        for step in 0..steps {
            let (b0, a0) = (b.add(step * super::PANEL_STEP), a.add(step * super::STEP));
            asm!(
                "tileloadd tmm6, [{b0} + {s}]",
                "tileloadd tmm7, [{b1} + {s}]",
                "tileloadd tmm4, [{a0} + {lda}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                b0 = in(reg) b0,
                b1 = in(reg) b0.add(super::TILE * super::STEP),
                a0 = in(reg) a0,
                lda = in(reg) lda,
                s = in(reg) TILE_BYTES,
                options(nostack, readonly),
            );
            if ROW_TILES == 2 {
                asm!(
                    "tileloadd tmm5, [{a1} + {lda}]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a1 = in(reg) a0.byte_add(16 * lda),
                    lda = in(reg) lda,
                    options(nostack, readonly),
                );
            }
        }
        asm!("tilestored [{p} + {s}], tmm0", p = in(reg) c, s = in(reg) ldc, options(nostack));
        asm!("tilestored [{p} + {s}], tmm1", p = in(reg) c1, s = in(reg) ldc, options(nostack));
        if ROW_TILES == 2 {
            let (c2, c3) = (c.byte_add(16 * ldc), c1.byte_add(16 * ldc));
            asm!("tilestored [{p} + {s}], tmm2", p = in(reg) c2, s = in(reg) ldc, options(nostack));
            asm!("tilestored [{p} + {s}], tmm3", p = in(reg) c3, s = in(reg) ldc, options(nostack));
        }
    }

    /// Bytes of one tile row: 32 bf16 or 16 f32.
    const TILE_BYTES: usize = 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1) with a spread of magnitudes.
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::SplitMix64(seed);
        (0..n)
            .map(|_| {
                let u = rng.next_u64() as f64 / u64::MAX as f64;
                ((2.0 * u - 1.0) * (1.0 + 7.0 * u).exp2() / 256.0) as f32
            })
            .collect()
    }

    #[test]
    fn split_recovers_f32_to_sixteen_bits() {
        for x in values(10_000, 1) {
            let (hi, lo) = hi_lo(x);
            let back = f32::from_bits((hi as u32) << 16) + f32::from_bits((lo as u32) << 16);
            assert!(
                (back - x).abs() <= x.abs() * 2f32.powi(-16),
                "{x} -> {back}"
            );
        }
        assert_eq!(bf16_bits(1.0), 0x3f80);
        // 1 + 2^-8 is halfway between bf16 1.0 and 1.0078125: ties go to even (1.0).
        assert_eq!(bf16_bits(1.0 + 2f32.powi(-8)), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        // The NaNs arithmetic makes stay NaN.
        let (zero, inf) = (
            std::hint::black_box(0f32),
            std::hint::black_box(f32::INFINITY),
        );
        for nan in [f32::NAN, -f32::NAN, zero / zero, inf - inf] {
            assert!(f32::from_bits((bf16_bits(nan) as u32) << 16).is_nan());
        }
    }

    /// Against an f64 product: each output within 5e-5 of `Σ |x|·|w|` for the split
    /// (3·2⁻¹⁶ per term plus f32 accumulation) and 8e-3 for bf16 operands (2·2⁻⁸), for
    /// depths that are not whole groups, row counts that are not whole tiles, several
    /// panels.
    #[test]
    fn product_matches_f64_within_split_error() {
        if !available() {
            eprintln!("skipped: this CPU or OS has no AMX bf16");
            return;
        }
        let shapes = [(1, 7, 32), (45, 100, 64), (70, 384, 96), (16, 1536, 32)];
        for ((rows, in_dim, out_dim), (split, bound)) in shapes
            .into_iter()
            .flat_map(|shape| [(Split::Three, 5e-5), (Split::One, 8e-3)].map(|s| (shape, s)))
        {
            let x = values(rows * in_dim, rows as u64);
            let w = values(out_dim * in_dim, in_dim as u64);
            let init = values(rows.next_multiple_of(TILE) * out_dim, 3);
            let mut c = init.clone();
            let panels = Panels::pack(&w, out_dim, in_dim, split);
            // SAFETY: AMX is available; c has the padded rows.
            unsafe {
                pack_and_multiply(
                    &panels,
                    &x,
                    in_dim,
                    rows,
                    0..out_dim / PANEL,
                    c.as_mut_ptr(),
                    out_dim,
                )
            };
            // Rows packed once and multiplied in two ranges (the shared-rows path) give
            // the same bits.
            let mut halves = init.clone();
            let mut packed = Rows::new();
            packed.pack(&panels, &x, in_dim, rows);
            let half = (rows / 2).next_multiple_of(TILE).min(rows);
            for range in [0..half, half..rows] {
                let c = halves[range.start * out_dim..].as_mut_ptr();
                // SAFETY: as above; c starts at the range's first row.
                unsafe { product(&panels, &packed, range, 0..out_dim / PANEL, c, out_dim) };
            }
            assert_eq!(
                halves, c,
                "{split:?}, rows {rows} in {in_dim} out {out_dim}: halves"
            );
            for r in 0..rows {
                for j in 0..out_dim {
                    let (xr, wj) = (&x[r * in_dim..][..in_dim], &w[j * in_dim..][..in_dim]);
                    let exact: f64 = xr.iter().zip(wj).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let scale: f64 = xr
                        .iter()
                        .zip(wj)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let got = (c[r * out_dim + j] - init[r * out_dim + j]) as f64;
                    assert!(
                        (got - exact).abs()
                            <= bound * scale + 1e-6 * init[r * out_dim + j].abs() as f64,
                        "{split:?}, rows {rows} in {in_dim} out {out_dim}: [{r}, {j}] {got} vs {exact}"
                    );
                }
            }
        }
    }
}
