//! Seconds per AirRep training step and peak memory on all 6 layers of MiniLM-L6, 32 targets
//! x subsets of 32 members (~110-token texts), for subsets_per_step 2, 4, 8 and 16. A step
//! encodes the union of its examples `chunk_rows` texts at a time, so the peak should stay
//! flat while time grows linearly.
//! Each configuration runs in its own child process so VmHWM (peak RSS) is its own.
//!
//!     scripts/fetch-minilm.sh && cargo bench -p airrep-model --bench train
//!
//! Model directory: `airrep_model::testing::minilm_dir` ($AIRREP_MINILM_DIR, else the cache
//! of scripts/fetch-minilm.sh, which must have run).
//! $AIRREP_BENCH_STEPS timed steps per configuration (default 1, after one warm-up step).

use std::process::Command;
use std::time::Instant;

use airrep_model::testing::minilm_dir;
use airrep_model::{
    format_pair, Checkpoint, Depth, TrainData, TrainLayers, TrainOptions, Trainer, UnitScale,
};

const TARGETS: usize = 32;
const MEMBERS: usize = 32;
const SUBSETS: [usize; 4] = [2, 4, 8, 16];
/// Set in a child process: the subsets_per_step it measures.
const CHILD_ENV: &str = "AIRREP_TRAIN_BENCH_SUBSETS";

/// Instruction pairs of ~110 tokens, all different.
fn text(i: usize) -> String {
    const WORDS: &[&str] = &[
        "which", "training", "examples", "help", "the", "model", "answer", "a", "question",
        "about", "rivers", "proteins", "poetry", "taxes", "orbits", "when", "we", "retrain", "it",
        "on", "small", "subsets", "and", "measure", "loss", "for", "every", "target",
    ];
    let word = |j: usize| WORDS[(i * 31 + j * 17 + j * j * 7) % WORDS.len()];
    let prompt: Vec<&str> = (0..60).map(word).collect();
    let response: Vec<&str> = (60..100).map(word).collect();
    format_pair(&prompt.join(" "), &response.join(" "))
}

/// 16 disjoint subsets of 32 examples, 32 targets, losses that rank them differently.
fn data() -> TrainData {
    let subsets = *SUBSETS.iter().max().unwrap();
    TrainData {
        examples: (0..subsets * MEMBERS).map(text).collect(),
        targets: (0..TARGETS).map(|d| text(100_000 + d)).collect(),
        subsets: (0..subsets)
            .map(|k| (k * MEMBERS..(k + 1) * MEMBERS).collect())
            .collect(),
        losses: (0..subsets)
            .map(|k| {
                (0..TARGETS)
                    .map(|d| ((k * 7 + d * 3) % 11) as f64 / 10.0 + 1.0)
                    .collect()
            })
            .collect(),
    }
}

/// Peak resident memory so far, in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM in /proc/self/status");
    let kib: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024.0
}

/// Measures one configuration; prints `<s/step> <peak MiB after load> <peak MiB>`.
fn child(subsets_per_step: usize) {
    let steps: usize = std::env::var("AIRREP_BENCH_STEPS").map_or(1, |s| s.parse().unwrap());
    let dir = minilm_dir().expect("the train bench needs MiniLM-L6");
    let checkpoint = Checkpoint::from_dir(&dir).unwrap();
    let tokenizer = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let options = TrainOptions {
        targets_per_step: TARGETS,
        subsets_per_step,
        max_members_per_subset: Some(MEMBERS),
        train_layers: TrainLayers::All,
        // The whole encoder as it is: no truncation or unit length chosen from these labels.
        depth: Depth::All,
        unit_scale: UnitScale::Off,
        holdout_fraction: 0.0,
        ..TrainOptions::default()
    };
    let mut trainer = Trainer::new(&checkpoint, &tokenizer, data(), options, &|| false).unwrap();
    let loaded = peak_rss_mib();
    let never = || false;
    trainer.step(&never).unwrap(); // warm-up: optimiser state and allocator pools
    let start = Instant::now();
    for _ in 0..steps {
        trainer.step(&never).unwrap();
    }
    let per_step = start.elapsed().as_secs_f64() / steps as f64;
    println!("{per_step} {loaded} {}", peak_rss_mib());
}

fn main() {
    if let Ok(subsets) = std::env::var(CHILD_ENV) {
        return child(subsets.parse().unwrap());
    }
    println!(
        "AirRep training step, MiniLM-L6 f32, {TARGETS} targets x subsets of {MEMBERS} members, \
         candle threads {}",
        candle_core::utils::get_num_threads()
    );
    println!(
        "subsets/step  s/step  s/subset  peak RSS MiB  (after load)  step RSS ratio  time ratio"
    );
    let mut first: Option<(f64, f64)> = None;
    for subsets in SUBSETS {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD_ENV, subsets.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "child for {subsets} subsets failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let fields: Vec<f64> = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let [secs, loaded, peak] = fields[..] else {
            panic!("child output: {fields:?}")
        };
        let (secs0, peak0) = *first.get_or_insert((secs, peak));
        println!(
            "{subsets:>12}  {secs:>6.2}  {:>8.2}  {peak:>12.0}  {loaded:>12.0}  {:>14.2}  {:>10.2}",
            secs / subsets as f64,
            peak / peak0,
            secs / secs0
        );
    }
}
