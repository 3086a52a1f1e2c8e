//! A small decoder-only transformer (GPT-2 layout, pre-norm, tied embeddings) over the ids of
//! a `Vocab` (characters or subwords). Built only from differentiable candle ops: candle-nn's fused LayerNorm and
//! softmax_last_dim have no backward (DESIGN section 4), so layer_norm_slow and ops::softmax.

use crate::rng::Rng;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use candle_nn::ops::{layer_norm_slow, log_softmax, softmax};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// Token ids are below this (`Vocab::size`).
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub max_len: usize,
}

/// The weights, by name; `vars()` lists them in a fixed order (name order).
#[derive(Clone)]
pub struct Gpt {
    pub config: Config,
    pub weights: BTreeMap<String, Var>,
}

impl Gpt {
    pub fn new(config: Config, rng: &mut Rng) -> Result<Self> {
        let (d, dev) = (config.hidden, &Device::Cpu);
        let mut weights = BTreeMap::new();
        let mut add =
            |name: String, shape: &[usize], init: &dyn Fn(&mut Rng) -> f64| -> Result<()> {
                let values: Vec<f32> = (0..shape.iter().product())
                    .map(|_| init(rng) as f32)
                    .collect();
                weights.insert(
                    name,
                    Var::from_tensor(&Tensor::from_vec(values, shape, dev)?)?,
                );
                Ok(())
            };
        let normal = |std: f64| move |r: &mut Rng| r.normal() * std;
        // GPT-2 init: N(0, 0.02), residual projections scaled down by sqrt(2 * layers).
        let residual = 0.02 / (2.0 * config.layers as f64).sqrt();
        add("tok".into(), &[config.vocab, d], &normal(0.02))?;
        add("pos".into(), &[config.max_len, d], &normal(0.01))?;
        add("ln_f.g".into(), &[d], &|_| 1.0)?;
        add("ln_f.b".into(), &[d], &|_| 0.0)?;
        for l in 0..config.layers {
            add(format!("{l}.ln1.g"), &[d], &|_| 1.0)?;
            add(format!("{l}.ln1.b"), &[d], &|_| 0.0)?;
            add(format!("{l}.qkv"), &[d, 3 * d], &normal(0.02))?;
            add(format!("{l}.out"), &[d, d], &normal(residual))?;
            add(format!("{l}.ln2.g"), &[d], &|_| 1.0)?;
            add(format!("{l}.ln2.b"), &[d], &|_| 0.0)?;
            add(format!("{l}.fc1"), &[d, 4 * d], &normal(0.02))?;
            add(format!("{l}.fc1.b"), &[4 * d], &|_| 0.0)?;
            add(format!("{l}.fc2"), &[4 * d, d], &normal(residual))?;
            add(format!("{l}.fc2.b"), &[d], &|_| 0.0)?;
        }
        Ok(Gpt { config, weights })
    }

    /// An independent copy: fine-tuning one starts from the same weights each time.
    pub fn fork(&self) -> Result<Self> {
        let weights = self
            .weights
            .iter()
            .map(|(k, v)| Ok((k.clone(), Var::from_tensor(&v.as_tensor().copy()?)?)))
            .collect::<Result<_>>()?;
        Ok(Gpt {
            config: self.config,
            weights,
        })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.weights.values().cloned().collect()
    }

    pub fn save(&self, path: &std::path::Path) -> Result<()> {
        let tensors: std::collections::HashMap<_, _> = self
            .weights
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
    }

    pub fn load(config: Config, path: &std::path::Path) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
        let weights = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, Var::from_tensor(&t)?)))
            .collect::<Result<_>>()?;
        Ok(Gpt { config, weights })
    }

    fn w(&self, name: &str) -> &Tensor {
        self.weights[name].as_tensor()
    }

    /// Next-token logits [batch, len, vocab] for token ids [batch, len].
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let d = self.config.hidden;
        let tok = self
            .w("tok")
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, d))?;
        let mut x = tok.broadcast_add(&self.w("pos").narrow(0, 0, t)?)?;
        let mask = causal_mask(t)?;
        for l in 0..self.config.layers {
            let p = |n: &str| format!("{l}.{n}");
            let h = layer_norm_slow(&x, self.w(&p("ln1.g")), self.w(&p("ln1.b")), 1e-5)?;
            x = (x + self.attention(&h, &p("qkv"), &p("out"), &mask)?)?;
            let h = layer_norm_slow(&x, self.w(&p("ln2.g")), self.w(&p("ln2.b")), 1e-5)?;
            let h = h
                .broadcast_matmul(self.w(&p("fc1")))?
                .broadcast_add(self.w(&p("fc1.b")))?
                .gelu()?;
            x = (x + h
                .broadcast_matmul(self.w(&p("fc2")))?
                .broadcast_add(self.w(&p("fc2.b")))?)?;
        }
        let x = layer_norm_slow(&x, self.w("ln_f.g"), self.w("ln_f.b"), 1e-5)?;
        x.broadcast_matmul(&self.w("tok").t()?)
    }

    fn attention(&self, x: &Tensor, qkv: &str, out: &str, mask: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (heads, hd) = (self.config.heads, d / self.config.heads);
        let qkv = x.broadcast_matmul(self.w(qkv))?;
        let split = |i: usize| {
            qkv.narrow(2, i * d, d)?
                .reshape((b, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(mask)?;
        let y = softmax(&scores, D::Minus1)?.matmul(&v)?;
        y.transpose(1, 2)?
            .reshape((b, t, d))?
            .broadcast_matmul(self.w(out))
    }
}

fn causal_mask(t: usize) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| if i % t > i / t { -1e9 } else { 0.0 })
        .collect();
    Tensor::from_vec(m, (t, t), &Device::Cpu)
}

