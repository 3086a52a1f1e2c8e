//! How long one 384-dim `dot` takes, the inner loop of `group_influence` over a table: on rows
//! that stay in cache, and on a table too big for L2, as a scan streams it.
//! Run with `cargo run -p airrep-core --release --example dot_speed`.

use std::hint::black_box;
use std::time::Instant;

use airrep_core::vector::dot;

const DIMS: usize = 384;

fn ns_per_dot(rows: usize) -> f64 {
    let table: Vec<Vec<f32>> = (0..rows)
        .map(|r| {
            (0..DIMS)
                .map(|i| ((r * 31 + i * 7) % 97) as f32 / 97.0 - 0.5)
                .collect()
        })
        .collect();
    let target: Vec<f32> = (0..DIMS).map(|i| (i % 13) as f32 - 6.0).collect();
    let passes = 1_000_000 / rows;
    let started = Instant::now();
    for _ in 0..passes {
        for row in &table {
            black_box(dot(black_box(&target), black_box(row)));
        }
    }
    started.elapsed().as_nanos() as f64 / (rows * passes) as f64
}

fn main() {
    for (what, rows) in [("in cache", 16), ("streamed", 8192)] {
        println!("{DIMS}-dim dot, {what}: {:.1} ns", ns_per_dot(rows));
    }
}
