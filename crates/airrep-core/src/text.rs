//! Text matching for contamination checks (`airrep.contamination`): normalised word
//! sequences, their exact keys, and a hashed n-gram index.
//!
//! The caller applies Unicode NFKC (Postgres' `normalize`) and full case folding (as
//! Python's `str.casefold`) first; [`words`] then collapses
//! whitespace and punctuation: a word is a maximal run of alphanumeric characters.
//!
//! The n-gram rule follows the GPT-3 report's decontamination: a training row contaminates
//! a benchmark item if they share an n-gram of words. A benchmark item shorter than n words
//! contributes its whole word sequence as its one gram, so short items are still caught
//! when a training row contains them. `score` is the share of the item's distinct grams
//! that the row contains.
//!
//! A word is hashed once (64-bit FNV-1a) and a gram is a polynomial hash of its words
//! modulo the prime 2⁶¹ − 1, so every gram of one length in a row comes from prefix sums
//! in O(1) each: matching a row costs its words times the distinct gram lengths (n and the
//! word counts of shorter items, at most about √(2 × the benchmark's words)), whatever n
//! and the items' lengths. Two different grams of at most L words collide with
//! probability about L · 2⁻⁶¹ per pair.

use std::collections::{HashMap, HashSet};

use crate::select::Cancelled;

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

/// The Mersenne prime 2⁶¹ − 1: products of two residues fit in a u128.
const MODULUS: u64 = (1 << 61) - 1;
/// The polynomial's base: any residue far from 0 and 1.
const BASE: u64 = 0x1d8e_4e27_c47d_124f % MODULUS;

fn mul_mod(a: u64, b: u64) -> u64 {
    let p = a as u128 * b as u128;
    let folded = (p & MODULUS as u128) as u64 + (p >> 61) as u64;
    // p < 2¹²², so `folded` < 2⁶² and one subtraction reduces it.
    if folded >= MODULUS {
        folded - MODULUS
    } else {
        folded
    }
}

fn hash_word(word: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in word.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h % MODULUS
}

/// Prefix hashes of a word sequence and the powers of the base, from which the hash of
/// any window is O(1).
struct Prefixes {
    /// `hashes[i]`: the hash of the first `i` words.
    hashes: Vec<u64>,
    powers: Vec<u64>,
}

impl Prefixes {
    fn new(words: &[&str]) -> Self {
        let mut hashes = Vec::with_capacity(words.len() + 1);
        let mut powers = Vec::with_capacity(words.len() + 1);
        hashes.push(0);
        powers.push(1);
        for w in words {
            let last = *hashes.last().expect("starts with one");
            // A word hash of 0 would make ["a"] and [<0>, "a"] equal: shift every word by 1.
            hashes.push((mul_mod(last, BASE) + hash_word(w) + 1) % MODULUS);
            powers.push(mul_mod(*powers.last().expect("starts with one"), BASE));
        }
        Prefixes { hashes, powers }
    }

    /// The hash of words `start..start + length`.
    fn gram(&self, start: usize, length: usize) -> u64 {
        let end = self.hashes[start + length];
        let before = mul_mod(self.hashes[start], self.powers[length]);
        (end + MODULUS - before) % MODULUS
    }

    /// The hashes of every gram of `length` words (none if there are fewer words).
    fn grams(&self, length: usize) -> impl Iterator<Item = u64> + '_ {
        let words = self.hashes.len() - 1;
        (0..(words + 1).saturating_sub(length)).map(move |start| self.gram(start, length))
    }
}

/// The hash of a whole word sequence (tests compare grams through it).
#[cfg(test)]
fn hash_gram(words: &[&str]) -> u64 {
    Prefixes::new(words).gram(0, words.len())
}

/// Gram lookups between two polls of the interrupt callback in [`NgramIndex::matches`].
const POLL_EVERY: usize = 1 << 16;

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
            Prefixes::new(&words).grams(length).collect()
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
    /// the item's distinct grams found in the text, in item order. `interrupted` is polled
    /// every [`POLL_EVERY`] gram lookups: one long row can take a while.
    pub fn matches(
        &self,
        text: &str,
        interrupted: &dyn Fn() -> bool,
    ) -> Result<Vec<(usize, f64)>, Cancelled> {
        let words = words(text);
        let prefixes = Prefixes::new(&words);
        let mut found: HashSet<u64> = HashSet::new();
        let mut looked = 0;
        for &length in &self.lengths {
            for g in prefixes.grams(length) {
                looked += 1;
                if looked % POLL_EVERY == 0 && interrupted() {
                    return Err(Cancelled);
                }
                if self.items_by_gram.contains_key(&g) {
                    found.insert(g);
                }
            }
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
        Ok(out)
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
        let matches = |text: &str| index.matches(text, &|| false).unwrap();
        assert_eq!(matches("a quick brown fox sat"), [(0, 1.0 / 3.0)]);
        assert_eq!(
            matches("THE quick brown fox jumps".to_lowercase().as_str()),
            [(0, 1.0)]
        );
        assert_eq!(matches("over the lazy dog today"), [(1, 1.0)]);
        assert!(matches("lazy cat").is_empty());
        assert!(matches("").is_empty());
    }

    #[test]
    fn window_hashes_equal_whole_sequence_hashes() {
        let words = ["a", "b", "c", "a", "b"];
        let prefixes = Prefixes::new(&words);
        for length in 1..=words.len() {
            for (start, g) in prefixes.grams(length).enumerate() {
                assert_eq!(g, hash_gram(&words[start..start + length]));
            }
        }
        assert_eq!(prefixes.gram(0, 2), prefixes.gram(3, 2));
        assert_ne!(prefixes.gram(0, 2), prefixes.gram(1, 2));
    }

    /// Issue 27: items of every length below n made matching a row cubic in its length.
    /// Items of 1..=1500 words under n = i32::MAX against a 5,000-word row: found exactly,
    /// and the work is the row's words times the distinct lengths (seen through the polls).
    fn long_items() -> (NgramIndex, String) {
        let row: Vec<String> = (0..5000).map(|i| format!("w{}", i % 1777)).collect();
        let mut index = NgramIndex::new(i32::MAX as usize);
        for length in 1..=1500 {
            // Present: a window of the row; absent: the same words, one replaced.
            index.add(&row[length..2 * length].join(" "));
            let mut absent = row[length..2 * length].to_vec();
            absent[length / 2] = "missing".into();
            index.add(&absent.join(" "));
        }
        (index, row.join(" "))
    }

    #[test]
    fn long_rows_match_in_words_times_lengths() {
        let (index, row) = long_items();
        let polls = std::cell::Cell::new(0);
        let found = index
            .matches(&row, &|| {
                polls.set(polls.get() + 1);
                false
            })
            .unwrap();
        let want: Vec<(usize, f64)> = (0..1500).map(|i| (2 * i, 1.0)).collect();
        assert_eq!(found, want);
        let lookups: usize = (1..=1500).map(|l| 5001 - l).sum();
        assert_eq!(polls.get(), lookups / POLL_EVERY);
    }

    #[test]
    fn matching_a_row_stops_when_interrupted() {
        let (index, row) = long_items();
        let polls = std::cell::Cell::new(0);
        let stopped = index.matches(&row, &|| {
            polls.set(polls.get() + 1);
            true
        });
        assert_eq!(stopped, Err(Cancelled));
        assert_eq!(polls.get(), 1);
    }
}
