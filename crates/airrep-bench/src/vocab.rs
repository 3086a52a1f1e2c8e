//! What the benchmark's LM reads: characters (the lexical case) or WordPiece subwords (the
//! paper's setting: a subword LM whose gradients carry meaning, not spelling).
//!
//! Id 0 starts every sequence and pads in both. Characters: printable ASCII 32..=126 and
//! '\n' follow (97 ids). Subwords: the uncased BERT WordPiece of the encoder (the golden
//! tokenizer.json, the same vocabulary as MiniLM's), restricted to the `cap - 2` pieces most
//! frequent in the benchmark's own text and renumbered densely after 0 (start) and 1
//! (a piece outside the kept ones). The restriction keeps the LM's output layer small
//! without changing how any text is split.

use crate::data::Pair;
use airrep_model::TextTokenizer;
use std::collections::HashMap;

/// The uncased BERT tokenizer shipped with the golden checkpoint.
const WORDPIECE_JSON: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/golden/tiny-airrep/tokenizer.json"
);

const START: u32 = 0;
const OUTSIDE: u32 = 1;

pub enum Vocab {
    Chars,
    Subwords {
        tokenizer: Box<TextTokenizer>,
        /// WordPiece id -> dense id (2..)
        dense: HashMap<u32, u32>,
    },
}

impl Vocab {
    /// The `cap` most frequent WordPiece pieces of `texts` (ties to the smaller id).
    pub fn subwords<'a>(texts: impl Iterator<Item = &'a str>, cap: usize) -> std::io::Result<Self> {
        let json = std::fs::read(WORDPIECE_JSON)?;
        let tokenizer = TextTokenizer::from_bytes(&json, 4096).map_err(std::io::Error::other)?;
        let mut counts: HashMap<u32, usize> = HashMap::new();
        for text in texts {
            for id in wordpiece(&tokenizer, text)? {
                *counts.entry(id).or_default() += 1;
            }
        }
        let mut ranked: Vec<(u32, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let dense = ranked
            .iter()
            .take(cap.saturating_sub(2))
            .enumerate()
            .map(|(i, &(id, _))| (id, i as u32 + 2))
            .collect();
        Ok(Vocab::Subwords {
            tokenizer: Box::new(tokenizer),
            dense,
        })
    }

    pub fn size(&self) -> usize {
        match self {
            Vocab::Chars => 97,
            Vocab::Subwords { dense, .. } => dense.len() + 2,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Vocab::Chars => "characters",
            Vocab::Subwords { .. } => "WordPiece subwords",
        }
    }

    /// The start token, then `text`'s tokens.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![START];
        self.append(text, &mut ids);
        ids
    }

    fn append(&self, text: &str, ids: &mut Vec<u32>) {
        match self {
            Vocab::Chars => ids.extend(text.bytes().map(|b| {
                if b == b'\n' {
                    96
                } else {
                    (b.clamp(32, 126) - 31) as u32
                }
            })),
            // line by line: a line break is whitespace to WordPiece, and a whole corpus in
            // one call would pass the tokenizer's length cap
            Vocab::Subwords { tokenizer, dense } => ids.extend(text.lines().flat_map(|line| {
                wordpiece(tokenizer, line)
                    .expect("the benchmark's text tokenises")
                    .into_iter()
                    .map(|id| dense.get(&id).copied().unwrap_or(OUTSIDE))
            })),
        }
    }

    /// An instruction pair as LM input and the first position whose prediction counts: only
    /// the response's tokens are scored. The prompt part and the response are tokenised
    /// apart, which splits the text exactly as a whole would: "Answer:" ends in punctuation
    /// and the response starts after a space.
    pub fn sft_sequence(&self, pair: &Pair) -> (Vec<u32>, usize) {
        let text = pair.text();
        let (prompt, response) = text.split_at(pair.response_start());
        let mut ids = self.encode(prompt);
        let from = ids.len();
        self.append(response, &mut ids);
        (ids, from)
    }
}

/// WordPiece ids without [CLS] and [SEP].
fn wordpiece(tokenizer: &TextTokenizer, text: &str) -> std::io::Result<Vec<u32>> {
    let ids = tokenizer.encode(text).map_err(std::io::Error::other)?;
    Ok(ids[1..ids.len() - 1].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: &str, response: &str) -> Pair {
        Pair {
            task: "define",
            prompt: prompt.into(),
            response: response.into(),
        }
    }

    #[test]
    fn characters_count_from_the_response() {
        let p = pair("define: cat", "a small feline");
        let (ids, from) = Vocab::Chars.sft_sequence(&p);
        assert_eq!(ids.len(), 1 + p.text().len());
        assert_eq!(ids[from], Vocab::Chars.encode("a")[1]);
        assert_eq!(from, 1 + p.response_start());
    }

    #[test]
    fn subwords_split_as_the_whole_text_and_mark_the_response() {
        let p = pair(
            "define: photosynthesis",
            "the synthesis of compounds by light",
        );
        let vocab = Vocab::subwords([p.text()].iter().map(String::as_str), 1000).unwrap();
        let (ids, from) = vocab.sft_sequence(&p);
        assert_eq!(
            ids,
            vocab.encode(&p.text()),
            "split at the response changes nothing"
        );
        assert_eq!(ids[from..], vocab.encode(&p.response)[1..]);
        assert!(
            ids[1..].iter().all(|&id| id >= 2),
            "every piece is in the vocabulary"
        );
    }

    #[test]
    fn rare_pieces_fall_outside_a_small_vocabulary() {
        let texts = ["the the the cat", "the cat dog"];
        let vocab = Vocab::subwords(texts.iter().copied(), 4).unwrap();
        assert_eq!(vocab.size(), 4);
        // "the" (most frequent) and "cat" (next) are kept, "dog" is not
        assert_eq!(vocab.encode("the cat dog"), [START, 2, 3, OUTSIDE]);
    }
}
