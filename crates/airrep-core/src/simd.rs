//! The instruction-set tier every wide kernel of the workspace runs at, chosen once per
//! process and read through one place, [`tier`].
//!
//! * [`Tier::Avx512`]: 16 f32 lanes, fused multiply-add, 32 vector registers;
//! * [`Tier::Avx2`]: 8 f32 lanes, fused multiply-add (AVX2 + FMA), 16 vector registers;
//! * [`Tier::Portable`]: what the compile target guarantees (SSE2 on x86-64: 4 lanes, no
//!   FMA), on every CPU.
//!
//! The tier defaults to the best the CPU has; [`select`] lowers it (the `airrep.simd`
//! setting), and refuses a tier the CPU lacks, so a kernel never runs an instruction the CPU
//! does not have. Kernels are written once: plain Rust that the compiler vectorises, or
//! generic over [`Lanes`] (explicit vectors and fused multiply-adds), inside [`simd_fn!`],
//! which compiles one copy per tier and calls the copy of the current tier.
//!
//! Results differ between tiers only by rounding: a tier changes how many lanes a sum is
//! split over and whether `a·b + c` rounds once (FMA) or twice. Each kernel's docs bound
//! that difference for every tier.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;

/// An instruction-set tier, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Portable = 0,
    Avx2 = 1,
    Avx512 = 2,
}

impl Tier {
    /// Every tier, lowest first.
    pub const ALL: [Tier; 3] = [Tier::Portable, Tier::Avx2, Tier::Avx512];

    /// The setting's spelling: `portable`, `avx2` or `avx512`.
    pub fn name(self) -> &'static str {
        match self {
            Tier::Portable => "portable",
            Tier::Avx2 => "avx2",
            Tier::Avx512 => "avx512",
        }
    }

    /// Whether this CPU (and OS) runs the tier's instructions.
    pub fn supported(self) -> bool {
        match self {
            Tier::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Tier::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Tier::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The best tier this CPU runs (detected once; [`tier`] asks for it per kernel call).
    pub fn best() -> Tier {
        static BEST: AtomicU8 = AtomicU8::new(AUTO);
        match BEST.load(Ordering::Relaxed) {
            AUTO => {
                let best = [Tier::Avx512, Tier::Avx2]
                    .into_iter()
                    .find(|t| t.supported())
                    .unwrap_or(Tier::Portable);
                BEST.store(best as u8, Ordering::Relaxed);
                best
            }
            code => Tier::from_code(code),
        }
    }

    /// The tiers this CPU runs, lowest first.
    pub fn available() -> Vec<Tier> {
        Tier::ALL.into_iter().filter(|t| t.supported()).collect()
    }

    fn from_code(code: u8) -> Tier {
        match code {
            2 => Tier::Avx512,
            1 => Tier::Avx2,
            _ => Tier::Portable,
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A setting that is not `auto` or a tier's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownTier(pub String);

impl fmt::Display for UnknownTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown SIMD tier \"{}\": expected auto, avx512, avx2 or portable",
            self.0
        )
    }
}

impl std::error::Error for UnknownTier {}

impl FromStr for Tier {
    type Err = UnknownTier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownTier(s.to_string()))
    }
}

/// `auto` (None) or a tier, as the `airrep.simd` setting spells it.
pub fn parse_setting(s: &str) -> Result<Option<Tier>, UnknownTier> {
    if s.trim().eq_ignore_ascii_case("auto") {
        Ok(None)
    } else {
        s.parse().map(Some)
    }
}

/// A tier this CPU does not run; Display names the ones it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedTier(pub Tier);

impl fmt::Display for UnsupportedTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let have: Vec<&str> = Tier::available()
            .into_iter()
            .rev()
            .map(Tier::name)
            .collect();
        write!(
            f,
            "this CPU does not support SIMD tier {}: it supports {}",
            self.0,
            have.join(", ")
        )
    }
}

impl std::error::Error for UnsupportedTier {}

/// The chosen tier's code, or [`AUTO`].
static CHOSEN: AtomicU8 = AtomicU8::new(AUTO);
const AUTO: u8 = u8::MAX;

