//! Real instruction/response pairs and the general text the LM is pretrained on, from two
//! domains in Debian packages:
//!
//! * `Domain::Lexicon`: `wordnet-base` and `fortunes-min` (define, synonym, use, complete a
//!   quote); pretraining text is the glosses of the synsets not used as pairs;
//! * `Domain::Computing`: `dict-foldoc`, the Free On-line Dictionary of Computing (define a
//!   term, name its field, name the term from its definition); pretraining text is the
//!   entries not used as pairs, then WordNet glosses.

use crate::rng::Rng;
use std::path::Path;

pub const WORDNET: &str = "/usr/share/wordnet";
pub const FORTUNES: &str = "/usr/share/games/fortunes";
const WORDNET_FILES: [&str; 4] = ["data.noun", "data.verb", "data.adj", "data.adv"];
const FORTUNE_FILES: [&str; 3] = ["fortunes", "literature", "riddles"];
/// dictd's format: a gzip-compatible dictzip file (decompressed by Debian's essential gzip).
pub const FOLDOC: &str = "/usr/share/dictd/foldoc.dict.dz";

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Domain {
    Lexicon,
    Computing,
}

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

/// Pairs of `domain` whose text is shorter than `max_chars`, shuffled.
pub fn load(
    domain: Domain,
    wanted: usize,
    max_chars: usize,
    rng: &mut Rng,
) -> std::io::Result<Corpus> {
    let fits = |p: &Pair| p.text().len() < max_chars && !p.response.is_empty();
    match domain {
        Domain::Lexicon => load_lexicon(wanted, &fits, rng),
        Domain::Computing => load_computing(wanted, &fits, rng),
    }
}

/// WordNet synsets (shuffled); whole synsets go to the pairs until there are `wanted` (so a
/// target's synonym may meet its definition in the pool), the rest is pretraining text.
fn wordnet_pairs(
    wanted: usize,
    mut pairs: Vec<Pair>,
    fits: &dyn Fn(&Pair) -> bool,
    rng: &mut Rng,
) -> std::io::Result<(Vec<Pair>, String)> {
    let mut synsets = Vec::new();
    for file in WORDNET_FILES {
        let text = std::fs::read_to_string(Path::new(WORDNET).join(file))?;
        synsets.extend(text.lines().filter_map(parse_synset));
    }
    rng.shuffle(&mut synsets);
    let mut general = String::new();
    for s in &synsets {
        if pairs.len() < wanted {
            pairs.extend(synset_pairs(s).into_iter().filter(|p| fits(p)));
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
    Ok((pairs, general))
}

/// Fortunes at most a fifth of `wanted`, then WordNet.
fn load_lexicon(
    wanted: usize,
    fits: &dyn Fn(&Pair) -> bool,
    rng: &mut Rng,
) -> std::io::Result<Corpus> {
    let mut quotes = Vec::new();
    for file in FORTUNE_FILES {
        let bytes = std::fs::read(Path::new(FORTUNES).join(file))?;
        quotes.extend(
            quote_pairs(&String::from_utf8_lossy(&bytes))
                .into_iter()
                .filter(|p| fits(p)),
        );
    }
    rng.shuffle(&mut quotes);
    quotes.truncate(wanted / 5);
    let (mut pairs, general) = wordnet_pairs(wanted, quotes, fits, rng)?;
    pairs.truncate(wanted);
    rng.shuffle(&mut pairs);
    Ok(Corpus { pairs, general })
}

/// FOLDOC entries (shuffled) to pairs until there are `wanted`; the other entries, then
/// WordNet's glosses, are pretraining text.
fn load_computing(
    wanted: usize,
    fits: &dyn Fn(&Pair) -> bool,
    rng: &mut Rng,
) -> std::io::Result<Corpus> {
    let output = std::process::Command::new("gzip")
        .args(["-dc", FOLDOC])
        .output()?;
    if !output.status.success() {
        return Err(std::io::Error::other(format!("cannot decompress {FOLDOC}")));
    }
    let mut entries = foldoc_entries(&String::from_utf8_lossy(&output.stdout));
    rng.shuffle(&mut entries);
    let (mut pairs, mut general) = (Vec::new(), String::new());
    for e in &entries {
        if pairs.len() < wanted {
            pairs.extend(entry_pairs(e).into_iter().filter(|p| fits(p)));
        } else {
            general.push_str(&format!("{}: {}\n", e.term, e.definition));
        }
    }
    pairs.truncate(wanted);
    rng.shuffle(&mut pairs);
    let (_, glosses) = wordnet_pairs(0, Vec::new(), fits, rng)?;
    general.push_str(&glosses);
    Ok(Corpus { pairs, general })
}

struct Entry {
    term: String,
    /// The first listed field, e.g. "programming" for `<programming, language>`.
    field: Option<String>,
    /// The first paragraph, cross-reference braces and the field removed.
    definition: String,
}

/// dictd text: a term at column 0 (aliases on the following lines), then its indented body
/// of paragraphs, the last being the date of the entry. Entries whose first paragraph is
/// under four words (redirects such as "{abstract data type}") are skipped.
fn foldoc_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() || line.starts_with(char::is_whitespace) {
            continue;
        }
        let term = clean(line);
        while lines
            .peek()
            .is_some_and(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace))
        {
            lines.next(); // an alias
        }
        let mut paragraph = String::new();
        while let Some(l) = lines.peek() {
            if !l.trim().is_empty() && !l.starts_with(char::is_whitespace) {
                break;
            }
            let l = lines.next().unwrap_or_default();
            if l.trim().is_empty() && !paragraph.is_empty() {
                // the rest of the body: other paragraphs, the date
                while lines
                    .peek()
                    .is_some_and(|l| l.trim().is_empty() || l.starts_with(char::is_whitespace))
                {
                    lines.next();
                }
                break;
            }
            paragraph.push(' ');
            paragraph.push_str(l.trim());
        }
        let mut body = clean(&paragraph.replace(['{', '}'], ""));
        let mut field = None;
        if let Some(rest) = body.strip_prefix('<') {
            if let Some((fields, after)) = rest.split_once('>') {
                field = fields.split(',').next().map(|f| f.trim().to_string());
                body = after.trim().to_string();
            }
        }
        if term.starts_with("00-database") || body.split_whitespace().count() < 4 {
            continue;
        }
        entries.push(Entry {
            term,
            field,
            definition: body,
        });
    }
    entries
}

