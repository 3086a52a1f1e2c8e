//! The math of AirRep (Sun et al., NeurIPS 2025) without Postgres or a network: the vector
//! value rules, attention-pooled group influence, ranking-loss labels and gradients, LDS,
//! exact top-k and budgeted selection over streamed scores, and the matching and clustering
//! behind contamination and near-duplicate checks.

pub mod clusters;
pub mod group;
pub mod lds;
pub mod ranking;
pub mod select;
pub mod simd;
pub mod sqlstate;
pub mod state;
pub mod text;
pub mod top_k;
pub mod vector;
pub mod wire;
