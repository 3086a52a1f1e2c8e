//! GPU throughput and packaging tools (docs/gpu.md). Runs on any device; built for the GPU
//! machine with `scripts/build-cuda.sh build --release --features cuda -p airrep-model
//! --example gpu_check`. Parity is not checked here: the golden tests of airrep-model run
//! their bodies on every device the build and the machine have (`testing::devices`), so
//! the `--features cuda` test binary is the GPU's parity check.
//!
//!     gpu_check make-model OUT_DIR TOKENIZER_JSON
//!         A GTE-small-shaped BERT (12 layers, hidden 384, 12 heads, intermediate 1536)
//!         with random weights, plain BERT layout (loads in transformers too).
//!     gpu_check bench DEVICE MODEL_DIR N_TEXTS BATCH OUT_DIR
//!         texts/s in f32 and bf16: end to end (`Encoder::encode`, tokenisation included)
//!         and forward only (pre-tokenised, same batches as the encoder forms, host-to-
//!         device copy and read-back included). Writes OUT_DIR/ids.json (the token ids,
//!         for the PyTorch side) and OUT_DIR/ours.json (figures, first embeddings).
//!     gpu_check op-profile DEVICE
//!         Milliseconds per candle op of one GTE-small layer at batch 256 x 128 tokens,
//!         bf16 and f32: where the time of the portable forward goes.
//!     gpu_check train-bench DEVICE MODEL_DIR TARGETS SUBSETS MEMBERS CHUNK_ROWS STEPS
//!         `airrep_model::Trainer` on DEVICE (the memory trick, f32): seconds per step of
//!         TARGETS x SUBSETS subsets of MEMBERS texts (~127 tokens), forward passes of
//!         CHUNK_ROWS texts; the first step is a warm-up, then the median of STEPS - 1.
//!     gpu_check train-proxy DEVICE MODEL_DIR TARGETS SUBSETS MEMBERS
//!         NOT `airrep_model::Trainer` (no memory trick): the cost of one training step of
//!         the same shape, f32, differentiable kernels, on DEVICE: encode TARGETS and
//!         SUBSETS x MEMBERS texts with gradients (batches of 64), attention-pooled group
//!         scores, a pairwise softplus ranking loss, backward, AdamW. Median of 3 steps.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use airrep_model::{
    Checkpoint, Depth, DeviceSpec, Encoder, EncoderOptions, Kernels, Precision, ReferenceModel,
    SplitMix64, TokenBatch, TrainData, TrainLayers, TrainOptions, Trainer,
};
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use serde_json::{json, Value};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> Res<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing argument {i}; see the header of gpu_check").into())
    };
    match arg(0)? {
        "make-model" => make_model(Path::new(arg(1)?), Path::new(arg(2)?)),
        "bench" => bench(
            arg(1)?.parse()?,
            Path::new(arg(2)?),
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            Path::new(arg(5)?),
        ),
        "train-proxy" => train_proxy(
            arg(1)?.parse()?,
            Path::new(arg(2)?),
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            arg(5)?.parse()?,
        ),
        "op-profile" => op_profile(arg(1)?.parse()?),
        "train-bench" => train_bench(
            arg(1)?.parse()?,
            Path::new(arg(2)?),
            arg(3)?.parse()?,
            arg(4)?.parse()?,
            arg(5)?.parse()?,
            arg(6)?.parse()?,
            arg(7)?.parse()?,
        ),
        other => Err(format!("unknown command {other:?}").into()),
    }
}

/// Deterministic normal-ish numbers (sum of uniforms) from the project's seeded generator.
fn random(n: usize, std: f32, rng: &mut SplitMix64) -> Vec<f32> {
    let mut next = || rng.next_unit() - 0.5;
    (0..n)
        .map(|_| (next() + next() + next() + next()) * std * (3.0f32).sqrt())
        .collect()
}

