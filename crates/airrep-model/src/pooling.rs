//! Mean pooling, with the response optionally weighted (DESIGN 1).
//!
//! AirRep pools a text's token states into one vector by their mean. Its labels, though,
//! are losses on response tokens, and what a training pair teaches is mostly in its
//! response, while a plain mean weighs the question and the answer alike. A text in the
//! AirRep template ([`crate::format_pair`]: "Question: …\nAnswer: …") marks where its
//! response starts, so a model may weight the tokens after the template's last marker:
//!
//! ```text
//! pooled = Σ_t w_t·h_t / Σ_t w_t,   w_t = weight after the last marker, 1 before it, 0 on padding
//! ```
//!
//! A text without the marker (not in the template, or cut before it) is pooled by its plain
//! mean, and weight 1 is the plain mean for every text. On the benchmark's FOLDOC label set
//! the default trained model went from LDS 24.2 to 37.2 with the response weighted (above
//! the 384-dimensional gradient dot product, 35.9), on the lexicon from 25.3 to 29.4
//! (docs/training.md); training scores several weights with the start's other choices.
//!
//! The weights are exact small numbers (1, the weight, 0), so a weighted mean differs
//! from the reference `Σ w·h / Σ w` in f64 by f32 summation rounding only (relative
//! error about `seq · 2⁻²⁴`).

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

/// The text that marks where the response starts in [`crate::format_pair`]'s template.
pub const RESPONSE_MARKER: &str = "Answer:";

/// The weights `response_weight` 'auto' scores, when some text has a response: from the
/// plain mean (last, so it wins ties) to the response counted 20 times. On both benchmark
/// label sets the trained LDS rose with the weight up to 10-20 and fell with the response
/// alone (FOLDOC 24.2 at 1, 34.4 at 3, 37.1 at 10, 37.2 at 20, 36.4 at 1000; lexicon 25.3,
/// 28.4, 29.3, 29.4, 28.5), and 'auto' kept 20 on both: docs/training.md. The grid is
/// wide because the best weight depends on how long prompts are against responses.
pub const AUTO_RESPONSE_WEIGHTS: [f32; 8] = [1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 20.0, 1.0];

/// Response tokens weighted in a model's pooling (recorded in its config.json as
/// `response_weighting`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseWeighting {
    /// The token ids of [`RESPONSE_MARKER`] in the model's vocabulary.
    pub marker: Vec<u32>,
    /// The weight of a response token, the others' being 1: positive and finite.
    pub weight: f32,
}

impl ResponseWeighting {
    /// Checks the weighting against a vocabulary of `vocab_size` ids.
    pub fn check(&self, vocab_size: usize) -> Result<()> {
        if self.marker.is_empty() {
            return Err(Error::Config("response_weighting.marker is empty".into()));
        }
        if let Some(id) = self.marker.iter().find(|&&id| id as usize >= vocab_size) {
            return Err(Error::Config(format!(
                "response_weighting.marker holds token id {id}, beyond the vocabulary of {vocab_size}"
            )));
        }
        if !(self.weight.is_finite() && self.weight > 0.0) {
            return Err(Error::Config(format!(
                "response_weighting.weight must be a positive number, got {}",
                self.weight
            )));
        }
        Ok(())
    }
}

/// The token ids of [`RESPONSE_MARKER`] for `tokenizer`, without special tokens.
pub fn response_marker(tokenizer: &TextTokenizer) -> Result<Vec<u32>> {
    let marker = tokenizer.pieces(RESPONSE_MARKER)?;
    if marker.is_empty() {
        return Err(Error::Config(format!(
            "the tokenizer maps {RESPONSE_MARKER:?} to no tokens"
        )));
    }
    Ok(marker)
}

/// The position of the first token after the last `marker` in `ids`, None when `marker`
/// does not occur.
pub fn response_start(ids: &[u32], marker: &[u32]) -> Option<usize> {
    if marker.is_empty() || marker.len() > ids.len() {
        return None;
    }
    (0..=ids.len() - marker.len())
        .rev()
        .find(|&at| &ids[at..at + marker.len()] == marker)
        .map(|at| at + marker.len())
}

