//! airrep-quality: builds the attribution benchmark's data and baselines.
//!
//! `airrep-quality [--quick] [--seed N] --out DIR [--cache DIR]` writes to DIR the label
//! tables as CSV (examples, targets, subsets, subset_split, losses) and `baselines.tsv`
//! (TF-IDF and gradient LDS, measured here). The expensive part, the retraining labels and
//! the pretrained LM, is cached under DIR_CACHE/<hash of the parameters>; the corpus and the
//! subsets are cheap and recomputed from the seed every time. With
//! `--explore MODEL_DIR OPTIONS...` (last), it compares training recipes instead (explore.rs);
//! with `--texts-only` it writes only the pool's `examples.csv` (no labels);
//! with `--token-states MODEL_DIR` it writes every token's hidden states and the labels for
//! `benches/representation_ceiling.py` (token_states.rs);
//! with `--select-from DIR` it runs the data-selection experiment on the selections in DIR
//! (selection.rs) and writes `selection.tsv` to the --out DIR.

mod baselines;
mod data;
mod explore;
mod gpt;
mod labels;
mod rng;
mod selection;
mod token_states;
mod vocab;

use gpt::{Config, Gpt};
use rng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;
use vocab::Vocab;

/// Width of the AirRep encoders scored beside the baselines (MiniLM-L6).
const ENCODER_DIM: usize = 384;

/// The noise ceiling's row in baselines.tsv (benches/quality_report.py reads it by name).
const RETEST_METHOD: &str = "Noise ceiling: the same subsets fine-tuned with another data order";

/// Bump when the generator changes what it computes: old caches are then ignored.
const GENERATOR_VERSION: u32 = 3;

/// Which LM's retraining makes the labels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lm {
    /// A tiny character-level GPT: what a subset teaches it is mostly spelling (the lexical
    /// case, kept for comparison).
    Chars,
    /// A subword GPT over the encoder's WordPiece pieces, pretrained until its loss
    /// flattens: the paper's setting, where gradients carry meaning.
    Subwords { vocab_cap: usize },
}

#[derive(Debug)]
pub struct Params {
    seed: u64,
    lm: Lm,
    domain: data::Domain,
    pool: usize,
    train_targets: usize,
    eval_targets: usize,
    train_subsets: usize,
    eval_subsets: usize,
    /// Evaluation subsets fine-tuned a second time with another data order: the labels'
    /// noise ceiling.
    retest_subsets: usize,
    subset_size: usize,
    /// Pairs whose text has this many characters or more are left out.
    max_chars: usize,
    gpt: Config,
    /// Pretraining stops here, or earlier once the loss has flattened.
    pretrain_steps: usize,
    /// Tokens per pretraining sequence.
    pretrain_window: usize,
    pretrain_lr: f64,
    /// Passes over each subset when fine-tuning: the reference trains 2 or more, which
    /// averages out much of the data-order noise in the labels.
    finetune_epochs: usize,
    finetune_lr: f64,
    batch: usize,
    projection_dim: usize,
}

impl Params {
    fn new(lm_chars: bool, domain: data::Domain, quick: bool, seed: u64) -> Self {
        // Sized for a busy 2-core machine: quick in a few minutes, full well within an hour.
        let chars = Params {
            seed,
            lm: Lm::Chars,
            domain,
            pool: 2000,
            train_targets: 200,
            eval_targets: 100,
            train_subsets: 160,
            eval_subsets: 64,
            retest_subsets: 0,
            subset_size: 200,
            max_chars: 128,
            gpt: Config {
                vocab: 0, // Setup::new sets it from the vocabulary
                hidden: 48,
                layers: 2,
                heads: 4,
                max_len: 128,
            },
            pretrain_steps: 400,
            pretrain_window: 64,
            pretrain_lr: 3e-3,
            finetune_epochs: 2,
            finetune_lr: 2e-3,
            batch: 16,
            projection_dim: 1024,
        };
        let params = if lm_chars {
            chars
        } else {
            // 4 layers of 128 over subwords; a 10% subset of the pool per run.
            Params {
                lm: Lm::Subwords { vocab_cap: 2048 },
                pool: 1000,
                train_targets: 100,
                eval_targets: 100,
                train_subsets: 96,
                eval_subsets: 64,
                retest_subsets: 32,
                subset_size: 100,
                max_chars: 256,
                gpt: Config {
                    hidden: 128,
                    layers: 4,
                    max_len: 256,
                    ..chars.gpt
                },
                pretrain_steps: 2000,
                pretrain_window: 48,
                pretrain_lr: 3e-3,
                finetune_lr: 1e-3,
                projection_dim: 4096,
                ..chars
            }
        };
        if !quick {
            return params;
        }
        Params {
            lm: match params.lm {
                Lm::Chars => Lm::Chars,
                Lm::Subwords { .. } => Lm::Subwords { vocab_cap: 1024 },
            },
            pool: 300,
            train_targets: 20,
            eval_targets: 20,
            train_subsets: 16,
            eval_subsets: 8,
            retest_subsets: params.retest_subsets.min(4),
            subset_size: 30,
            gpt: Config {
                hidden: 32,
                layers: 2,
                ..params.gpt
            },
            pretrain_steps: 60,
            projection_dim: 256,
            ..params
        }
    }