fn make_model(out: &Path, tokenizer_json: &Path) -> Res<()> {
    let (vocab, hidden, layers, heads, inter, positions) = (30522, 384, 12, 12, 1536, 512);
    let config = json!({
        "model_type": "bert", "architectures": ["BertModel"], "vocab_size": vocab,
        "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "intermediate_size": inter, "hidden_act": "gelu", "max_position_embeddings": positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "pad_token_id": 0,
        "position_embedding_type": "absolute"
    });
    let mut seed = SplitMix64(42);
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut add =
        |name: String, shape: &[usize], std: Option<f32>, seed: &mut SplitMix64| -> Res<()> {
            let n = shape.iter().product();
            let data = match std {
                Some(std) => random(n, std, seed),
                None if name.ends_with("LayerNorm.weight") => vec![1.0; n],
                None => vec![0.0; n],
            };
            tensors.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
            Ok(())
        };
    add(
        "embeddings.word_embeddings.weight".into(),
        &[vocab, hidden],
        Some(0.02),
        &mut seed,
    )?;
    add(
        "embeddings.position_embeddings.weight".into(),
        &[positions, hidden],
        Some(0.02),
        &mut seed,
    )?;
    add(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, hidden],
        Some(0.02),
        &mut seed,
    )?;
    add(
        "embeddings.LayerNorm.weight".into(),
        &[hidden],
        None,
        &mut seed,
    )?;
    add(
        "embeddings.LayerNorm.bias".into(),
        &[hidden],
        None,
        &mut seed,
    )?;
    for l in 0..layers {
        let p = format!("encoder.layer.{l}");
        for (name, out_dim, in_dim) in [
            ("attention.self.query", hidden, hidden),
            ("attention.self.key", hidden, hidden),
            ("attention.self.value", hidden, hidden),
            ("attention.output.dense", hidden, hidden),
            ("intermediate.dense", inter, hidden),
            ("output.dense", hidden, inter),
        ] {
            add(
                format!("{p}.{name}.weight"),
                &[out_dim, in_dim],
                Some(0.02),
                &mut seed,
            )?;
            add(
                format!("{p}.{name}.bias"),
                &[out_dim],
                Some(0.02),
                &mut seed,
            )?;
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}.{norm}.weight"), &[hidden], None, &mut seed)?;
            add(format!("{p}.{norm}.bias"), &[hidden], None, &mut seed)?;
        }
    }
    std::fs::create_dir_all(out)?;
    candle_core::safetensors::save(&tensors, out.join("model.safetensors"))?;
    std::fs::write(out.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    std::fs::copy(tokenizer_json, out.join("tokenizer.json"))?;
    println!("wrote a GTE-small-shaped random BERT to {}", out.display());
    Ok(())
}

/// Instruction-like English texts of ~100 to ~160 tokens, varied per text.
fn texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "learns",
        "which",
        "training",
        "examples",
        "help",
        "a",
        "target",
        "question",
        "about",
        "history",
        "science",
        "and",
        "language",
        "when",
        "we",
        "retrain",
        "on",
        "small",
        "subsets",
        "of",
        "data",
        "then",
        "measure",
        "loss",
        "for",
        "each",
        "one",
        "attribution",
        "gradient",
        "influence",
        "encoder",
        "ranking",
        "group",
        "score",
    ];
    (0..n)
        .map(|i| {
            let words = 84 + (i * 37) % 40;
            let word = |j: usize| WORDS[(i * 7 + j * 13 + j * j) % WORDS.len()];
            let prompt: Vec<&str> = (0..words / 2).map(word).collect();
            let response: Vec<&str> = (words / 2..words).map(word).collect();
            airrep_model::format_pair(&prompt.join(" "), &response.join(" "))
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn bench(device: DeviceSpec, model_dir: &Path, n: usize, batch: usize, out: &Path) -> Res<()> {
    const RUNS: usize = 3;
    std::fs::create_dir_all(out)?;
    let texts = texts(n);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut results = serde_json::Map::new();
    for precision in [Precision::Bf16, Precision::F32] {
        let t0 = Instant::now();
        let encoder = Encoder::from_dir(
            model_dir,
            EncoderOptions {
                batch_size: batch,
                device,
                dtype: Some(precision),
                ..Default::default()
            },
        )?;
        let load_s = t0.elapsed().as_secs_f64();
        // Token ids, in the order and batches the encoder forms (longest first).
        let ids = encoder.tokenizer().encode_all(&texts)?;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(ids[i].len()));
        if precision == Precision::F32 {
            let mean = ids.iter().map(Vec::len).sum::<usize>() as f64 / n as f64;
            let (min, max) = (
                ids.iter().map(Vec::len).min(),
                ids.iter().map(Vec::len).max(),
            );
            println!("{n} texts, tokens mean {mean:.1} min {min:?} max {max:?}, batch {batch}");
            std::fs::write(out.join("ids.json"), serde_json::to_vec(&ids)?)?;
            results.insert("mean_tokens".into(), json!(mean));
        }
        // End to end.
        encoder.encode(&texts[..batch.min(n)])?; // warm-up: kernels, cuBLAS handles
        let mut e2e = Vec::new();
        let mut first = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let emb = encoder.encode(&texts)?;
            e2e.push(n as f64 / t.elapsed().as_secs_f64());
            first = emb[..16].to_vec();
        }
        // Forward only: the same model, pre-tokenised batches.
        let batches: Vec<TokenBatch> = order
            .chunks(batch)
            .map(|c| {
                let seqs: Vec<&[u32]> = c.iter().map(|&i| ids[i].as_slice()).collect();
                TokenBatch::new(&seqs, encoder.tokenizer().pad_id())
            })
            .collect();
        let mut fwd = Vec::new();
        for run in 0..=RUNS {
            let t = Instant::now();
            for b in &batches {
                encoder.forward(b)?.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            }
            if run > 0 {
                fwd.push(n as f64 / t.elapsed().as_secs_f64());
            }
        }
        let (e2e, fwd) = (median(e2e), median(fwd));
        println!(
            "ours {precision:>4} on {device}: end-to-end {e2e:>9.0} texts/s, forward-only {fwd:>9.0} texts/s (load {load_s:.2}s)"
        );
        results.insert(
            precision.to_string(),
            json!({"end_to_end_texts_per_s": e2e, "forward_texts_per_s": fwd, "load_s": load_s, "first16": first}),
        );
    }
    results.insert("n".into(), json!(n));
    results.insert("batch".into(), json!(batch));
    std::fs::write(
        out.join("ours.json"),
        serde_json::to_vec_pretty(&Value::Object(results))?,
    )?;
    Ok(())
}

