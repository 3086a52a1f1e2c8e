//! `airrep-quality --token-states MODEL_DIR --out DIR`: the raw material for asking what a
//! representation can reach on the benchmark's labels before training anything
//! (`benches/representation_ceiling.py`, docs/training.md). Writes to DIR:
//! * `ids.txt`: the model's token ids of every text, one text per line, the pool first and
//!   then every target;
//! * `h{k}.f32`: the hidden state of every token after the embeddings (k = 0) and after each
//!   layer k, little-endian f32 `[tokens, hidden]`, texts in the order of `ids.txt`;
//! * `data.json`: how many texts are pool and targets, how many subsets and targets train,
//!   the subsets (pool indices) and the losses `[subset][target]`.

use std::io::Write;
use std::path::Path;

use airrep_model::{Checkpoint, ProjectorInit, TextTokenizer, TokenBatch, TrainableModel};

use crate::Setup;

type Error = Box<dyn std::error::Error>;

/// Texts per forward pass.
const CHUNK: usize = 64;

pub fn write(setup: &Setup, model_dir: &Path, out: &Path) -> Result<(), Error> {
    let checkpoint = Checkpoint::from_dir(model_dir)?;
    let tokenizer_json = std::fs::read(model_dir.join("tokenizer.json"))?;
    let tokenizer = TextTokenizer::for_model(
        &tokenizer_json,
        airrep_model::DEFAULT_MAX_LENGTH,
        &checkpoint.config,
    )?;
    let device = candle_core::Device::Cpu;
    let model = TrainableModel::new(&checkpoint, ProjectorInit::Identity, 0, &device)?;
    let texts: Vec<String> = setup
        .pool
        .iter()
        .chain(&setup.targets)
        .map(|pair| pair.text())
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = tokenizer.encode_all(&texts)?;

    let mut lines = std::io::BufWriter::new(std::fs::File::create(out.join("ids.txt"))?);
    for row in &ids {
        let row: Vec<String> = row.iter().map(u32::to_string).collect();
        writeln!(lines, "{}", row.join(" "))?;
    }
    lines.flush()?;

    let layers = model.model().num_layers();
    let mut states = (0..=layers)
        .map(|k| std::fs::File::create(out.join(format!("h{k}.f32"))).map(std::io::BufWriter::new))
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in ids.chunks(CHUNK) {
        let sequences: Vec<&[u32]> = chunk.iter().map(Vec::as_slice).collect();
        let (batch, mask) = TokenBatch::new(&sequences, tokenizer.pad_id()).to_tensors(&device)?;
        for (k, file) in states.iter_mut().enumerate() {
            let hidden = model.model().hidden_states(&batch, &mask, k)?;
            for (row, sequence) in sequences.iter().enumerate() {
                let values: Vec<f32> = hidden
                    .get(row)?
                    .narrow(0, 0, sequence.len())?
                    .flatten_all()?
                    .to_vec1()?;
                for x in values {
                    file.write_all(&x.to_le_bytes())?;
                }
            }
        }
    }
    for file in &mut states {
        file.flush()?;
    }

    let p = &setup.params;
    let data = serde_json::json!({
        "pool": setup.pool.len(),
        "targets": setup.targets.len(),
        "train_targets": p.train_targets,
        "train_subsets": p.train_subsets,
        "subsets": setup.subsets,
        "losses": setup.losses,
    });
    std::fs::write(out.join("data.json"), data.to_string())?;
    Ok(())
}
