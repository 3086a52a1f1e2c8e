//! The packed f32 product of the CPU encoder (`kernels/packed.rs`, through
//! [`Queries::dots`], which packs its block as the weight) at each SIMD tier this CPU has,
//! next to candle's matmul (the `gemm` crate, which picks its own kernels at run time:
//! AVX-512 where the CPU has it, else AVX2 + FMA), on MiniLM-L6's layer shapes at batch 32
//! of ~113 tokens, one thread, best of 5, in GFLOP/s.
//!
//!     cargo bench -p airrep-model --bench gemm

use std::time::Instant;

use airrep_core::simd::{with_tier, Tier};
use airrep_model::Queries;
use candle_core::{Device, Tensor};

const ROUNDS: usize = 5;

fn best_seconds(mut f: impl FnMut()) -> f64 {
    f();
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let rows = 32 * 113;
    let tiers = Tier::available();
    print!("{:>16}", "[m, k] x [k, n]");
    tiers
        .iter()
        .for_each(|t| print!(" {:>9}", format!("tile {t}")));
    println!(" {:>9}  GFLOP/s, 1 thread", "gemm");
    for (n, k) in [(1152, 384), (384, 384), (1536, 384), (384, 1536)] {
        let x = Tensor::randn(0f32, 1.0, (rows, k), &Device::Cpu).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let (xs, ws) = (
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            w.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        let queries = Queries::new(xs, k).unwrap();
        let flops = 2.0 * (rows * n * k) as f64;
        print!("{:>16}", format!("[{rows},{k}]x[{k},{n}]"));
        for &tier in &tiers {
            let s = with_tier(tier, || {
                best_seconds(|| {
                    pool.install(|| queries.dots(&ws).unwrap());
                })
            })
            .unwrap();
            print!(" {:>9.1}", flops / s / 1e9);
        }
        let wt = w.t().unwrap();
        let s = best_seconds(|| {
            pool.install(|| x.matmul(&wt).unwrap());
        });
        println!(" {:>9.1}", flops / s / 1e9);
    }
}
