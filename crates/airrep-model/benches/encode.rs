//! Encoding throughput of MiniLM-L6 on ~113-token texts, 2 threads, batch 1/32/128: the f32
//! FMA products next to the AMX split-bf16 products (where the CPU has AMX) and bf16,
//! interleaved in one process, best of 3 each, at the SIMD tier `$AIRREP_SIMD` (auto: the
//! CPU's best). Besides wall-clock texts/s it prints texts per CPU-second
//! times the thread count: what two dedicated cores would do, which stays comparable when
//! other work shares the machine (wall-clock figures then swing by 2x). The bar (DESIGN 4): PyTorch f32 on the same machine encodes
//! 94 texts/s; `benches/encode.sh` measures PyTorch in the same run when it is installed.
//!
//!     scripts/fetch-minilm.sh && cargo bench -p airrep-model --bench encode [-- BATCH...]
//!
//! Model directory: `airrep_model::testing::minilm_dir` ($AIRREP_MINILM_DIR, else the fetch
//! script's cache). With
//! $AIRREP_BENCH_TEXTS set, also writes the texts there (a JSON array) for other runners.

use std::time::Instant;

use airrep_core::simd;
use airrep_model::testing::minilm_dir;
use airrep_model::{format_pair, Encoder, EncoderOptions, Precision, Product};
use candle_core::DType;

const THREADS: usize = 2;
const ROUNDS: usize = 3;

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
    let dir = minilm_dir().expect("the encode bench needs MiniLM-L6");
    let texts = texts(256);
    if let Some(path) = std::env::var_os("AIRREP_BENCH_TEXTS") {
        std::fs::write(path, serde_json::to_string(&texts).unwrap()).unwrap();
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(THREADS)
        .build()
        .unwrap();
    // $AIRREP_SIMD (benches/simd.sh): the tier to measure; auto is the CPU's best.
    if let Ok(setting) = std::env::var("AIRREP_SIMD") {
        let tier = simd::parse_setting(&setting).unwrap_or_else(|e| panic!("AIRREP_SIMD: {e}"));
        simd::select(tier).unwrap_or_else(|e| panic!("AIRREP_SIMD: {e}"));
    }
    let amx = Product::for_cpu(DType::F32, true) == Some(Product::AmxSplit);
    println!(
        "MiniLM-L6, {THREADS} threads, {:.0} tokens/text; SIMD tier {}; AMX in use: {amx}",
        mean_tokens(&dir, &texts),
        simd::tier(),
    );
    // `cargo bench --bench encode -- 32` runs one batch size (cargo adds `--bench`).
    let mut batch_sizes: Vec<usize> = std::env::args().filter_map(|a| a.parse().ok()).collect();
    if batch_sizes.is_empty() {
        batch_sizes = vec![1, 32, 128];
    }
    // (name, precision, AMX): f32 FMA, f32 from AMX split products, and bf16: mixed
    // precision on AMX tiles (the counterpart of PyTorch's bf16), else the bf16 weights
    // widened to f32 and f32 products.
    let variants = [
        ("f32 FMA", DType::F32, false),
        ("f32 AMX split", DType::F32, true),
        (
            if amx { "bf16 AMX" } else { "bf16 as f32" },
            DType::BF16,
            true,
        ),
    ];
    print!("{:>6}", "batch");
    variants.iter().for_each(|(name, ..)| print!(" {name:>15}"));
    println!("  texts/s: wall clock (per CPU-second x {THREADS}); AMX split / FMA per CPU-second");
    for batch_size in batch_sizes {
        let encoders: Vec<Encoder> = variants
            .iter()
            .map(|&(_, dtype, amx)| {
                let precision = if dtype == DType::BF16 {
                    Precision::Bf16
                } else {
                    Precision::F32
                };
                let opts = EncoderOptions {
                    batch_size,
                    amx,
                    dtype: Some(precision),
                    ..Default::default()
                };
                Encoder::from_dir(&dir, opts)
                    .unwrap_or_else(|e| panic!("{e} (run scripts/fetch-minilm.sh)"))
            })
            .collect();
        let n = if batch_size == 1 { 64 } else { 256 };
        let (mut wall, mut cpu) = (vec![0f64; encoders.len()], vec![0f64; encoders.len()]);
        for _ in 0..ROUNDS {
            for (i, encoder) in encoders.iter().enumerate() {
                encoder.encode_in(&pool, &texts[..batch_size]).unwrap(); // warm-up
                let (start, start_cpu) = (Instant::now(), cpu_seconds());
                encoder.encode_in(&pool, &texts[..n]).unwrap();
                wall[i] = wall[i].max(n as f64 / start.elapsed().as_secs_f64());
                cpu[i] = cpu[i].max(n as f64 * THREADS as f64 / (cpu_seconds() - start_cpu));
            }
        }
        print!("{batch_size:>6}");
        for (wall, cpu) in wall.iter().zip(&cpu) {
            print!(" {wall:>6.1} {:>8}", format!("({cpu:.1})"));
        }
        println!(" {:>5.2}x", cpu[1] / cpu[0]);
    }
}

/// User and system CPU time of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn mean_tokens(dir: &std::path::Path, texts: &[&str]) -> f64 {
    let encoder = Encoder::from_dir(dir, EncoderOptions::default()).unwrap();
    let tokens: usize = texts
        .iter()
        .map(|t| encoder.tokenizer().encode(t).unwrap().len())
        .sum();
    tokens as f64 / texts.len() as f64
}