/// A padded batch: inputs, next-token targets and a 0/1 weight per predicted token.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub weights: Tensor,
}

impl Batch {
    /// `seqs`: (tokens, first position whose prediction counts). Right padding is harmless:
    /// attention is causal and padded positions weigh 0.
    pub fn new(seqs: &[(Vec<u32>, usize)]) -> Result<Self> {
        let len = seqs.iter().map(|(s, _)| s.len() - 1).max().unwrap_or(1);
        let (mut inputs, mut targets, mut weights) = (vec![], vec![], vec![]);
        for (s, from) in seqs {
            for i in 0..len {
                inputs.push(s.get(i).copied().unwrap_or(0));
                targets.push(s.get(i + 1).copied().unwrap_or(0));
                // position i predicts token i+1
                weights.push(if i + 1 >= *from && i + 1 < s.len() {
                    1f32
                } else {
                    0.0
                });
            }
        }
        let shape = (seqs.len(), len);
        Ok(Batch {
            inputs: Tensor::from_vec(inputs, shape, &Device::Cpu)?,
            targets: Tensor::from_vec(targets, shape, &Device::Cpu)?,
            weights: Tensor::from_vec(weights, shape, &Device::Cpu)?,
        })
    }
}

/// Per-sequence mean token loss over the weighted positions, [batch].
pub fn sequence_losses(model: &Gpt, batch: &Batch) -> Result<Tensor> {
    let nll = token_nll(model, batch)?;
    (nll * &batch.weights)?
        .sum(1)?
        .broadcast_div(&batch.weights.sum(1)?.clamp(1.0, f64::MAX)?)
}

/// Mean token loss over all weighted positions of the batch: the training objective.
pub fn batch_loss(model: &Gpt, batch: &Batch) -> Result<Tensor> {
    let nll = token_nll(model, batch)?;
    (nll * &batch.weights)?.sum_all()?
        / batch.weights.sum_all()?.to_scalar::<f32>()?.max(1.0) as f64
}

fn token_nll(model: &Gpt, batch: &Batch) -> Result<Tensor> {
    let logp = log_softmax(&model.forward(&batch.inputs)?, D::Minus1)?;
    logp.gather(&batch.targets.unsqueeze(2)?, 2)?
        .squeeze(2)?
        .neg()?
        .to_dtype(DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::Vocab;

    fn tokenize(text: &str) -> Vec<u32> {
        Vocab::Chars.encode(text)
    }

    fn tiny() -> Gpt {
        Gpt::new(
            Config {
                vocab: Vocab::Chars.size(),
                hidden: 8,
                layers: 2,
                heads: 2,
                max_len: 32,
            },
            &mut Rng::new(1),
        )
        .unwrap()
    }

    #[test]
    fn every_weight_gets_a_gradient() {
        let model = tiny();
        let batch =
            Batch::new(&[(tokenize("Question: a\nAnswer: b"), 3), (tokenize("hi"), 1)]).unwrap();
        let grads = batch_loss(&model, &batch).unwrap().backward().unwrap();
        for (name, var) in &model.weights {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            assert!(
                g.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0,
                "{name}: zero gradient"
            );
        }
    }

    #[test]
    fn right_padding_does_not_change_a_sequence_loss() {
        let model = tiny();
        let short = (tokenize("abc"), 1);
        let alone = sequence_losses(&model, &Batch::new(std::slice::from_ref(&short)).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let padded = sequence_losses(
            &model,
            &Batch::new(&[short, (tokenize("abcdefgh"), 1)]).unwrap(),
        )
        .unwrap();
        assert!((alone[0] - padded.to_vec1::<f32>().unwrap()[0]).abs() < 1e-5);
    }

    #[test]
    fn fork_is_independent() {
        let model = tiny();
        let copy = model.fork().unwrap();
        copy.weights["tok"]
            .set(&copy.weights["tok"].zeros_like().unwrap())
            .unwrap();
        assert!(
            model.weights["tok"]
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                != 0.0
        );
    }
}
