//! Intel AMX tile products at f32 accuracy, for the CPU linear layers.
//!
//! An AMX tile product multiplies bf16 operands into f32 accumulators at 16 times the
//! f32 FMA rate of AVX-512, but rounding an operand to bf16 costs up to 2⁻⁸ ≈ 4e-3 of it,
//! far outside f32 parity. So each f32 `x` is split into `hi = bf16(x)` and
//! `lo = bf16(x − hi)` and a product is taken as `a_hi·b_hi + a_hi·b_lo + a_lo·b_hi`
//! (the "bf16x3" split): three bf16 products, error at most 3·2⁻¹⁶ ≈ 4.6e-5 of `|a·b|`
//! (about 1e-5 end to end in MiniLM), accumulated in f32. Weights and activations keep
//! `hi` and `lo` as separate tiles, and the kernel runs the three tile products per step:
//! 4 bytes per weight, which matters when few rows share each weight streamed from L3.
//! For bf16 mixed precision ([`Split::One`]) only `hi` is kept: one product per step.
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
/// Rows the kernels take at a time (the split one takes one row tile at a time, the
/// plain one two): row blocks are whole multiples of this.
pub const ROWS_PER_BLOCK: usize = 2 * TILE;
/// Output features per packed weight panel: two accumulator tiles side by side.
pub const PANEL: usize = 2 * TILE;
/// Weight bytes of the panels that all rows of a block pass through before the next
/// panels: they stay in L2. (Each 32 × 32 output block accumulates over the whole depth
/// in tiles, loaded and stored once: measured 20% faster than passes of 8 steps.)
const PANEL_GROUP_BYTES: usize = 256 * 1024;
/// u16 elements of one weight tile: 16 rows of 32.
const TILE_ELEMS: usize = TILE * STEP;
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

/// How the products stand in for f32 ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// `a_hi·b_hi + a_hi·b_lo + a_lo·b_hi`: f32 results to about 1e-5.
    Three,
    /// `bf16(a)·bf16(b)`: bf16 mixed precision (f32 accumulation and output).
    One,
}

impl Split {
    /// Parts kept of each operand: `hi` and `lo`, or `hi`.
    fn parts(self) -> usize {
        match self {
            Split::Three => 2,
            Split::One => 1,
        }
    }
}

/// A weight `[out, in]` (`out` a multiple of [`PANEL`]) split into bf16 parts and laid
/// out as the tile loads read it: per panel of 32 output features and per step of 32
/// inputs, for each part (`hi`, then `lo`) two 16 × 32 bf16 tiles in the pair-interleaved
/// ("VNNI") order of `tdpbf16ps`, tile row `i` holding inputs `2i, 2i+1` of 16 columns.
pub struct Panels {
    data: Vec<Line>,
    steps: usize,
    split: Split,
}