/// The tier kernels run at now: the one [`select`]ed, else the best the CPU has. Always a
/// tier this CPU supports.
#[inline]
pub fn tier() -> Tier {
    match CHOSEN.load(Ordering::Relaxed) {
        AUTO => Tier::best(),
        code => Tier::from_code(code),
    }
}

/// Run every kernel at `tier` from now on in this process (None: the best the CPU has).
/// A tier the CPU lacks is refused and changes nothing.
pub fn select(tier: Option<Tier>) -> Result<(), UnsupportedTier> {
    check(tier)?;
    CHOSEN.store(tier.map_or(AUTO, |t| t as u8), Ordering::Relaxed);
    Ok(())
}

/// Whether [`select`] would accept `tier`.
pub fn check(tier: Option<Tier>) -> Result<(), UnsupportedTier> {
    match tier {
        Some(t) if !t.supported() => Err(UnsupportedTier(t)),
        _ => Ok(()),
    }
}

/// Serialises [`with_tier`] callers: the tier is process-wide.
static FORCED: Mutex<()> = Mutex::new(());

/// `f` with every kernel at `tier` (for tests and benchmarks that compare tiers), then the
/// previous choice again. Callers of `with_tier` wait for each other; other code running
/// meanwhile also runs at `tier`, which every kernel's bounds allow.
pub fn with_tier<R>(tier: Tier, f: impl FnOnce() -> R) -> Result<R, UnsupportedTier> {
    let _guard = FORCED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    check(Some(tier))?;
    let previous = CHOSEN.swap(tier as u8, Ordering::Relaxed);
    struct Restore(u8);
    impl Drop for Restore {
        fn drop(&mut self) {
            CHOSEN.store(self.0, Ordering::Relaxed);
        }
    }
    let _restore = Restore(previous);
    Ok(f())
}

/// Explicit f32 vectors of one tier, for kernels that must control their registers and
/// fused multiply-adds (the compiler never fuses `a * b + c` by itself). Kernels are
/// generic over `Lanes` inside [`simd_fn!`] (`where L: Lanes`), which instantiates each
/// tier's copy with its lanes and target features, so the operations inline to single
/// instructions.
///
/// # Safety
/// The methods may only run on a CPU with the tier's features (which [`simd_fn!`]
/// guarantees); pointers must cover the floats read or written.
#[allow(clippy::missing_safety_doc)] // the trait's Safety section covers every method
pub trait Lanes {
    /// f32 lanes per vector.
    const WIDTH: usize;
    /// Vector registers of the tier (each holds one vector).
    const REGISTERS: usize;
    type V: Copy;
    unsafe fn zero() -> Self::V;
    unsafe fn splat(x: f32) -> Self::V;
    /// `WIDTH` floats from `p`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// `n < WIDTH` floats from `p`, zero in the other lanes.
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V;
    /// `a·b + c`, rounded once where the tier has FMA (twice on [`Portable`]).
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// `p[..n] += v[..n]`, `n <= WIDTH`.
    unsafe fn add_to(p: *mut f32, v: Self::V, n: usize);
    /// The lanes, summed in f64 (exactly, for up to 2^29 lanes of f32 values of one
    /// binade; in any case with error below 2^-52 relative to the sum of their magnitudes).
    unsafe fn sum(v: Self::V) -> f64;
}

/// Shared by every tier: the lanes through memory.
#[inline(always)]
fn lanes_to_f64<const W: usize>(lanes: &[f32; W]) -> f64 {
    lanes.iter().map(|&x| x as f64).sum()
}

/// The portable tier's vector: 8 f32s that the compiler keeps in whatever registers the
/// target has (two SSE registers on x86-64), multiply then add (no FMA).
pub struct Portable;

