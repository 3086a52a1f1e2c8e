//! WordPiece tokenisation with AirRep's own truncation and padding.
//!
//! A tokenizer.json may carry its own settings (MiniLM's truncate and pad to a fixed
//! 128); they are replaced: truncate on the right at `max_length` keeping [CLS] and
//! [SEP], and pad each batch only to its longest member.
//!
//! Only the first `max_length x` [`CHARS_PER_TOKEN`] characters of a text are tokenised:
//! every WordPiece token but [UNK] covers at most 100 characters (BERT's
//! `max_input_chars_per_word`), so the kept tokens are unchanged for any text whose words
//! are at most that long, and a 40 MB text costs what 51 KB does.

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::config::BertConfig;
use crate::error::{Error, Result};

pub const DEFAULT_MAX_LENGTH: usize = 512;
/// Characters read per token of `max_length` (see the module docs).
pub const CHARS_PER_TOKEN: usize = 100;

/// `rows` in consecutive chunks of at most `max_rows` texts and, beyond one text, at most
/// `max_tokens` padded tokens (texts times the longest of them); `length(row)` is a text's
/// length in tokens. A chunk is one forward pass, the unit between cancel checks: the
/// token budget keeps a pass of long texts as short as one of typical texts.
pub fn token_chunks(
    rows: &[usize],
    length: impl Fn(usize) -> usize,
    max_rows: usize,
    max_tokens: usize,
) -> Vec<&[usize]> {
    let mut chunks = Vec::new();
    let (mut start, mut longest) = (0, 0);
    for (end, &row) in rows.iter().enumerate() {
        let len = length(row).max(longest);
        let count = end - start;
        if count > 0 && (count == max_rows || (count + 1) * len > max_tokens) {
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

pub struct TextTokenizer {
    inner: Tokenizer,
    pad_id: u32,
    max_length: usize,
}

/// Token ids of several texts, right-padded to a common length.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// Row-major `[batch, seq_len]`.
    pub ids: Vec<u32>,
    /// Number of real (non-padding) tokens of each text.
    pub lengths: Vec<usize>,
    pub seq_len: usize,
}

impl TextTokenizer {
    /// [`TextTokenizer::from_bytes`] for a model with `config`: `max_length` within its
    /// position embeddings, every token id within its vocabulary.
    pub fn for_model(
        tokenizer_json: &[u8],
        max_length: usize,
        config: &BertConfig,
    ) -> Result<Self> {
        if max_length > config.max_position_embeddings {
            return Err(Error::Input(format!(
                "max_length {max_length} exceeds the model's max_position_embeddings {}",
                config.max_position_embeddings
            )));
        }
        let tokenizer = Self::from_bytes(tokenizer_json, max_length)?;
        if tokenizer.vocab_size() > config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "tokenizer has {} tokens but the model's vocab_size is {}",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        // A sparse vocabulary can be small and still name ids past the embedding table.
        let vocab = tokenizer.inner.get_vocab(true);
        if let Some((token, &id)) = vocab.iter().max_by_key(|(_, &id)| id) {
            if id as usize >= config.vocab_size {
                return Err(Error::Tokenizer(format!(
                    "token {token:?} has id {id}, outside the model's vocab_size {}",
                    config.vocab_size
                )));
            }
        }
        Ok(tokenizer)
    }

    pub fn from_bytes(tokenizer_json: &[u8], max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(Error::Input(format!(
                "max_length {max_length} leaves no room for [CLS] and [SEP]"
            )));
        }
        let mut inner = Tokenizer::from_bytes(tokenizer_json)
            .map_err(|e| Error::Tokenizer(format!("cannot load tokenizer.json: {e}")))?;
        // Padding is ours (batch-longest, see `TokenBatch::new`); the file's pad token only
        // supplies the id, which attention never sees.
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                direction: TruncationDirection::Right,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| Error::Tokenizer(format!("setting truncation: {e}")))?;
        Ok(Self {
            inner,
            pad_id,
            max_length,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Vocabulary size including added tokens: every id produced is below it.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The part of `text` that is tokenised (see the module docs).
    fn head<'t>(&self, text: &'t str) -> &'t str {
        let limit = self.max_length * CHARS_PER_TOKEN;
        text.char_indices()
            .nth(limit)
            .map_or(text, |(end, _)| &text[..end])
    }

    /// Token ids with [CLS] and [SEP], truncated.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, true)
    }

    /// Token ids of a short piece of text, without [CLS] and [SEP]: how it appears inside
    /// an encoded text (after whitespace, as every piece split off by the pre-tokeniser).
    pub fn pieces(&self, text: &str) -> Result<Vec<u32>> {
        self.ids(text, false)
    }

    fn ids(&self, text: &str, special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(self.head(text), special_tokens)
            .map_err(|e| Error::Tokenizer(format!("encoding text: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of many texts (in parallel on the current rayon pool), unpadded.
    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let heads: Vec<&str> = texts.iter().map(|t| self.head(t)).collect();
        let encodings = self
            .inner
            .encode_batch(heads, true)
            .map_err(|e| Error::Tokenizer(format!("encoding texts: {e}")))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    pub fn batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let ids = self.encode_all(texts)?;
        Ok(TokenBatch::new(
            &ids.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            self.pad_id,
        ))
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
}

impl TokenBatch {
    pub fn new(sequences: &[&[u32]], pad_id: u32) -> Self {
        let seq_len = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len() * seq_len);
        for seq in sequences {
            ids.extend_from_slice(seq);
            ids.extend(std::iter::repeat_n(pad_id, seq_len - seq.len()));
        }
        let lengths = sequences.iter().map(|s| s.len()).collect();
        Self {
            ids,
            lengths,
            seq_len,
        }
    }

    pub fn batch_size(&self) -> usize {
        self.lengths.len()
    }

    /// `(input_ids u32 [batch, seq_len], attention_mask f32 [batch, seq_len])`.
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let shape = (self.batch_size(), self.seq_len);
        let ids = Tensor::from_slice(&self.ids, shape, device)?;
        let mask: Vec<f32> = self
            .lengths
            .iter()
            .flat_map(|&len| (0..self.seq_len).map(move |pos| if pos < len { 1.0 } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, shape, device)?;
        Ok((ids, mask))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{golden_dir, Golden};

    fn texts(lengths: &[usize]) -> Vec<Vec<u32>> {
        lengths.iter().map(|&n| vec![1; n]).collect()
    }

    #[test]
    fn chunks_hold_at_most_max_rows_texts_and_the_token_budget() {
        let rows: Vec<usize> = (0..40).collect();
        let sizes = |ids: &[Vec<u32>], chunk_rows| -> Vec<usize> {
            token_chunks(&rows, |r| ids[r].len(), chunk_rows, 32 * 128)
                .iter()
                .map(|c| c.len())
                .collect()
        };
        // Texts of 128 tokens: the row count decides.
        assert_eq!(sizes(&texts(&[128; 40]), 32), vec![32, 8]);
        // Texts of 512 tokens: 8 per pass.
        assert_eq!(sizes(&texts(&[512; 40]), 32), vec![8; 5]);
        // One long text goes alone, and the short ones around it fill chunks again.
        let mut lengths = vec![10; 40];
        lengths[5] = 5000;
        assert_eq!(sizes(&texts(&lengths), 32), vec![5, 1, 32, 2]);
        // Every row once, in order, whatever the lengths.
        let mixed = texts(&(0..40).map(|i| 1 + (i * 37) % 700).collect::<Vec<_>>());
        let chunks = token_chunks(&rows, |r| mixed[r].len(), 16, 32 * 128);
        assert_eq!(chunks.concat(), rows);
        for chunk in chunks {
            let longest = chunk.iter().map(|&r| mixed[r].len()).max().unwrap();
            assert!(chunk.len() <= 16);
            assert!(chunk.len() == 1 || chunk.len() * longest <= 32 * 128);
        }
    }

    fn tiny_tokenizer(max_length: usize) -> TextTokenizer {
        let bytes = std::fs::read(golden_dir("tiny-airrep").join("tokenizer.json")).unwrap();
        TextTokenizer::from_bytes(&bytes, max_length).unwrap()
    }

    #[test]
    fn token_ids_match_golden() {
        let golden = Golden::load();
        let tokenizer = tiny_tokenizer(DEFAULT_MAX_LENGTH);
        for (i, text) in golden.texts.iter().enumerate() {
            assert_eq!(
                tokenizer.encode(text).unwrap(),
                golden.token_ids[i],
                "text {i}: {text:?}"
            );
        }
        let texts: Vec<&str> = golden.texts.iter().map(String::as_str).collect();
        assert_eq!(tokenizer.encode_all(&texts).unwrap(), golden.token_ids);
    }

    #[test]
    fn ids_outside_the_model_vocabulary_are_rejected() {
        let dir = golden_dir("tiny-airrep");
        let config =
            BertConfig::from_json(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        let bytes = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        // same number of tokens, one of them renumbered past the embedding table
        json["model"]["vocab"]["[unused0]"] = serde_json::json!(config.vocab_size + 7);
        let sparse = serde_json::to_vec(&json).unwrap();
        let err = TextTokenizer::for_model(&sparse, 16, &config)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("outside the model's vocab_size"), "{err}");
        assert!(TextTokenizer::for_model(&bytes, 16, &config).is_ok());
    }

    #[test]
    fn only_the_head_of_a_huge_text_is_read() {
        let tokenizer = tiny_tokenizer(DEFAULT_MAX_LENGTH);
        // 12 MB of text gives the same 512 ids as the few KB that reach the limit.
        let huge = "hello, world ".repeat(1_000_000);
        let enough = "hello, world ".repeat(300);
        let got = tokenizer
            .encode_all(&[huge.as_str(), enough.as_str()])
            .unwrap();
        assert_eq!(got[0].len(), DEFAULT_MAX_LENGTH);
        assert_eq!(got[0], got[1]);
        assert_eq!(tokenizer.encode(&huge).unwrap(), got[0]);
    }

    #[test]
    fn truncation_keeps_sep_and_padding_is_batch_longest() {
        let tokenizer = tiny_tokenizer(8);
        let long = tokenizer
            .encode("one two three four five six seven eight nine ten")
            .unwrap();
        assert_eq!(long.len(), 8);
        assert_eq!(long.last(), tokenizer.encode("").unwrap().last()); // [SEP]

        let batch = tokenizer.batch(&["a b", ""]).unwrap();
        assert_eq!((batch.seq_len, batch.lengths.clone()), (4, vec![4, 2]));
        assert_eq!(batch.ids[6..], [tokenizer.pad_id(); 2]);
    }

    #[test]
    fn rejects_max_length_without_room_for_special_tokens() {
        let bytes = std::fs::read(golden_dir("tiny-airrep").join("tokenizer.json")).unwrap();
        assert!(TextTokenizer::from_bytes(&bytes, 1).is_err());
    }
}