impl Panels {
    pub fn pack(weight: &[f32], out_dim: usize, in_dim: usize, split: Split) -> Self {
        assert!(out_dim.is_multiple_of(PANEL) && weight.len() == out_dim * in_dim);
        let (steps, parts) = (in_dim.div_ceil(STEP), split.parts());
        let mut lines = vec![ZERO_LINE; out_dim / PANEL * steps * parts * 2 * TILE];
        let data = elements(&mut lines);
        for (col, row) in weight.chunks_exact(in_dim).enumerate() {
            let (panel, tile, c) = (col / PANEL, col % PANEL / TILE, col % TILE);
            for (kk, &w) in row.iter().enumerate() {
                let (hi, lo) = hi_lo(w);
                let (step, d) = (kk / STEP, kk % STEP);
                for (part, value) in [hi, lo].into_iter().take(parts).enumerate() {
                    let at = (((panel * steps + step) * parts + part) * 2 + tile) * TILE_ELEMS
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

    /// u16 elements per packed activation row: each part over whole steps.
    fn row_len(&self) -> usize {
        self.split.parts() * self.steps * STEP
    }
}

airrep_core::simd_fn! {
    /// Packs each `in_dim`-long row of `x` into `dst` (`row_len` u16 per row): `hi` over
    /// the first `row_len / parts` entries, then (`parts` 2) `lo`, zero past the data.
    fn pack_rows(x: &[f32], in_dim: usize, dst: &mut [u16], row_len: usize, parts: usize) {
        for (src, dst) in x.chunks_exact(in_dim).zip(dst.chunks_exact_mut(row_len)) {
            let (hi, lo) = dst.split_at_mut(row_len / parts);
            if parts == 2 {
                for ((h, l), &x) in hi.iter_mut().zip(lo.iter_mut()).zip(src) {
                    (*h, *l) = hi_lo(x);
                }
                lo[in_dim..].fill(0);
            } else {
                for (h, &x) in hi.iter_mut().zip(src) {
                    *h = bf16_bits(x);
                }
            }
            hi[in_dim..].fill(0);
        }
    }
}

/// Activation rows packed for [`product`]: per row `hi` (then `lo`) over whole steps,
/// cache-line aligned, whole 16-row tiles (zero past the data).
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
        let (depth, parts) = (w.row_len(), w.split.parts());
        self.depth = depth;
        self.lines.resize(padded * depth / STEP, ZERO_LINE);
        let (a, pad) = elements(&mut self.lines).split_at_mut(rows * depth);
        pad.fill(0);
        let x = &x[..rows * in_dim];
        if chunk >= rows {
            pack_rows(x, in_dim, a, depth, parts);
        } else {
            a.par_chunks_mut(chunk * depth)
                .zip(x.par_chunks(chunk * in_dim))
                .for_each(|(a, x)| pack_rows(x, in_dim, a, depth, parts));
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
    assert!(depth == w.row_len() && (rows.start + padded) * depth <= a.lines.len() * STEP);
    let a = a.lines.as_ptr().cast::<u16>().add(rows.start * depth);
    let panel_len = w.steps * w.split.parts() * 2 * TILE_ELEMS;
    tiles::configure();
    let group = (PANEL_GROUP_BYTES / (panel_len * 2)).max(1);
    let panels: Vec<usize> = panels.collect();
    for group in panels.chunks(group) {
        for r in (0..padded).step_by(ROWS_PER_BLOCK) {
            let (ap, rows) = (a.add(r * depth), padded - r);
            for &p in group {
                let (b, cp) = (
                    w.data.as_ptr().cast::<u16>().add(p * panel_len),
                    c.add(r * ldc + p * PANEL),
                );
                match w.split {
                    Split::Three => {
                        // One row tile at a time: hi, lo and 4 weight tiles fill the 6
                        // operand tiles, leaving two accumulators.
                        for t in (0..rows.min(ROWS_PER_BLOCK)).step_by(TILE) {
                            let (ap, cp) = (ap.add(t * depth), cp.add(t * ldc));
                            tiles::split_block(ap, depth, b, w.steps, cp, ldc * 4);
                        }
                    }
                    Split::One if rows >= ROWS_PER_BLOCK => {
                        tiles::block::<2>(ap, depth * 2, b, w.steps, cp, ldc * 4)
                    }
                    Split::One => tiles::block::<1>(ap, depth * 2, b, w.steps, cp, ldc * 4),
                }
            }
        }
    }
    tiles::release();
}

/// The tile instructions; all eight tiles are 16 rows × 64 bytes.
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

    /// `C += A · B` in bf16 for `ROW_TILES` × 16 rows and 32 columns: `a` packed rows
    /// (stride `lda` bytes), `b` a panel's `hi` tiles (2 per step, `steps` steps), `c` the
    /// f32 output (stride `ldc` bytes). Tiles 0-3 accumulate (row tile `r`, column tile
    /// `j` in tile `2r + j`), 4-5 hold activation rows, 6-7 weights.
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
        accumulators::<ROW_TILES, true>(c, ldc);
        for step in 0..steps {
            let (b0, a0) = (b.add(step * 2 * TILE_ELEMS), a.add(step * STEP));
            asm!(
                "tileloadd tmm6, [{b0} + {s}]",
                "tileloadd tmm7, [{b1} + {s}]",
                "tileloadd tmm4, [{a0} + {lda}]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                b0 = in(reg) b0,
                b1 = in(reg) b0.add(TILE_ELEMS),
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
        accumulators::<ROW_TILES, false>(c, ldc);
    }

    /// `C += A_hi·B_hi + A_hi·B_lo + A_lo·B_hi` for 16 rows and 32 columns: `a` a row
    /// tile's packed rows (`row_len` u16 each: `hi` over `steps` steps, then `lo`), `b` a
    /// panel's tiles (per step `hi` then `lo`, 2 tiles each), `c` the f32 output (stride
    /// `ldc` bytes). Tiles 0-1 accumulate, 2-3 hold `hi`/`lo` rows, 4-5 `hi` weights,
    /// 6-7 `lo` weights.
    ///
    /// # Safety
    /// [`configure`]d on this thread; the pointers cover the ranges described.
    #[inline(always)]
    pub unsafe fn split_block(
        a: *const u16,
        row_len: usize,
        b: *const u16,
        steps: usize,
        c: *mut f32,
        ldc: usize,
    ) {
        accumulators::<1, true>(c, ldc);
        for step in 0..steps {
            let (a_hi, b_hi) = (a.add(step * STEP), b.add(step * 4 * TILE_ELEMS));
            asm!(
                "tileloadd tmm2, [{a_hi} + {lda}]",
                "tileloadd tmm3, [{a_lo} + {lda}]",
                "tileloadd tmm4, [{b0} + {s}]",
                "tileloadd tmm5, [{b1} + {s}]",
                "tileloadd tmm6, [{b2} + {s}]",
                "tileloadd tmm7, [{b3} + {s}]",
                "tdpbf16ps tmm0, tmm2, tmm4",
                "tdpbf16ps tmm1, tmm2, tmm5",
                "tdpbf16ps tmm0, tmm2, tmm6",
                "tdpbf16ps tmm1, tmm2, tmm7",
                "tdpbf16ps tmm0, tmm3, tmm4",
                "tdpbf16ps tmm1, tmm3, tmm5",
                a_hi = in(reg) a_hi,
                a_lo = in(reg) a_hi.add(steps * STEP),
                lda = in(reg) row_len * 2,
                b0 = in(reg) b_hi,
                b1 = in(reg) b_hi.add(TILE_ELEMS),
                b2 = in(reg) b_hi.add(2 * TILE_ELEMS),
                b3 = in(reg) b_hi.add(3 * TILE_ELEMS),
                s = in(reg) TILE_BYTES,
                options(nostack, readonly),
            );
        }
        accumulators::<1, false>(c, ldc);
    }

    /// Loads (`LOAD`) or stores the accumulator tiles of `ROW_TILES` × 16 rows and 32
    /// columns of `c` (stride `ldc` bytes): tile `2r + j` holds row tile `r`, columns
    /// `16j..16j + 16`.
    ///
    /// # Safety
    /// [`configure`]d on this thread; `c` covers those rows and columns.
    #[inline(always)]
    unsafe fn accumulators<const ROW_TILES: usize, const LOAD: bool>(c: *mut f32, ldc: usize) {
        macro_rules! tile {
            ($t:literal, $p:expr) => {
                if LOAD {
                    asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}]"), p = in(reg) $p, s = in(reg) ldc, options(nostack));
                } else {
                    asm!(concat!("tilestored [{p} + {s}], tmm", $t), p = in(reg) $p, s = in(reg) ldc, options(nostack));
                }
            };
        }
        let c1 = c.byte_add(TILE_BYTES);
        tile!(0, c);
        tile!(1, c1);
        if ROW_TILES == 2 {
            tile!(2, c.byte_add(16 * ldc));
            tile!(3, c1.byte_add(16 * ldc));
        }
    }

    /// Bytes of one tile row: 32 bf16 or 16 f32.
    const TILE_BYTES: usize = 64;
    use super::{STEP, TILE_ELEMS};
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