/// The pooling weight of each of `ids` (one text's real tokens): 1, and `weighting`'s
/// weight after its marker.
pub fn token_weights(ids: &[u32], weighting: Option<&ResponseWeighting>) -> Vec<f32> {
    let mut weights = vec![1.0; ids.len()];
    if let Some(w) = weighting {
        if let Some(start) = response_start(ids, &w.marker) {
            weights[start..].fill(w.weight);
        }
    }
    weights
}

/// Pooling weights `[batch, seq]` f32 of a right-padded batch: [`token_weights`] on each
/// row's real tokens (`attention_mask` 1), 0 on padding.
pub fn pool_weights(
    input_ids: &Tensor,
    attention_mask: &Tensor,
    weighting: Option<&ResponseWeighting>,
) -> Result<Tensor> {
    match weighting {
        None => Ok(attention_mask.to_dtype(DType::F32)?),
        Some(w) => per_real_token(input_ids, attention_mask, |ids| token_weights(ids, Some(w))),
    }
}

/// `[batch, seq]` f32 of a right-padded batch: 1 on each row's response tokens (after the
/// last `marker`), 0 elsewhere.
pub fn response_mask(
    input_ids: &Tensor,
    attention_mask: &Tensor,
    marker: &[u32],
) -> Result<Tensor> {
    per_real_token(input_ids, attention_mask, |ids| {
        let start = response_start(ids, marker).unwrap_or(ids.len());
        (0..ids.len())
            .map(|t| if t < start { 0.0 } else { 1.0 })
            .collect()
    })
}

/// `[batch, seq]` f32: `value(real ids)` on each row's real tokens, 0 on padding.
fn per_real_token(
    input_ids: &Tensor,
    attention_mask: &Tensor,
    value: impl Fn(&[u32]) -> Vec<f32>,
) -> Result<Tensor> {
    let (batch, seq) = input_ids.dims2()?;
    let ids = input_ids.to_vec2::<u32>()?;
    let real = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut out = Vec::with_capacity(batch * seq);
    for (row, real) in ids.iter().zip(&real) {
        let len = real.iter().take_while(|&&m| m > 0.0).count();
        out.extend(value(&row[..len]));
        out.extend(std::iter::repeat_n(0.0, seq - len));
    }
    Ok(Tensor::from_vec(out, (batch, seq), input_ids.device())?)
}

/// `Σ_t w_t·h_t` over the tokens: `hidden` `[batch, seq, hidden]` (any float dtype) and
/// `weights` `[batch, seq]` f32 → `[batch, hidden]` f32. Pooling accumulates in f32 even
/// when the layers ran in bf16.
pub(crate) fn weighted_sum(hidden: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    hidden
        .to_dtype(DType::F32)?
        .broadcast_mul(&weights.unsqueeze(2)?)?
        .sum(1)
}

