//! What the trainable part of the encoder reads, per text: token ids when every weight
//! trains, or the frozen bottom's outputs, computed once and cached for the whole run.
//!
//! The cache is exact: the frozen layers run the same differentiable kernels as an uncached
//! forward, and padding never reaches a real token (attention masks padded keys, pooling
//! weighs real tokens only, each by its text's own ids), so a cached text's outputs do not
//! depend on its batch.

use candle_core::Tensor;

use super::options::TrainLayers;
use crate::error::Result;
use crate::pooling::token_weights;
use crate::tokenize::{token_chunks, TokenBatch};
use crate::trainable::TrainableModel;

/// Padded tokens per forward pass of the cached or scored texts, beyond which a chunk of
/// `chunk_rows` texts is cut shorter: 32 texts of 128 tokens. A pass is the unit between
/// cancel checks, and 32 texts of 512 tokens took 20 s on 2 cores.
pub(crate) const CHUNK_TOKENS: usize = 32 * 128;

pub(crate) enum Inputs {
    /// Token ids: the whole encoder runs.
    Tokens { ids: Vec<Vec<u32>>, pad_id: u32 },
    /// `[len, hidden]` per text after the frozen layers `0..first_layer`, and each of its
    /// tokens' pooling weight.
    Hidden {
        states: Vec<Tensor>,
        pool_weights: Vec<Vec<f32>>,
        first_layer: usize,
    },
    /// `[texts, hidden]` pooled states before the projector.
    Pooled(Tensor),
}

impl Inputs {
    /// Tokenised texts turned into what `layers` trains on, at most `chunk_rows` texts per
    /// forward pass (fewer when they are long); `check` is polled between passes.
    pub(crate) fn new(
        model: &TrainableModel,
        layers: TrainLayers,
        ids: Vec<Vec<u32>>,
        pad_id: u32,
        chunk_rows: usize,
        check: &dyn Fn() -> Result<()>,
    ) -> Result<Self> {
        let num_layers = model.model().num_layers();
        layers.fits(num_layers)?;
        let frozen_layers = match layers {
            TrainLayers::All => return Ok(Self::Tokens { ids, pad_id }),
            TrainLayers::Projector => num_layers,
            TrainLayers::Top(n) => num_layers - n,
        };
        let mut pooled = Vec::new();
        let mut states = Vec::with_capacity(ids.len());
        let rows: Vec<usize> = (0..ids.len()).collect();
        for chunk in token_chunks(&rows, |r| ids[r].len(), chunk_rows, CHUNK_TOKENS) {
            check()?;
            let (chunk_ids, mask, lengths) = token_batch(model, &ids, pad_id, chunk)?;
            let hidden = model
                .model()
                .hidden_states(&chunk_ids, &mask, frozen_layers)?
                .detach();
            if layers == TrainLayers::Projector {
                let weights = model.model().pool_weights(&chunk_ids, &mask)?;
                pooled.push(
                    model
                        .model()
                        .pool_from_layer(&hidden, &mask, &weights, num_layers)?,
                );
            } else {
                for (row, &len) in lengths.iter().enumerate() {
                    states.push(hidden.get(row)?.narrow(0, 0, len)?.contiguous()?);
                }
            }
        }
        Ok(if layers == TrainLayers::Projector {
            Self::Pooled(Tensor::cat(&pooled, 0)?)
        } else {
            let weighting = model.model().response_weighting();
            Self::Hidden {
                states,
                pool_weights: ids.iter().map(|t| token_weights(t, weighting)).collect(),
                first_layer: frozen_layers,
            }
        })
    }

    /// The length of text `row` in tokens (1 for pooled states): batches of similar
    /// lengths waste less on padding.
    pub(crate) fn cost(&self, row: usize) -> usize {
        match self {
            Self::Tokens { ids, .. } => ids[row].len(),
            Self::Hidden { states, .. } => states[row].dim(0).unwrap_or(0),
            Self::Pooled(_) => 1,
        }
    }

    /// `rows` in chunks of one forward pass each: at most `chunk_rows` texts and the token
    /// budget ([`token_chunks`]); pooled states are small enough to take at once.
    pub(crate) fn chunks<'a>(&self, rows: &'a [usize], chunk_rows: usize) -> Vec<&'a [usize]> {
        match self {
            Self::Pooled(_) => vec![rows],
            _ => token_chunks(rows, |r| self.cost(r), chunk_rows, CHUNK_TOKENS),
        }
    }

    /// Embeddings `[rows, dim]` of the texts `rows`, with the autograd graph of the
    /// trainable part attached.
    pub(crate) fn forward(&self, model: &TrainableModel, rows: &[usize]) -> Result<Tensor> {
        let encoder = model.model();
        let pooled = match self {
            Self::Tokens { ids, pad_id } => {
                let (ids, mask, _) = token_batch(model, ids, *pad_id, rows)?;
                let hidden = encoder.hidden_states(&ids, &mask, encoder.num_layers())?;
                let weights = encoder.pool_weights(&ids, &mask)?;
                encoder.pool_from_layer(&hidden, &mask, &weights, encoder.num_layers())?
            }
            Self::Hidden {
                states,
                pool_weights,
                first_layer,
            } => {
                let lengths = rows
                    .iter()
                    .map(|&r| states[r].dim(0))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let longest = lengths.iter().copied().max().unwrap_or(0);
                let padded = rows
                    .iter()
                    .zip(&lengths)
                    .map(|(&r, &len)| states[r].pad_with_zeros(0, 0, longest - len))
                    .collect::<candle_core::Result<Vec<_>>>()?;
                let hidden = Tensor::stack(&padded, 0)?;
                let weights: Vec<f32> = rows
                    .iter()
                    .flat_map(|&r| {
                        let w = &pool_weights[r];
                        w.iter()
                            .copied()
                            .chain(std::iter::repeat_n(0.0, longest - w.len()))
                    })
                    .collect();
                let weights = Tensor::from_vec(weights, (rows.len(), longest), hidden.device())?;
                // Every real token weighs more than 0 (weights are positive), padding 0.
                let mask = weights.ne(0f32)?.to_dtype(candle_core::DType::F32)?;
                encoder.pool_from_layer(&hidden, &mask, &weights, *first_layer)?
            }
            Self::Pooled(pooled) => {
                let index = Tensor::from_vec(
                    rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
                    rows.len(),
                    pooled.device(),
                )?;
                pooled.index_select(&index, 0)?
            }
        };
        encoder.project(&pooled)
    }
}

/// Ids, mask and lengths of the texts `rows` of `ids`.
pub(crate) fn token_batch(
    model: &TrainableModel,
    ids: &[Vec<u32>],
    pad_id: u32,
    rows: &[usize],
) -> Result<(Tensor, Tensor, Vec<usize>)> {
    let sequences: Vec<&[u32]> = rows.iter().map(|&r| ids[r].as_slice()).collect();
    let lengths = sequences.iter().map(|s| s.len()).collect();
    let (ids, mask) = TokenBatch::new(&sequences, pad_id).to_tensors(model.device())?;
    Ok((ids, mask, lengths))
}
