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

use gpt::{Config, Gpt};
use rng::Rng;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Width of the AirRep encoders scored beside the baselines (MiniLM-L6).
const ENCODER_DIM: usize = 384;

/// Bump when the generator changes what it computes: old caches are then ignored.
const GENERATOR_VERSION: u32 = 2;

#[derive(Debug)]
pub struct Params {
    seed: u64,
    pool: usize,
    train_targets: usize,
    eval_targets: usize,
    train_subsets: usize,
    eval_subsets: usize,
    subset_size: usize,
    gpt: Config,
    pretrain_steps: usize,
    /// Characters per pretraining sequence: short windows are cheap and teach spelling.
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
    fn new(quick: bool, seed: u64) -> Self {
        // Sized for a busy 2-core machine: quick in a few minutes, full well within an hour.
        let gpt = Config {
            hidden: if quick { 32 } else { 48 },
            layers: 2,
            heads: 4,
            max_len: 128,
        };
        if quick {
            Params {
                seed,
                pool: 300,
                train_targets: 20,
                eval_targets: 20,
                train_subsets: 16,
                eval_subsets: 8,
                subset_size: 30,
                gpt,
                pretrain_steps: 60,
                pretrain_window: 64,
                pretrain_lr: 3e-3,
                finetune_epochs: 2,
                finetune_lr: 2e-3,
                batch: 16,
                projection_dim: 256,
            }
        } else {
            Params {
                seed,
                pool: 2000,
                train_targets: 200,
                eval_targets: 100,
                train_subsets: 160,
                eval_subsets: 64,
                subset_size: 200,
                gpt,
                pretrain_steps: 400,
                pretrain_window: 64,
                pretrain_lr: 3e-3,
                finetune_epochs: 2,
                finetune_lr: 2e-3,
                batch: 16,
                projection_dim: 1024,
            }
        }
    }

    /// Fine-tuning steps per subset: `finetune_epochs` passes in batches of `batch`.
    pub fn finetune_steps(&self) -> usize {
        (self.finetune_epochs * self.subset_size).div_ceil(self.batch)
    }

    /// FNV-1a over the parameters, the generator version and the source files' sizes.
    fn hash(&self) -> String {
        let mut key = format!("{self:?} v{GENERATOR_VERSION}");
        for dir in [data::WORDNET, data::FORTUNES] {
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
    corpus: data::Corpus,
    pool: Vec<data::Pair>,
    targets: Vec<data::Pair>,
    subsets: Vec<Vec<usize>>,
    losses: Vec<Vec<f64>>,
}

impl Setup {
    fn new(params: Params) -> std::io::Result<Self> {
        let mut rng = Rng::new(params.seed);
        let n_targets = params.train_targets + params.eval_targets;
        let corpus = data::load(params.pool + n_targets, params.gpt.max_len, &mut rng)?;
        if corpus.pairs.len() < params.pool + n_targets {
            return Err(std::io::Error::other("not enough instruction pairs"));
        }
        let targets = corpus.pairs[..n_targets].to_vec();
        let pool = corpus.pairs[n_targets..].to_vec();
        let subsets = (0..params.train_subsets + params.eval_subsets)
            .map(|_| rng.sample(pool.len(), params.subset_size))
            .collect();
        Ok(Setup {
            params,
            corpus,
            pool,
            targets,
            subsets,
            losses: vec![],
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

/// Labels and the pretrained LM from the cache, or computed and cached.
fn labels(setup: &mut Setup, cache: &Path) -> Result<Gpt, Box<dyn std::error::Error>> {
    let dir = cache.join(setup.params.hash());
    let (losses_path, model_path) = (dir.join("losses.txt"), dir.join("pretrained.safetensors"));
    if losses_path.exists() && model_path.exists() {
        eprintln!("reusing cached labels in {}", dir.display());
        setup.losses = read_losses(&losses_path)?;
        return Ok(Gpt::load(setup.params.gpt, &model_path)?);
    }
    std::fs::create_dir_all(&dir)?;
    let start = Instant::now();
    let model = labels::pretrain(setup)?;
    let pretrain_s = start.elapsed().as_secs_f64();
    setup.losses = labels::retrain_all(setup, &model)?;
    let retrain_s = start.elapsed().as_secs_f64() - pretrain_s;
    model.save(&model_path)?;
    std::fs::write(
        dir.join("params.txt"),
        format!(
            "{:#?}\npretrain_s {pretrain_s:.1}\nretrain_s {retrain_s:.1}\n",
            setup.params
        ),
    )?;
    // written last: its presence means the cache entry is complete
    let rows: Vec<String> = setup
        .losses
        .iter()
        .map(|r| {
            r.iter()
                .map(|x| format!("{x:e}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    std::fs::write(dir.join("losses.tmp"), rows.join("\n"))?;
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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let quick = args.iter().any(|a| a == "--quick");
    let seed = value("--seed")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(42);
    let out = PathBuf::from(
        value("--out")
            .ok_or("usage: airrep-quality [--quick] [--seed N] --out DIR [--cache DIR]")?,
    );
    let cache = value("--cache").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()))
            .join(".cache/airrep/quality")
    });
    std::fs::create_dir_all(&out)?;

    let mut setup = Setup::new(Params::new(quick, seed))?;
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
    write_file(
        &out.join("baselines.tsv"),
        "method\tlds\tencode_ms\tbytes\ttrain_s",
        measured.iter().map(|m| {
            format!(
                "{}\t{}\t{:.4}\t{:.0}\t{:.1}",
                m.method, m.lds, m.encode_ms, m.bytes, m.train_s
            )
        }),
    )?;
    selection::write(
        &selection::baseline_selections(&setup, &measured),
        &out.join("baseline_selections.tsv"),
    )?;
    let (_, eval_targets) = setup.eval();
    write_file(
        &out.join("baselines_per_target.tsv"),
        "method\ttarget_id\tspearman",
        measured.iter().flat_map(|m| {
            m.per_target
                .iter()
                .zip(&eval_targets)
                .map(move |(r, t)| format!("{}\t{}\t{r}", m.method, t + 1))
        }),
    )?;
    let params: usize = model.vars().iter().map(|v| v.elem_count()).sum();
    std::fs::write(out.join("setup.txt"), format!(
        "data seed {}; pool {} examples; targets {} train + {} eval; subsets {} train + {} eval of {}; tiny GPT {} layers, hidden {}, {} heads, context {} chars, {params} parameters; pretrain {} steps of {}-char windows, fine-tune {} steps of batch {} per subset ({} epochs); gradient projection dimension {}; labels took {} s of pretraining and {} s of retraining\n",
        setup.params.seed, setup.pool.len(), setup.params.train_targets, setup.params.eval_targets, setup.params.train_subsets, setup.params.eval_subsets,
        setup.params.subset_size, setup.params.gpt.layers, setup.params.gpt.hidden, setup.params.gpt.heads, setup.params.gpt.max_len,
        setup.params.pretrain_steps, setup.params.pretrain_window, setup.params.finetune_steps(), setup.params.batch, setup.params.finetune_epochs, setup.params.projection_dim,
        secs("pretrain_s"), secs("retrain_s")))?;
    Ok(())
}