/// `Σ_t w_t·h_t / Σ_t w_t`, as [`weighted_sum`].
pub(crate) fn weighted_mean(hidden: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    weighted_sum(hidden, weights)?.broadcast_div(&weights.sum_keepdim(1)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::testing::golden_dir;
    use crate::tokenize::DEFAULT_MAX_LENGTH;

    #[test]
    fn the_response_starts_after_the_last_marker() {
        assert_eq!(response_start(&[5, 1, 2, 7, 1, 2, 9, 3], &[1, 2]), Some(6));
        assert_eq!(response_start(&[1, 2], &[1, 2]), Some(2));
        assert_eq!(response_start(&[5, 1, 7, 2], &[1, 2]), None);
        assert_eq!(response_start(&[1], &[1, 2]), None);
        assert_eq!(response_start(&[1, 2], &[]), None);
    }

    #[test]
    fn the_template_marks_its_response_in_a_real_vocabulary() {
        let dir = golden_dir("tiny-airrep");
        let json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let tokenizer = TextTokenizer::from_bytes(&json, DEFAULT_MAX_LENGTH).unwrap();
        let marker = response_marker(&tokenizer).unwrap();
        let text = crate::format_pair("what does answer: mean here?", "a reply");
        let ids = tokenizer.encode(&text).unwrap();
        let reply = tokenizer.pieces("a reply").unwrap();
        let start = response_start(&ids, &marker).unwrap();
        // The response, then [SEP]: the marker inside the question is not the last.
        assert_eq!(&ids[start..start + reply.len()], reply.as_slice());
        assert_eq!(start + reply.len() + 1, ids.len());
    }

    /// The weighted mean against `Σ w·h / Σ w` in f64 on a padded batch: one row in the
    /// template, one without its marker (a plain mean), one shorter (padding weighs 0).
    #[test]
    fn weighted_mean_matches_a_brute_force_sum() {
        let weighting = ResponseWeighting {
            marker: vec![7, 8],
            weight: 2.5,
        };
        let rows: [&[u32]; 3] = [&[1, 7, 8, 4, 5, 2], &[1, 4, 4, 6, 5, 2], &[1, 7, 8, 9]];
        let seq = 6;
        let hidden_size = 3;
        let value = |b: usize, t: usize, j: usize| ((b * 31 + t * 7 + j * 3) % 11) as f64 - 5.0;
        let ids: Vec<u32> = rows
            .iter()
            .flat_map(|r| r.iter().copied().chain(std::iter::repeat(0)).take(seq))
            .collect();
        let mask: Vec<f32> = rows
            .iter()
            .flat_map(|r| (0..seq).map(|t| if t < r.len() { 1.0 } else { 0.0 }))
            .collect();
        let hidden: Vec<f32> = (0..rows.len())
            .flat_map(|b| {
                (0..seq).flat_map(move |t| (0..hidden_size).map(move |j| value(b, t, j) as f32))
            })
            .collect();
        let device = Device::Cpu;
        let ids = Tensor::from_vec(ids, (rows.len(), seq), &device).unwrap();
        let mask = Tensor::from_vec(mask, (rows.len(), seq), &device).unwrap();
        let hidden = Tensor::from_vec(hidden, (rows.len(), seq, hidden_size), &device).unwrap();
        let weights = pool_weights(&ids, &mask, Some(&weighting)).unwrap();
        let pooled = weighted_mean(&hidden, &weights)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let expected_weights: [&[f64]; 3] = [
            &[1.0, 1.0, 1.0, 2.5, 2.5, 2.5],
            &[1.0; 6],
            &[1.0, 1.0, 1.0, 2.5, 0.0, 0.0],
        ];
        for (b, w) in expected_weights.iter().enumerate() {
            for j in 0..hidden_size {
                let want =
                    (0..seq).map(|t| w[t] * value(b, t, j)).sum::<f64>() / w.iter().sum::<f64>();
                assert!(
                    (f64::from(pooled[b][j]) - want).abs() < 1e-6,
                    "row {b}: {pooled:?}"
                );
            }
        }
        // Without a weighting the weights are the mask: the plain mean.
        let plain = pool_weights(&ids, &mask, None).unwrap();
        assert_eq!(
            plain.to_vec2::<f32>().unwrap(),
            mask.to_vec2::<f32>().unwrap()
        );
    }

    #[test]
    fn a_weighting_is_checked_against_the_vocabulary() {
        let ok = ResponseWeighting {
            marker: vec![3, 4],
            weight: 2.0,
        };
        ok.check(10).unwrap();
        let beyond = ResponseWeighting {
            marker: vec![3, 10],
            ..ok.clone()
        };
        assert!(beyond
            .check(10)
            .unwrap_err()
            .to_string()
            .contains("token id 10"));
        for weight in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let bad = ResponseWeighting {
                weight,
                ..ok.clone()
            };
            assert!(bad.check(10).unwrap_err().to_string().contains("positive"));
        }
        let empty = ResponseWeighting {
            marker: vec![],
            ..ok
        };
        assert!(empty.check(10).is_err());
    }
}
