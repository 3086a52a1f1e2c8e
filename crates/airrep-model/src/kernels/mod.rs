//! Forward-only CPU kernels for the inference path, where candle's generic ops were the
//! bottleneck after matmul. One file per concept:
//!
//! * `math.rs`: vectorised `e^x` and `erf` (relative error ~1e-7) and the row-wise
//!   epilogues (GELU, softmax, layer norm);
//! * `buffers.rs`: borrowed tensor views and the output buffers tasks fill;
//! * `packed.rs`: the packed linear layer and the fused chain of layers;
//! * `amx.rs`: Intel AMX tile products at f32 accuracy for `packed.rs`;
//! * `attention.rs`: multi-head attention over packed q/k/v.
//!
//! Every wide kernel is compiled once per SIMD tier and dispatched through
//! `airrep_core::simd_fn!` (AVX-512, AVX2 + FMA, portable; `airrep_core::simd`).
//! Everything runs on the current rayon pool.

mod amx;
mod attention;
mod buffers;
mod math;
mod packed;

#[cfg(test)]
pub use amx::available as amx_available;
pub use attention::attention;
pub use packed::{feed_forward, linear, Epilogue, PackedLinear, Product};
