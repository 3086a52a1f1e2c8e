//! What the trainable part of the encoder reads, per text: token ids when every weight
//! trains, or the frozen bottom's outputs, computed once and cached for the whole run.
//!
//! The cache is exact: the frozen layers run the same differentiable kernels as an uncached
//! forward, and padding never reaches a real token (attention masks padded keys, pooling
//! averages real tokens only), so a cached text's outputs do not depend on its batch.

use candle_core::Tensor;

use super::options::TrainLayers;
use crate::error::Result;
use crate::tokenize::TokenBatch;
use crate::trainable::TrainableModel;

/// Padded tokens per forward pass of the cached or scored texts, beyond which a chunk of
/// `chunk_rows` texts is cut shorter: 32 texts of 128 tokens. A pass is the unit between
/// cancel checks, and 32 texts of 512 tokens took 20 s on 2 cores.
const CHUNK_TOKENS: usize = 32 * 128;

/// `rows` in consecutive chunks of at most `chunk_rows` texts and, beyond one text, at most
/// [`CHUNK_TOKENS`] padded tokens (texts times the longest of them); `length(row)` is a
/// text's length in tokens.
pub(crate) fn token_chunks(
    rows: &[usize],
    length: impl Fn(usize) -> usize,
    chunk_rows: usize,
) -> Vec<&[usize]> {
    let mut chunks = Vec::new();
    let (mut start, mut longest) = (0, 0);
    for (end, &row) in rows.iter().enumerate() {
        let len = length(row).max(longest);
        let count = end - start;
        if count > 0 && (count == chunk_rows || (count + 1) * len > CHUNK_TOKENS) {
            chunks.push(&rows[start..end]);
            (start, longest) = (end, length(row));
        } else {
            longest = len;
        }
    }
    if start < rows.len() {
        chunks.push(&rows[start..]);
    }
    chunks
}

pub(crate) enum Inputs {
    /// Token ids: the whole encoder runs.
    Tokens { ids: Vec<Vec<u32>>, pad_id: u32 },
    /// `[len, hidden]` per text after the frozen layers `0..first_layer`.
    Hidden {
        states: Vec<Tensor>,
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
        for chunk in token_chunks(&rows, |r| ids[r].len(), chunk_rows) {
            check()?;
            let (chunk_ids, mask, lengths) = token_batch(model, &ids, pad_id, chunk)?;
            let hidden = model
                .model()
                .hidden_states(&chunk_ids, &mask, frozen_layers)?
                .detach();
            if layers == TrainLayers::Projector {
                pooled.push(model.model().pool_from_layer(&hidden, &mask, num_layers)?);
            } else {
                for (row, &len) in lengths.iter().enumerate() {
                    states.push(hidden.get(row)?.narrow(0, 0, len)?.contiguous()?);
                }
            }
        }
        Ok(if layers == TrainLayers::Projector {
            Self::Pooled(Tensor::cat(&pooled, 0)?)
        } else {
            Self::Hidden {
                states,
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
            _ => token_chunks(rows, |r| self.cost(r), chunk_rows),
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
                encoder.pool_from_layer(&hidden, &mask, encoder.num_layers())?
            }
            Self::Hidden {
                states,
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
                let mask: Vec<f32> = lengths
                    .iter()
                    .flat_map(|&len| (0..longest).map(move |pos| if pos < len { 1.0 } else { 0.0 }))
                    .collect();
                let mask = Tensor::from_vec(mask, (rows.len(), longest), hidden.device())?;
                encoder.pool_from_layer(&hidden, &mask, *first_layer)?
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

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lengths: &[usize]) -> Vec<Vec<u32>> {
        lengths.iter().map(|&n| vec![1; n]).collect()
    }

    #[test]
    fn chunks_hold_at_most_chunk_rows_texts_and_the_token_budget() {
        let rows: Vec<usize> = (0..40).collect();
        let sizes = |ids: &[Vec<u32>], chunk_rows| -> Vec<usize> {
            token_chunks(&rows, |r| ids[r].len(), chunk_rows)
                .iter()
                .map(|c| c.len())
                .collect()
        };
        // Texts of 128 tokens: chunk_rows decides, as before there was a budget.
        assert_eq!(sizes(&texts(&[128; 40]), 32), vec![32, 8]);
        // Texts of 512 tokens: 8 per pass.
        assert_eq!(sizes(&texts(&[512; 40]), 32), vec![8; 5]);
        // One long text goes alone, and the short ones around it fill chunks again.
        let mut lengths = vec![10; 40];
        lengths[5] = 5000;
        assert_eq!(sizes(&texts(&lengths), 32), vec![5, 1, 32, 2]);
        // Every row once, in order, whatever the lengths.
        let mixed = texts(&(0..40).map(|i| 1 + (i * 37) % 700).collect::<Vec<_>>());
        let chunks = token_chunks(&rows, |r| mixed[r].len(), 16);
        assert_eq!(chunks.concat(), rows);
        for chunk in chunks {
            let longest = chunk.iter().map(|&r| mixed[r].len()).max().unwrap();
            assert!(chunk.len() <= 16);
            assert!(chunk.len() == 1 || chunk.len() * longest <= CHUNK_TOKENS);
        }
    }
}