    /// Fine-tuning steps per subset: `finetune_epochs` passes in batches of `batch`.
    pub fn finetune_steps(&self) -> usize {
        (self.finetune_epochs * self.subset_size).div_ceil(self.batch)
    }

    /// FNV-1a over the parameters, the generator version and the source files' sizes.
    fn hash(&self) -> String {
        let mut key = format!("{self:?} v{GENERATOR_VERSION}");
        for dir in [data::WORDNET, data::FORTUNES, "/usr/share/dictd"] {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                key += &format!(
                    " {:?}:{}",
                    entry.file_name(),
                    entry.metadata().map(|m| m.len()).unwrap_or(0)
                );
            }
        }
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{h:016x}")
    }
}

/// The benchmark's data: pool, targets (training ones first), subsets (training ones first).
pub struct Setup {
    params: Params,
    vocab: Vocab,
    corpus: data::Corpus,
    pool: Vec<data::Pair>,
    targets: Vec<data::Pair>,
    subsets: Vec<Vec<usize>>,
    losses: Vec<Vec<f64>>,
    /// losses of the first `retest_subsets` evaluation subsets fine-tuned again with another
    /// data order
    retest_losses: Vec<Vec<f64>>,
}

impl Setup {
    fn new(mut params: Params) -> std::io::Result<Self> {
        let mut rng = Rng::new(params.seed);
        let n_targets = params.train_targets + params.eval_targets;
        let corpus = data::load(
            params.domain,
            params.pool + n_targets,
            params.max_chars,
            &mut rng,
        )?;
        if corpus.pairs.len() < params.pool + n_targets {
            return Err(std::io::Error::other("not enough instruction pairs"));
        }
        let vocab = match params.lm {
            Lm::Chars => Vocab::Chars,
            Lm::Subwords { vocab_cap } => {
                let texts: Vec<String> = corpus.pairs.iter().map(data::Pair::text).collect();
                let all = corpus
                    .general
                    .lines()
                    .chain(texts.iter().map(String::as_str));
                Vocab::subwords(all, vocab_cap)?
            }
        };
        params.gpt.vocab = vocab.size();
        let targets = corpus.pairs[..n_targets].to_vec();
        let pool = corpus.pairs[n_targets..].to_vec();
        let subsets = (0..params.train_subsets + params.eval_subsets)
            .map(|_| rng.sample(pool.len(), params.subset_size))
            .collect();
        Ok(Setup {
            params,
            vocab,
            corpus,
            pool,
            targets,
            subsets,
            losses: vec![],
            retest_losses: vec![],
        })
    }

    /// Indices of the held-out subsets and targets.
    fn eval(&self) -> (Vec<usize>, Vec<usize>) {
        let p = &self.params;
        (
            (p.train_subsets..self.subsets.len()).collect(),
            (p.train_targets..self.targets.len()).collect(),
        )
    }
}

fn csv_field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub fn write_file(
    path: &Path,
    header: &str,
    rows: impl Iterator<Item = String>,
) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "{header}")?;
    for row in rows {
        writeln!(f, "{row}")?;
    }
    f.flush()
}

fn read_losses(path: &Path) -> std::io::Result<Vec<Vec<f64>>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .map(|l| {
            l.split(',')
                .map(|x| x.parse().expect("cached loss"))
                .collect()
        })
        .collect())
}

