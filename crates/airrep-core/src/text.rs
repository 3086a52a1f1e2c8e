//! Text matching for contamination checks (`airrep.contamination`): normalised word
//! sequences, their exact keys, and a hashed n-gram index.
//!
//! The caller applies Unicode NFKC and case folding first (Postgres' `normalize` and
//! `lower`, so the database's own Unicode tables decide); [`words`] then collapses
//! whitespace and punctuation: a word is a maximal run of alphanumeric characters.
//!
//! The n-gram rule follows the GPT-3 report's decontamination: a training row contaminates
//! a benchmark item if they share an n-gram of words. A benchmark item shorter than n words
//! contributes its whole word sequence as its one gram, so short items are still caught
//! when a training row contains them. `score` is the share of the item's distinct grams
//! that the row contains. Grams are stored as 64-bit FNV-1a hashes: two different grams
//! collide with probability about 2⁻⁶⁴ per pair.

use std::collections::{HashMap, HashSet};

/// The words of an already case-folded, NFKC-normalised text.
pub fn words(text: &str) -> Vec<&str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect()
}

/// The exact-match key: the words joined by single spaces (empty for a text without words).
pub fn exact_key(text: &str) -> String {
    words(text).join(" ")
}

fn hash_gram(words: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, w) in words.iter().enumerate() {
        // A separator byte that no UTF-8 text contains keeps ["ab","c"] apart from ["a","bc"].
        for b in w.bytes().chain((i + 1 < words.len()).then_some(0xFF)) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Distinct hashed grams of `length` consecutive words (none if there are fewer words).
fn grams<'a>(words: &'a [&'a str], length: usize) -> impl Iterator<Item = u64> + 'a {
    words.windows(length.max(1)).map(hash_gram)
}

/// Benchmark items' n-grams, indexed once; training rows are then matched one at a time.
#[derive(Debug, Default)]
pub struct NgramIndex {
    n: usize,
    /// gram -> the items (indices in insertion order) that contain it
    items_by_gram: HashMap<u64, Vec<u32>>,
    /// distinct grams per item
    gram_counts: Vec<u32>,
    /// gram lengths to look for in a row: n, and the word counts of items shorter than n
    lengths: Vec<usize>,
}

impl NgramIndex {
    /// An empty index of `n`-grams (`n` >= 1).
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "n-grams need n >= 1");
        NgramIndex {
            n,
            lengths: vec![n],
            ..Default::default()
        }
    }

    /// Index an item's text; returns its index. An item without words has no grams.
    pub fn add(&mut self, text: &str) -> usize {
        let item = self.gram_counts.len();
        let words = words(text);
        let length = words.len().min(self.n);
        let distinct: HashSet<u64> = if words.is_empty() {
            HashSet::new()
        } else {
            grams(&words, length).collect()
        };
        if length > 0 && !self.lengths.contains(&length) {
            self.lengths.push(length);
        }
        for &g in &distinct {
            self.items_by_gram.entry(g).or_default().push(item as u32);
        }
        self.gram_counts.push(distinct.len() as u32);
        item
    }

    pub fn len(&self) -> usize {
        self.gram_counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.gram_counts.is_empty()
    }

    /// The items a training text shares at least one gram with, each with the share of
    /// the item's distinct grams found in the text, in item order.
    pub fn matches(&self, text: &str) -> Vec<(usize, f64)> {
        let words = words(text);
        let mut found: HashSet<u64> = HashSet::new();
        for &length in &self.lengths {
            found.extend(grams(&words, length).filter(|g| self.items_by_gram.contains_key(g)));
        }
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for g in found {
            for &item in &self.items_by_gram[&g] {
                *counts.entry(item).or_insert(0) += 1;
            }
        }
        let mut out: Vec<(usize, f64)> = counts
            .into_iter()
            .map(|(item, c)| {
                (
                    item as usize,
                    c as f64 / self.gram_counts[item as usize] as f64,
                )
            })
            .collect();
        out.sort_by_key(|&(item, _)| item);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_collapse_whitespace_and_punctuation() {
        assert_eq!(
            words("  Hello,\tworld!! it's  née-1 "),
            ["Hello", "world", "it", "s", "née", "1"]
        );
        assert_eq!(exact_key("a  b\n\nc."), exact_key("a, b; c"));
        assert_eq!(exact_key("... !!"), "");
    }

    #[test]
    fn gram_hashes_keep_word_boundaries() {
        assert_ne!(hash_gram(&["ab", "c"]), hash_gram(&["a", "bc"]));
        assert_eq!(hash_gram(&["a", "b"]), hash_gram(&["a", "b"]));
    }

    #[test]
    fn ngram_scores_are_the_share_of_item_grams_found() {
        let mut index = NgramIndex::new(3);
        index.add("the quick brown fox jumps"); // grams: tqb, qbf, bfj
        index.add("lazy dog"); // shorter than n: its one gram is "lazy dog"
        index.add("");
        assert_eq!(index.matches("a quick brown fox sat"), [(0, 1.0 / 3.0)]);
        assert_eq!(
            index.matches("THE quick brown fox jumps".to_lowercase().as_str()),
            [(0, 1.0)]
        );
        assert_eq!(index.matches("over the lazy dog today"), [(1, 1.0)]);
        assert!(index.matches("lazy cat").is_empty());
        assert!(index.matches("").is_empty());
    }
}
