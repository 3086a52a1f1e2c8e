//! The AirRep encoder (Sun et al., NeurIPS 2025) on candle: a BERT encoder with mean
//! pooling and a learned projector, loaded from bytes so models can live in tables.

pub mod bert;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod encoder;
pub mod error;
mod kernels;
pub mod pooling;
mod rng;
pub mod search;
pub mod tokenize;
pub mod train;
pub mod trainable;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use bert::{Kernels, ReferenceModel};
pub use checkpoint::Checkpoint;
pub use config::BertConfig;
pub use device::{DeviceSpec, Precision};
pub use encoder::{format_pair, Encoder, EncoderOptions};
pub use error::{Error, Result};
pub use kernels::Product;
pub use pooling::{ResponseWeighting, AUTO_RESPONSE_WEIGHTS, RESPONSE_MARKER};
pub use rng::SplitMix64;
pub use search::{unit_rows, Queries, TopKSearch};
pub use tokenize::{TextTokenizer, TokenBatch, DEFAULT_MAX_LENGTH};
pub use train::{
    Depth, Kept, Progress, ProjectorInit, ResponseWeight, StartChoice, StartPoint, StartScore,
    StepLog, TrainData, TrainLayers, TrainOptions, Trainer, UnitScale, Validation,
    AUTO_UNIT_SCALES,
};
pub use trainable::TrainableModel;