fn train_proxy(
    device: DeviceSpec,
    model_dir: &Path,
    targets: usize,
    subsets: usize,
    members: usize,
) -> Res<()> {
    use candle_nn::{Optimizer, ParamsAdamW, VarMap};
    let dev = device.create()?;
    let checkpoint = Checkpoint::from_dir(model_dir)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let model = ReferenceModel::load(
        vb,
        &checkpoint.config,
        Some(checkpoint.config.hidden_size),
        Kernels::Differentiable,
    )?;
    // Start from the checkpoint's weights (the VarMap created the variables).
    for (name, var) in varmap.data().lock().unwrap().iter() {
        match checkpoint.tensors().get(name) {
            Some(t) => var.set(&t.to_device(&dev)?)?,
            // A base model's fresh projector: U(+-1/sqrt(in)) as in DESIGN 1.
            None => {
                let bound = 1.0 / (checkpoint.config.hidden_size as f64).sqrt();
                var.set(&Tensor::rand(-bound, bound, var.shape(), &dev)?.to_dtype(DType::F32)?)?
            }
        }
    }
    let mut opt = candle_nn::AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: 1e-4,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let encoder = Encoder::from_dir(model_dir, EncoderOptions::default())?;
    let n = targets + subsets * members;
    let texts = texts(n);
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenizer().encode_all(&texts)?;
    let pad = encoder.tokenizer().pad_id();
    let encode = |range: std::ops::Range<usize>| -> Res<Tensor> {
        let mut parts = Vec::new();
        let idx: Vec<usize> = range.collect();
        for chunk in idx.chunks(64) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            let (input_ids, mask) = TokenBatch::new(&seqs, pad).to_tensors(&dev)?;
            parts.push(model.forward(&input_ids, &mask)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    };
    let mut times = Vec::new();
    for step in 0..4 {
        let t = Instant::now();
        let e_t = encode(0..targets)?;
        let e_m = encode(targets..n)?;
        let s = e_t
            .matmul(&e_m.t()?)?
            .reshape((targets, subsets, members))?;
        let a = candle_nn::ops::softmax(&s.abs()?, 2)?;
        let g = (a * &s)?.sum(2)?; // [targets, subsets]
        let diff = g.unsqueeze(2)?.broadcast_sub(&g.unsqueeze(1)?)?;
        let loss = ((diff.neg()?.exp()? + 1.0)?.log()?).mean_all()?;
        opt.backward_step(&loss)?;
        let loss = loss.to_scalar::<f32>()?; // waits for the device
        dev.synchronize()?;
        let secs = t.elapsed().as_secs_f64();
        println!("train-proxy step {step}: {secs:.3} s (loss {loss:.4})");
        if step > 0 {
            times.push(secs);
        }
    }
    println!(
        "train-proxy on {device}: {targets} targets x {subsets} subsets x {members} members \
         ({n} texts, mean {:.0} tokens): {:.3} s/step (median of 3)",
        ids.iter().map(Vec::len).sum::<usize>() as f64 / n as f64,
        median(times)
    );
    Ok(())
}

fn op_profile(device: DeviceSpec) -> Res<()> {
    let dev = device.create()?;
    let (b, s, h, nh, inter) = (256usize, 128usize, 384usize, 12usize, 1536usize);
    for dtype in [DType::BF16, DType::F32] {
        let x = Tensor::randn(0f32, 1.0, (b, s, h), &dev)?.to_dtype(dtype)?;
        let w = Tensor::randn(0f32, 0.02, (h, h), &dev)?.to_dtype(dtype)?;
        let wi = Tensor::randn(0f32, 0.02, (inter, h), &dev)?.to_dtype(dtype)?;
        let bias = Tensor::zeros(h, dtype, &dev)?;
        let ln_w = Tensor::ones(h, dtype, &dev)?;
        let lin = candle_nn::Linear::new(w.clone(), Some(bias.clone()));
        let lin_i = candle_nn::Linear::new(wi.clone(), None);
        let mask = Tensor::ones((b, s), DType::F32, &dev)?;
        let hd = h / nh;
        let q = x.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()?;
        let scores = q.matmul(&q.t()?)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let inner = lin_i.forward(&x)?;
        let time = |name: &str, f: &dyn Fn() -> candle_core::Result<Tensor>| -> Res<f64> {
            f()?;
            dev.synchronize()?;
            let t = Instant::now();
            for _ in 0..20 {
                f()?;
            }
            dev.synchronize()?;
            let ms = t.elapsed().as_secs_f64() * 1000.0 / 20.0;
            println!("  {dtype:?} {name:<44} {ms:>8.3} ms");
            Ok(ms)
        };
        println!("op profile on {device}, {dtype:?}, batch {b} x {s} tokens (one layer)");
        time("Linear 384->384, 3-D input (x4 per layer)", &|| {
            lin.forward(&x)
        })?;
        time("same as one 2-D matmul + bias", &|| {
            x.reshape((b * s, h))?.matmul(&w.t()?)?.broadcast_add(&bias)
        })?;
        time("Linear 384->1536 (no bias)", &|| lin_i.forward(&x))?;
        time("gelu_erf on [b,s,1536]", &|| inner.gelu_erf())?;
        time("layer_norm (x2 per layer)", &|| {
            candle_nn::ops::layer_norm(&x, &ln_w, &bias, 1e-12)
        })?;
        time("residual add (x2 per layer)", &|| x.add(&x))?;
        time("split heads: reshape+transpose+contiguous (x3)", &|| {
            x.reshape((b, s, nh, hd))?.transpose(1, 2)?.contiguous()
        })?;
        time("scale q", &|| &q / 8.0)?;
        time("q.k^T batched matmul", &|| q.matmul(&q.t()?))?;
        time("mask bias + broadcast_add", &|| {
            let bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?
                .to_dtype(dtype)?
                .reshape((b, 1, 1, s))?;
            scores.broadcast_add(&bias)
        })?;
        time("softmax_last_dim", &|| {
            candle_nn::ops::softmax_last_dim(&scores)
        })?;
        time("probs.v batched matmul", &|| probs.matmul(&q))?;
        time("merge heads: transpose+reshape", &|| {
            q.transpose(1, 2)?.reshape((b, s, h))
        })?;
    }
    Ok(())
}

/// Seconds per `Trainer` step at a paper-like shape on random-weight `model_dir`.
fn train_bench(
    device: DeviceSpec,
    model_dir: &Path,
    targets: usize,
    subsets: usize,
    members: usize,
    chunk_rows: usize,
    steps: usize,
) -> Res<()> {
    let checkpoint = Checkpoint::from_dir(model_dir)?;
    let tokenizer = std::fs::read(model_dir.join("tokenizer.json"))?;
    let mut all = texts(targets + subsets * members);
    let examples = all.split_off(targets);
    let mut seed = SplitMix64(7);
    let losses = (0..subsets)
        .map(|_| {
            random(targets, 1.0, &mut seed)
                .into_iter()
                .map(|x| 2.0 + x as f64)
                .collect()
        })
        .collect();
    let data = TrainData {
        examples,
        targets: all,
        subsets: (0..subsets)
            .map(|k| (k * members..(k + 1) * members).collect())
            .collect(),
        losses,
    };
    let options = TrainOptions {
        steps,
        targets_per_step: targets,
        subsets_per_step: subsets,
        max_members_per_subset: Some(members),
        train_layers: TrainLayers::All,
        depth: Depth::All,
        holdout_fraction: 0.0,
        device,
        chunk_rows,
        ..TrainOptions::default()
    };
    let t = Instant::now();
    let mut trainer = Trainer::new(&checkpoint, &tokenizer, data, options, &|| false)?;
    println!(
        "train-bench: trainer built in {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let mut times = Vec::new();
    for step in 0..steps.max(2) {
        let t = Instant::now();
        let log = trainer.step(&|| false)?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "train-bench step {step}: {secs:.3} s (loss {:.4}, grad norm {:.4}, {} pairs)",
            log.loss, log.grad_norm, log.kept_pairs
        );
        if step > 0 {
            times.push(secs);
        }
    }
    println!(
        "train-bench on {device}: {targets} targets x {subsets} subsets x {members} members \
         ({} texts per pass), chunk {chunk_rows}: {:.3} s/step (median of {})",
        targets + subsets * members,
        median(times.clone()),
        times.len()
    );
    Ok(())
}