fn write_losses(path: &Path, losses: &[Vec<f64>]) -> std::io::Result<()> {
    let rows: Vec<String> = losses
        .iter()
        .map(|r| {
            r.iter()
                .map(|x| format!("{x:e}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(path, rows.join("\n"))
}

/// Labels and the pretrained LM from the cache, or computed and cached.
fn labels(setup: &mut Setup, cache: &Path) -> Result<Gpt, Box<dyn std::error::Error>> {
    let dir = cache.join(setup.params.hash());
    let (losses_path, model_path) = (dir.join("losses.txt"), dir.join("pretrained.safetensors"));
    let retest_path = dir.join("retest_losses.txt");
    if losses_path.exists() && model_path.exists() {
        eprintln!("reusing cached labels in {}", dir.display());
        setup.losses = read_losses(&losses_path)?;
        if setup.params.retest_subsets > 0 {
            setup.retest_losses = read_losses(&retest_path)?;
        }
        return Ok(Gpt::load(setup.params.gpt, &model_path)?);
    }
    std::fs::create_dir_all(&dir)?;
    let start = Instant::now();
    let (model, pretrain_log) = labels::pretrain(setup)?;
    let pretrain_s = start.elapsed().as_secs_f64();
    setup.losses = labels::retrain_all(setup, &model)?;
    setup.retest_losses = labels::retest(setup, &model)?;
    let retrain_s = start.elapsed().as_secs_f64() - pretrain_s;
    model.save(&model_path)?;
    std::fs::write(
        dir.join("params.txt"),
        format!(
            "{:#?}\npretrain_s {pretrain_s:.1}\nretrain_s {retrain_s:.1}\npretrain {pretrain_log}\n",
            setup.params
        ),
    )?;
    write_losses(&retest_path, &setup.retest_losses)?;
    // written last: its presence means the cache entry is complete
    write_losses(&dir.join("losses.tmp"), &setup.losses)?;
    std::fs::rename(dir.join("losses.tmp"), &losses_path)?;
    Ok(model)
}

fn write_examples(setup: &Setup, out: &Path) -> std::io::Result<()> {
    write_file(
        &out.join("examples.csv"),
        "id,task,text",
        setup
            .pool
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{},{},{}", i + 1, p.task, csv_field(&p.text()))),
    )
}

fn write_tables(setup: &Setup, out: &Path) -> std::io::Result<()> {
    let n_train_subsets = setup.params.train_subsets;
    let n_train_targets = setup.params.train_targets;
    let split = |train: bool| if train { "train" } else { "eval" };
    write_examples(setup, out)?;
    write_file(
        &out.join("targets.csv"),
        "id,split,task,text",
        setup.targets.iter().enumerate().map(|(i, p)| {
            format!(
                "{},{},{},{}",
                i + 1,
                split(i < n_train_targets),
                p.task,
                csv_field(&p.text())
            )
        }),
    )?;
    write_file(
        &out.join("subsets.csv"),
        "subset_id,example_id",
        setup
            .subsets
            .iter()
            .enumerate()
            .flat_map(|(s, m)| m.iter().map(move |e| format!("{},{}", s + 1, e + 1))),
    )?;
    write_file(
        &out.join("subset_split.csv"),
        "subset_id,split",
        (0..setup.subsets.len()).map(|s| format!("{},{}", s + 1, split(s < n_train_subsets))),
    )?;
    write_file(
        &out.join("losses.csv"),
        "subset_id,target_id,loss",
        setup.losses.iter().enumerate().flat_map(|(s, row)| {
            row.iter()
                .enumerate()
                .map(move |(t, l)| format!("{},{},{l:e}", s + 1, t + 1))
        }),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The benchmark parallelises over whole fine-tuning runs itself (rayon, one per core).
    // candle's own op pool would add a second layer whose workers spin at every op's
    // barrier: on a busy 2-core machine that spinning took two thirds of the CPU (perf).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let flag = |name: &str| args.iter().any(|a| a == name);
    let quick = flag("--quick");
    let domain = match value("--domain").as_deref() {
        None | Some("lexicon") => data::Domain::Lexicon,
        Some("computing") => data::Domain::Computing,
        Some(other) => return Err(format!("--domain {other}: lexicon or computing").into()),
    };
    let seed = value("--seed")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(42);
    let out = PathBuf::from(
        value("--out")
            .ok_or("usage: airrep-quality [--quick] [--lexical] [--domain lexicon|computing] [--seed N] --out DIR [--cache DIR]")?,
    );
    let cache = value("--cache").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache/airrep/quality")
    });
    std::fs::create_dir_all(&out)?;

    let mut setup = Setup::new(Params::new(flag("--lexical"), domain, quick, seed))?;
    if args.iter().any(|a| a == "--texts-only") {
        // The pool's real text for other benchmarks (benches/dedup.sh): no labels needed.
        return Ok(write_examples(&setup, &out)?);
    }
    let model = labels(&mut setup, &cache)?;
    // "pretrain_s X" and "retrain_s Y", measured when the labels were made (maybe cached)
    let made = std::fs::read_to_string(cache.join(setup.params.hash()).join("params.txt"))?;
    let secs = |key: &str| {
        made.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    if let Some(model_dir) = value("--token-states") {
        return token_states::write(&setup, Path::new(&model_dir), &out);
    }
    if let Some(model_dir) = value("--explore") {
        let at = args
            .iter()
            .position(|a| a == "--explore")
            .expect("flag present")
            + 2;
        return explore::run(&setup, Path::new(&model_dir), &args[at..]);
    }
    if let Some(data) = value("--select-from") {
        // After quality.sql: AirRep's selections from its output, the baselines' from ours.
        let data = Path::new(&data);
        let mut selections = selection::read(
            &std::fs::read_to_string(data.join("baseline_selections.tsv"))?,
            None,
        );
        selections.extend(selection::read(
            &std::fs::read_to_string(data.join("airrep.tsv"))?,
            Some("selected"),
        ));
        return selection::evaluate(&setup, &model, selections, &out);
    }
    write_tables(&setup, &out)?;
    // The gradient baseline at its stored size, and at the encoder's width (384) for a
    // comparison at equal dimension.
    let mut measured = vec![baselines::tfidf(&setup)];
    measured.extend(baselines::gradient(
        &setup,
        &model,
        &[setup.params.projection_dim, ENCODER_DIM],
    )?);
    let retest = baselines::retest(&setup);
    write_file(
        &out.join("baselines.tsv"),
        "method\tlds\tencode_ms\tbytes\ttrain_s",
        measured
            .iter()
            .map(|m| {
                format!(
                    "{}\t{}\t{:.4}\t{:.0}\t{:.1}",
                    m.method, m.lds, m.encode_ms, m.bytes, m.train_s
                )
            })
            .chain(retest.iter().map(|(lds, _)| {
                format!(
                    "{RETEST_METHOD} ({} subsets)\t{lds}\t\t\t",
                    setup.retest_losses.len()
                )
            })),
    )?;
    selection::write(
        &selection::baseline_selections(&setup, &measured),
        &out.join("baseline_selections.tsv"),
    )?;
    let (_, eval_targets) = setup.eval();
    write_file(
        &out.join("baselines_per_target.tsv"),
        "method\ttarget_id\tspearman",
        measured
            .iter()
            .map(|m| (m.method.clone(), &m.per_target))
            .chain(retest.iter().map(|(_, per_target)| {
                (
                    format!("{RETEST_METHOD} ({} subsets)", setup.retest_losses.len()),
                    per_target,
                )
            }))
            .flat_map(|(method, per_target)| {
                per_target
                    .iter()
                    .zip(&eval_targets)
                    .map(move |(r, t)| format!("{method}\t{}\t{r}", t + 1))
            }),
    )?;
    let p = &setup.params;
    let lm_params: usize = model.vars().iter().map(|v| v.elem_count()).sum();
    let pretrained = secs("pretrain ");
    std::fs::write(out.join("setup.txt"), format!(
        "{:?} domain, data seed {}; pool {} examples; targets {} train + {} eval; subsets {} train + {} eval of {}, {} evaluation subsets fine-tuned again with another data order; GPT over {} ({} ids), {} layers, hidden {}, {} heads, context {}, {lm_params} parameters; pretrained in windows of {} tokens, {pretrained}; fine-tuned {} steps of batch {} per subset ({} epochs), loss on response tokens; gradient projection dimensions {} and {ENCODER_DIM}; labels took {} s of pretraining and {} s of retraining\n",
        p.domain, p.seed, setup.pool.len(), p.train_targets, p.eval_targets, p.train_subsets, p.eval_subsets,
        p.subset_size, setup.retest_losses.len(), setup.vocab.name(), p.gpt.vocab, p.gpt.layers, p.gpt.hidden, p.gpt.heads, p.gpt.max_len,
        p.pretrain_window, p.finetune_steps(), p.batch, p.finetune_epochs, p.projection_dim,
        secs("pretrain_s"), secs("retrain_s")))?;
    Ok(())
}