/// The first sentence: up to the first ". " after 20 characters, or all of it.
fn first_sentence(text: &str) -> &str {
    text.char_indices()
        .skip(20)
        .find(|&(i, c)| c == '.' && text[i + 1..].starts_with(' '))
        .map_or(text, |(i, _)| &text[..=i])
}

fn entry_pairs(e: &Entry) -> Vec<Pair> {
    let sentence = first_sentence(&e.definition).to_string();
    let mut pairs = vec![
        Pair {
            task: "define",
            prompt: format!("define the computing term: {}", e.term),
            response: sentence.clone(),
        },
        Pair {
            task: "term",
            prompt: format!("name the computing term: {sentence}"),
            response: e.term.clone(),
        },
    ];
    if let Some(field) = &e.field {
        pairs.push(Pair {
            task: "field",
            prompt: format!("name the field of computing of: {}", e.term),
            response: field.clone(),
        });
    }
    pairs
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
    fn a_foldoc_entry_gives_define_term_and_field_pairs() {
        let text = "\n00-database-short\n     header text here and more\n\nabstract data type\nADT\n\n   <programming, theory> (ADT) A kind of {data abstraction} where a\n   type's internal form is hidden. Values are created by calls.\n\n   Second paragraph.\n\n   (2003-07-03)\n\nADT\n\n   {abstract data type}\n\n";
        let entries = foldoc_entries(text);
        assert_eq!(entries.len(), 1, "the header and the redirect are skipped");
        let pairs = entry_pairs(&entries[0]);
        let got: Vec<_> = pairs
            .iter()
            .map(|p| (p.task, p.prompt.as_str(), p.response.as_str()))
            .collect();
        let define = "(ADT) A kind of data abstraction where a type's internal form is hidden.";
        assert_eq!(
            got,
            [
                (
                    "define",
                    "define the computing term: abstract data type",
                    define
                ),
                (
                    "term",
                    &format!("name the computing term: {define}")[..],
                    "abstract data type"
                ),
                (
                    "field",
                    "name the field of computing of: abstract data type",
                    "programming"
                ),
            ]
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
