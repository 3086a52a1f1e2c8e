//! Real instruction/response pairs from Debian's `wordnet-base` and `fortunes-min`, and the
//! general text the LM is pretrained on (glosses of the WordNet synsets not used as pairs).

use crate::rng::Rng;
use std::path::Path;

pub const WORDNET: &str = "/usr/share/wordnet";
pub const FORTUNES: &str = "/usr/share/games/fortunes";
const WORDNET_FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];
const FORTUNE_FILES: [&str; 3] = ["fortunes", "literature", "riddles"];

#[derive(Clone)]
pub struct Pair {
    pub task: &'static str,
    pub prompt: String,
    pub response: String,
}

impl Pair {
    /// The instruction text both the LM and the encoders see (airrep.format's template).
    pub fn text(&self) -> String {
        format!("Question: {}\nAnswer: {}", self.prompt, self.response)
    }

    /// Where the response starts in `text()`, in bytes (= tokens, the text is ASCII).
    pub fn response_start(&self) -> usize {
        self.text().len() - self.response.len()
    }
}

pub struct Corpus {
    /// Shuffled pairs, each short enough for the LM's context.
    pub pairs: Vec<Pair>,
    /// Pretraining text: one gloss per line, from synsets that gave no pair.
    pub general: String,
}

struct Synset {
    lemmas: Vec<String>,
    definition: String,
    examples: Vec<String>,
}

/// Printable ASCII with runs of whitespace collapsed: the LM's vocabulary.
fn clean(s: &str) -> String {
    let ascii: String = s
        .chars()
        .map(|c| if c.is_ascii_graphic() { c } else { ' ' })
        .collect();
    ascii.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One line of a WordNet `data.*` file (wndb(5WN)): `offset lex_filenum ss_type w_cnt(hex)
/// word lex_id ... | gloss`, the gloss being `definition; "example"; "example"`.
fn parse_synset(line: &str) -> Option<Synset> {
    if line.starts_with("  ") {
        return None; // licence header
    }
    let (head, gloss) = line.split_once(" | ")?;
    let fields: Vec<&str> = head.split(' ').collect();
    let count = usize::from_str_radix(fields.get(3)?, 16).ok()?;
    let lemmas = (0..count)
        .filter_map(|i| fields.get(4 + 2 * i))
        // adjective markers like "(a)" and sense underscores are not part of the word
        .map(|w| w.split('(').next().unwrap_or(w).replace('_', " "))
        .collect();
    let mut parts = gloss.split("; \"");
    let definition = clean(parts.next()?);
    let examples = parts
        .map(|e| clean(e.trim_end().trim_end_matches(';').trim_matches('"')))
        .collect();
    Some(Synset {
        lemmas,
        definition,
        examples,
    })
}

fn synset_pairs(s: &Synset) -> Vec<Pair> {
    let word = &s.lemmas[0];
    let mut pairs = vec![Pair {
        task: "define",
        prompt: format!("define: {word}"),
        response: s.definition.clone(),
    }];
    if let Some(other) = s.lemmas.get(1) {
        pairs.push(Pair {
            task: "synonym",
            prompt: format!("synonym: {word}"),
            response: other.clone(),
        });
    }
    if let Some(example) = s.examples.iter().find(|e| e.contains(word.as_str())) {
        pairs.push(Pair {
            task: "use",
            prompt: format!("use in a sentence: {word}"),
            response: example.clone(),
        });
    }
    pairs
}

/// `%`-separated entries of a fortune file; each becomes "complete: first half" -> second half.
fn quote_pairs(text: &str) -> Vec<Pair> {
    text.split("\n%\n")
        .filter_map(|entry| {
            let words: Vec<&str> = entry.split_whitespace().collect();
            if words.len() < 6 {
                return None;
            }
            let half = words.len() / 2;
            Some(Pair {
                task: "quote",
                prompt: format!("complete: {}", clean(&words[..half].join(" "))),
                response: clean(&words[half..].join(" ")),
            })
        })
        .collect()
}

/// Pairs whose text fits in `max_len` tokens, fortunes at most a fifth of `wanted`.
pub fn load(wanted: usize, max_len: usize, rng: &mut Rng) -> std::io::Result<Corpus> {
    let fits = |p: &Pair| p.text().len() < max_len && !p.response.is_empty();
    let mut quotes = Vec::new();
    for file in FORTUNE_FILES {
        let bytes = std::fs::read(Path::new(FORTUNES).join(file))?;
        quotes.extend(
            quote_pairs(&String::from_utf8_lossy(&bytes))
                .into_iter()
                .filter(fits),
        );
    }
    rng.shuffle(&mut quotes);
    quotes.truncate(wanted / 5);

    let mut synsets = Vec::new();
    for file in WORDNET_FILES {
        let text = std::fs::read_to_string(Path::new(WORDNET).join(file))?;
        synsets.extend(text.lines().filter_map(parse_synset));
    }
    rng.shuffle(&mut synsets);

    // Whole synsets go to the pairs (so a target's synonym may meet its definition in the
    // pool) until there are enough; the rest is pretraining text.
    let mut pairs = quotes;
    let mut general = String::new();
    for s in &synsets {
        if pairs.len() < wanted {
            pairs.extend(synset_pairs(s).into_iter().filter(fits));
        } else {
            general.push_str(&clean(&format!(
                "{}: {}; {}",
                s.lemmas[0],
                s.definition,
                s.examples.join("; ")
            )));
            general.push('\n');
        }
    }
    pairs.truncate(wanted);
    rng.shuffle(&mut pairs);
    Ok(Corpus { pairs, general })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synset_line_gives_define_synonym_and_use_pairs() {
        let line = "00217593 04 n 02 kill 1 putting_to_death 0 002 @ 00217014 n 0000 | the destruction of an enemy plane; \"the pilot reported two kills during the mission\"  ";
        let pairs = synset_pairs(&parse_synset(line).unwrap());
        let got: Vec<_> = pairs
            .iter()
            .map(|p| (p.task, p.prompt.as_str(), p.response.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "define",
                    "define: kill",
                    "the destruction of an enemy plane"
                ),
                ("synonym", "synonym: kill", "putting to death"),
                (
                    "use",
                    "use in a sentence: kill",
                    "the pilot reported two kills during the mission"
                ),
            ]
        );
        assert_eq!(
            &pairs[0].text()[pairs[0].response_start()..],
            "the destruction of an enemy plane"
        );
    }

    #[test]
    fn a_fortune_splits_into_halves() {
        let pairs = quote_pairs("one two three\nfour five six\n%\ntoo short\n%\n");
        assert_eq!(pairs.len(), 1);
        assert_eq!(
            (pairs[0].prompt.as_str(), pairs[0].response.as_str()),
            ("complete: one two three", "four five six")
        );
    }
}