impl Lanes for Portable {
    const WIDTH: usize = 8;
    const REGISTERS: usize = 8;
    type V = [f32; 8];
    #[inline(always)]
    unsafe fn zero() -> [f32; 8] {
        [0.0; 8]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 8] {
        [x; 8]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 8] {
        std::ptr::read_unaligned(p as *const [f32; 8])
    }
    #[inline(always)]
    unsafe fn load_partial(p: *const f32, n: usize) -> [f32; 8] {
        let mut v = [0.0; 8];
        std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), n);
        v
    }
    #[inline(always)]
    unsafe fn mul_add(a: [f32; 8], b: [f32; 8], c: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] * b[i] + c[i])
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 8], b: [f32; 8]) -> [f32; 8] {
        std::array::from_fn(|i| a[i] + b[i])
    }
    #[inline(always)]
    unsafe fn add_to(p: *mut f32, v: [f32; 8], n: usize) {
        let dst = std::slice::from_raw_parts_mut(p, n);
        dst.iter_mut().zip(v).for_each(|(d, x)| *d += x);
    }
    #[inline(always)]
    unsafe fn sum(v: [f32; 8]) -> f64 {
        lanes_to_f64(&v)
    }
}

/// AVX2 + FMA: 8 lanes in a ymm register.
#[cfg(target_arch = "x86_64")]
pub struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx2 {
    const WIDTH: usize = 8;
    const REGISTERS: usize = 16;
    type V = std::arch::x86_64::__m256;
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn zero() -> Self::V {
        std::arch::x86_64::_mm256_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::x86_64::_mm256_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::x86_64::_mm256_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        Self::load(Portable::load_partial(p, n).as_ptr())
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::x86_64::_mm256_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::arch::x86_64::_mm256_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_to(p: *mut f32, v: Self::V, n: usize) {
        use std::arch::x86_64::*;
        if n == 8 {
            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v));
        } else {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            Portable::add_to(p, lanes, n);
        }
    }
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn sum(v: Self::V) -> f64 {
        use std::arch::x86_64::*;
        // Widen to f64 in registers: 4 + 4 lanes, then a horizontal sum.
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
        let s = _mm256_add_pd(lo, hi);
        let s = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd(s, 1));
        _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
    }
}

/// AVX-512F: 16 lanes in a zmm register, masked partial loads and stores.
#[cfg(target_arch = "x86_64")]
pub struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Lanes for Avx512 {
    const WIDTH: usize = 16;
    const REGISTERS: usize = 32;
    type V = std::arch::x86_64::__m512;
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn zero() -> Self::V {
        std::arch::x86_64::_mm512_setzero_ps()
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn splat(x: f32) -> Self::V {
        std::arch::x86_64::_mm512_set1_ps(x)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(p: *const f32) -> Self::V {
        std::arch::x86_64::_mm512_loadu_ps(p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load_partial(p: *const f32, n: usize) -> Self::V {
        std::arch::x86_64::_mm512_maskz_loadu_ps(((1u32 << n) - 1) as u16, p)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_add(a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        std::arch::x86_64::_mm512_fmadd_ps(a, b, c)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V {
        std::arch::x86_64::_mm512_add_ps(a, b)
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn add_to(p: *mut f32, v: Self::V, n: usize) {
        use std::arch::x86_64::*;
        let mask = ((1u32 << n) - 1) as u16;
        let c = _mm512_maskz_loadu_ps(mask, p);
        _mm512_mask_storeu_ps(p, mask, _mm512_add_ps(c, v));
    }
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn sum(v: Self::V) -> f64 {
        use std::arch::x86_64::*;
        let lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        let hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
            _mm512_castps_pd(v),
            1,
        )));
        _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
    }
}

/// Defines a function whose body is compiled once per [`Tier`] (with that tier's target
/// features, so the compiler vectorises plain loops to its width) and called through the
/// copy of the current [`tier`]. With `where L: Lanes` after the signature, the body is
/// generic over `L`, the tier's explicit [`Lanes`]. `unsafe fn` is kept unsafe.
///
/// ```
/// airrep_core::simd_fn! {
///     /// Σ x, 8 lanes at a time.
///     pub fn total(x: &[f32]) -> f64 where L: Lanes {
///         let mut acc = unsafe { L::zero() };
///         let chunks = x.chunks_exact(L::WIDTH);
///         let tail: f64 = chunks.remainder().iter().map(|&v| v as f64).sum();
///         for c in chunks {
///             // SAFETY: this copy runs on the tier of L; c has WIDTH floats.
///             acc = unsafe { L::add(acc, L::load(c.as_ptr())) };
///         }
///         // SAFETY: as above.
///         let sum = unsafe { L::sum(acc) };
///         sum + tail
///     }
/// }
/// assert_eq!(total(&[1.0; 37]), 37.0);
/// ```
#[macro_export]
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? where $l:ident: Lanes $body:block) => {
        $crate::simd_fn!(@emit [$(#[$meta])*] [$vis] [unsafe] $name [$($arg: $ty),*] [$($ret)?] $l $body);
    };
    ($(#[$meta:meta])* $vis:vis unsafe fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd_fn!(@emit [$(#[$meta])*] [$vis] [unsafe] $name [$($arg: $ty),*] [$($ret)?] __Lanes $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? where $l:ident: Lanes $body:block) => {
        $crate::simd_fn!(@emit [$(#[$meta])*] [$vis] [] $name [$($arg: $ty),*] [$($ret)?] $l $body);
    };
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $crate::simd_fn!(@emit [$(#[$meta])*] [$vis] [] $name [$($arg: $ty),*] [$($ret)?] __Lanes $body);
    };
    (@emit [$($meta:tt)*] [$vis:vis] [$($unsafe:tt)?] $name:ident [$($arg:ident: $ty:ty),*] [$($ret:ty)?] $l:ident $body:block) => {
        $($meta)*
        #[allow(unused_unsafe)]
        $vis $($unsafe)? fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused_unsafe, clippy::missing_safety_doc, clippy::extra_unused_type_parameters)]
            $($unsafe)? fn generic<$l: $crate::simd::Lanes>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                $($unsafe)? fn avx512($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: as the caller of the function defined.
                    unsafe { generic::<$crate::simd::Avx512>($($arg),*) }
                }
                #[target_feature(enable = "avx2,fma")]
                $($unsafe)? fn avx2($($arg: $ty),*) $(-> $ret)? {
                    // SAFETY: as the caller of the function defined.
                    unsafe { generic::<$crate::simd::Avx2>($($arg),*) }
                }
                match $crate::simd::tier() {
                    // SAFETY: `tier` is always a tier this CPU supports.
                    $crate::simd::Tier::Avx512 => return unsafe { avx512($($arg),*) },
                    $crate::simd::Tier::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Tier::Portable => {}
                }
            }
            // SAFETY: as the caller of the function defined; portable lanes run anywhere.
            unsafe { generic::<$crate::simd::Portable>($($arg),*) }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_unsupported_tiers_are_refused() {
        assert_eq!(parse_setting("auto"), Ok(None));
        assert_eq!(parse_setting("AVX2"), Ok(Some(Tier::Avx2)));
        assert_eq!(parse_setting("portable"), Ok(Some(Tier::Portable)));
        assert!(parse_setting("sse").is_err());
        assert!(Tier::Portable.supported());
        assert_eq!(Tier::available().last(), Some(&Tier::best()));
        for t in Tier::ALL {
            let got = with_tier(t, tier);
            if t.supported() {
                assert_eq!(got, Ok(t));
            } else {
                let err = got.unwrap_err();
                assert!(err.to_string().contains("it supports"), "{err}");
            }
        }
    }

    simd_fn! {
        /// A lane-generic kernel with a partial tail, on every tier.
        fn weighted(x: &[f32], w: f32) -> f64 where L: Lanes {
            let chunks = x.chunks_exact(L::WIDTH);
            let tail = chunks.remainder();
            // SAFETY: this copy runs on L's tier; the pointers cover the floats read.
            unsafe {
                let (mut acc, ws) = (L::zero(), L::splat(w));
                for c in chunks {
                    acc = L::mul_add(L::load(c.as_ptr()), ws, acc);
                }
                let t = L::load_partial(tail.as_ptr(), tail.len());
                let mut out = [0f32; 16];
                L::add_to(out.as_mut_ptr(), L::mul_add(t, ws, L::zero()), tail.len());
                L::sum(acc) + out.iter().map(|&v| v as f64).sum::<f64>()
            }
        }
    }

    #[test]
    fn every_tier_computes_the_same_exact_sum() {
        let x: Vec<f32> = (0..53).map(|i| i as f32).collect();
        for t in Tier::available() {
            assert_eq!(with_tier(t, || weighted(&x, 2.0)), Ok(53.0 * 52.0), "{t}");
        }
    }
}
