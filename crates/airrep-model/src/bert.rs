//! The AirRep encoder: BERT, mean pooling over every non-padding token ([CLS] and
//! [SEP] included; the response weighted when the model says so, see [`crate::pooling`]),
//! then the projector `e = W·pooled + b` (DESIGN 1). No L2 norm, as in
//! the paper, unless the checkpoint carries `projector.scale` s: then `e = s·y/|y|` with
//! `y = W·pooled + b` (docs/training.md says why training may choose it).
//!
//! This file owns the reference forward, [`ReferenceModel`], composed from candle ops in the
//! shape of candle-transformers' `bert.rs`: embeddings, then per layer post-norm
//! self-attention and a GELU feed-forward block, then pooling and the projector. Training
//! and the GPU run it. The fused CPU inference model ([`fused::FusedModel`]) computes the
//! same function from the same checkpoint on packed products and fused kernels; its tests
//! hold it to this one.
//!
//! Two kernel sets ([`Kernels`]) with the same math: [`Kernels::Differentiable`] for
//! training (every op has a backward pass), [`Kernels::Portable`] for inference on any
//! backend and dtype (fused layer norm and softmax, forward only).
//!
//! Mixed precision ([`Kernels::Portable`] with a bf16 `VarBuilder`, i.e.
//! `Precision::Bf16`): as PyTorch's autocast, only the matrix products run in bf16 — the
//! linear layers' weights are bf16 and their inputs are cast to bf16, q·kᵀ and p·v take
//! bf16 operands — while the embeddings, the residual stream, the linear biases, the layer
//! norms, GELU and the softmax's accumulation stay f32. The linear layers' products have
//! f32 outputs with the bias folded in ([`mixed::linear`]); q·kᵀ and p·v return bf16.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::config::BertConfig;
use crate::error::Result;
use crate::pooling::{pool_weights, weighted_mean, weighted_sum, ResponseWeighting};

pub mod fused;
mod mixed;

/// Which ops the reference forward is composed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Composed from primitive ops, every one with a backward pass: training.
    Differentiable,
    /// Forward-only candle ops that every backend implements (fused layer norm and
    /// softmax on CUDA), in any float dtype: inference off the CPU or in bf16.
    Portable,
}

/// A linear layer `x·Wᵀ + b`.
enum Dense {
    /// [`Kernels::Differentiable`]: candle's.
    Candle(Linear),
    /// [`Kernels::Portable`]: the weight (bf16, or f32) and an f32 bias. The input is cast
    /// to the weight's dtype; the product (f32 accumulation) has an f32 output with the
    /// bias folded in: [`mixed::linear`].
    Mixed { weight: Tensor, bias: Tensor },
}

impl Dense {
    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize, kernels: Kernels) -> Result<Self> {
        let (weight, bias) = weight_and_bias(vb, out_dim, in_dim)?;
        Ok(match kernels {
            Kernels::Differentiable => Dense::Candle(Linear::new(weight, Some(bias))),
            Kernels::Portable => Dense::Mixed { weight, bias },
        })
    }

    /// `x·Wᵀ + b`, in f32 for [`Dense::Mixed`] (whatever `x`'s dtype).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Dense::Candle(linear) => linear.forward(x),
            Dense::Mixed { weight, bias } => mixed::linear(x, weight, bias),
        }
    }

    /// The dtype the products run in.
    fn matmul_dtype(&self) -> DType {
        match self {
            Dense::Candle(linear) => linear.weight().dtype(),
            Dense::Mixed { weight, .. } => weight.dtype(),
        }
    }
}

/// A linear layer's weight `[out_dim, in_dim]` in `vb`'s dtype (the dtype the products run
/// in) and its bias in f32 (mixed precision keeps biases f32).
fn weight_and_bias(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> Result<(Tensor, Tensor)> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = f32_vb(vb).get(out_dim, "bias")?;
    Ok((weight, bias))
}

/// `vb` reading f32: everything but the linear weights is f32 in every precision.
fn f32_vb<'a>(vb: &VarBuilder<'a>) -> VarBuilder<'a> {
    vb.clone().set_dtype(DType::F32)
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
    kernels: Kernels,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, config: &BertConfig, kernels: Kernels) -> Result<Self> {
        let vb = f32_vb(vb);
        Ok(Self {
            weight: vb.get(config.hidden_size, "weight")?,
            bias: vb.get(config.hidden_size, "bias")?,
            eps: config.layer_norm_eps as f32,
            kernels,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (weight, bias, eps) = (&self.weight, &self.bias, self.eps);
        match self.kernels {
            // The fused op has no backward pass: a model built on it trains nothing.
            Kernels::Differentiable => candle_nn::ops::layer_norm_slow(x, weight, bias, eps),
            Kernels::Portable => candle_nn::ops::layer_norm(x, weight, bias, eps),
        }
    }
}

/// Word, position and token-type embeddings, then a layer norm. Shared with the fused
/// model, which builds it with [`Kernels::Portable`].
struct Embeddings {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        let h = c.hidden_size;
        let vb = f32_vb(vb);
        Ok(Self {
            word: vb.get((c.vocab_size, h), "word_embeddings.weight")?,
            position: vb.get((c.max_position_embeddings, h), "position_embeddings.weight")?,
            token_type: vb.get((c.type_vocab_size, h), "token_type_embeddings.weight")?,
            norm: LayerNorm::load(&vb.pp("LayerNorm"), c, kernels)?,
        })
    }

    /// `[batch, seq] u32 -> [batch, seq, hidden]`.
    fn forward(&self, input_ids: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq) = input_ids.dims2()?;
        let hidden = self.word.dim(1)?;
        let words = self.word.index_select(&input_ids.flatten_all()?, 0)?;
        // token_type_ids are all zero (DESIGN 1): every position adds type row 0.
        let position_and_type = self
            .position
            .narrow(0, 0, seq)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?;
        let x = words
            .reshape((batch, seq, hidden))?
            .broadcast_add(&position_and_type)?;
        self.norm.forward(&x)
    }
}

/// Post-norm multi-head self-attention: `norm(x + output(softmax(q·kᵀ/√d)·v))`.
struct SelfAttention {
    query: Dense,
    key: Dense,
    value: Dense,
    output: Dense,
    norm: LayerNorm,
    num_heads: usize,
    kernels: Kernels,
}

impl SelfAttention {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Self {
            query: Dense::load(&vb.pp("self.query"), h, h, kernels)?,
            key: Dense::load(&vb.pp("self.key"), h, h, kernels)?,
            value: Dense::load(&vb.pp("self.value"), h, h, kernels)?,
            output: Dense::load(&vb.pp("output.dense"), h, h, kernels)?,
            norm: LayerNorm::load(&vb.pp("output.LayerNorm"), c, kernels)?,
            num_heads: c.num_attention_heads,
            kernels,
        })
    }

    /// `attention_mask` is `[batch, seq]`, 1 on real tokens and 0 on padding.
    fn forward(&self, x: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let head_dim = hidden / self.num_heads;
        // In mixed precision the heads are split by the cast to bf16 (one copy), the
        // products take bf16 operands, and the context stays bf16: the output projection
        // would cast it to bf16 anyway. Otherwise `to_dtype` is a no-op.
        let dtype = self.query.matmul_dtype();
        let split_heads = |t: Tensor| {
            t.reshape((batch, seq, self.num_heads, head_dim))?
                .transpose(1, 2)?
                .to_dtype(dtype)?
                .contiguous()
        };
        // The input is cast once for the three projections.
        let input = x.to_dtype(dtype)?;
        // Scaling q before the product is cheaper than scaling the seq x seq scores.
        let q = split_heads((self.query.forward(&input)? / (head_dim as f64).sqrt())?)?;
        let k = split_heads(self.key.forward(&input)?)?;
        let v = split_heads(self.value.forward(&input)?)?;
        let probs = match self.kernels {
            Kernels::Differentiable => masked_softmax(&q.matmul(&k.t()?)?, attention_mask)?,
            Kernels::Portable => portable_attention(&q, &k, attention_mask)?,
        };
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))?;
        self.norm.forward(&(self.output.forward(&context)? + x)?)
    }
}

/// Softmax of `scores` `[batch, heads, seq, seq]` over the keys that `attention_mask`
/// `[batch, seq]` marks as real tokens, from differentiable ops.
fn masked_softmax(scores: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    let (batch, seq) = attention_mask.dims2()?;
    let bias = ((1.0 - attention_mask)? * f32::MIN as f64)?.reshape((batch, 1, 1, seq))?;
    candle_nn::ops::softmax(&scores.broadcast_add(&bias)?, D::Minus1)
}

/// Attention probabilities `[batch, heads, seq, seq]` from `q` (already scaled) and `k`,
/// both `[batch, heads, seq, head_dim]`, for [`Kernels::Portable`]. The key mask enters the
/// product itself: q gains a column of ones and k a column holding each key's bias (0, or
/// -1e30 on padding; -1e30 stays finite in bf16), zero-padded to a multiple of 8 columns
/// for tensor cores. On CUDA this replaces a broadcast add of a `[b, 1, 1, s]` bias to the
/// `[b, h, s, s]` scores, the largest single cost of a layer (docs/gpu.md).
fn portable_attention(
    q: &Tensor,
    k: &Tensor,
    attention_mask: &Tensor,
) -> candle_core::Result<Tensor> {
    let (batch, heads, seq, head_dim) = q.dims4()?;
    let (dtype, device) = (q.dtype(), q.device());
    let extra = 8 - head_dim % 8;
    let bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?
        .to_dtype(dtype)?
        .reshape((batch, 1, seq, 1))?
        .broadcast_as((batch, heads, seq, 1))?
        .contiguous()?;
    let ones = Tensor::ones((batch, heads, seq, 1), dtype, device)?;
    let mut q_parts = vec![q.clone(), ones];
    let mut k_parts = vec![k.clone(), bias];
    if extra > 1 {
        let zeros = Tensor::zeros((batch, heads, seq, extra - 1), dtype, device)?;
        q_parts.push(zeros.clone());
        k_parts.push(zeros);
    }
    let scores = Tensor::cat(&q_parts, 3)?.matmul(&Tensor::cat(&k_parts, 3)?.t()?)?;
    if device.is_cpu() && dtype != DType::F32 {
        // candle's CPU softmax sums in the input dtype: a bf16 sum over hundreds of keys
        // is far off. (Its CUDA kernel accumulates in f32.)
        candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)
    } else {
        candle_nn::ops::softmax_last_dim(&scores)
    }
}

/// `norm(x + output(gelu(intermediate(x))))`, exact (erf) GELU as HF's "gelu".
struct FeedForward {
    intermediate: Dense,
    output: Dense,
    norm: LayerNorm,
}

impl FeedForward {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        Ok(Self {
            intermediate: Dense::load(&vb.pp("intermediate.dense"), i, h, kernels)?,
            output: Dense::load(&vb.pp("output.dense"), h, i, kernels)?,
            norm: LayerNorm::load(&vb.pp("output.LayerNorm"), c, kernels)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = self.intermediate.forward(x)?.gelu_erf()?;
        self.norm.forward(&(self.output.forward(&inner)? + x)?)
    }
}

struct Layer {
    attention: SelfAttention,
    feed_forward: FeedForward,
}

impl Layer {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        Ok(Self {
            attention: SelfAttention::load(&vb.pp("attention"), c, kernels)?,
            feed_forward: FeedForward::load(vb, c, kernels)?,
        })
    }

    fn forward(&self, x: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
        self.feed_forward
            .forward(&self.attention.forward(x, attention_mask)?)
    }
}

/// The projector, in f32 whatever the encoder's dtype; None for a base model that has not
/// been trained yet (identity). Shared with the fused model.
struct Projector {
    linear: Option<Linear>,
    /// `[1]`: the length every output is scaled to, when the checkpoint has one.
    scale: Option<Tensor>,
    output_dim: usize,
}

impl Projector {
    fn load(vb: &VarBuilder, config: &BertConfig, projector_dim: Option<usize>) -> Result<Self> {
        let vb = vb.pp("projector").set_dtype(DType::F32);
        let (linear, scale) = match projector_dim {
            Some(out_dim) => {
                let (weight, bias) = weight_and_bias(&vb, out_dim, config.hidden_size)?;
                let scale = match vb.contains_tensor("scale") {
                    true => Some(vb.get(1, "scale")?),
                    false => None,
                };
                (Some(Linear::new(weight, Some(bias))), scale)
            }
            None => (None, None),
        };
        Ok(Self {
            linear,
            scale,
            output_dim: projector_dim.unwrap_or(config.hidden_size),
        })
    }

    fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        let projected = match &self.linear {
            Some(linear) => linear.forward(pooled)?,
            None => pooled.clone(),
        };
        Ok(match &self.scale {
            Some(scale) => unit_length(&projected)?.broadcast_mul(scale)?,
            None => projected,
        })
    }
}

/// Each row of `x` `[rows, dim]` divided by its L2 norm (a zero row stays zero, as in
/// `torch.nn.functional.normalize`); differentiable.
pub(crate) fn unit_length(x: &Tensor) -> candle_core::Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

pub struct ReferenceModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    projector: Projector,
    response_weighting: Option<ResponseWeighting>,
}

impl ReferenceModel {
    /// Builds the model from AirRep-named tensors (see `checkpoint`): plain tensors for
    /// inference, a `VarMap` for training. `projector_dim` is the projector's output
    /// width, None for a model without one.
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        projector_dim: Option<usize>,
        kernels: Kernels,
    ) -> Result<Self> {
        let bert = vb.pp("bert");
        let layers = (0..config.num_hidden_layers)
            .map(|i| Layer::load(&bert.pp(format!("encoder.layer.{i}")), config, kernels))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: Embeddings::load(&bert.pp("embeddings"), config, kernels)?,
            layers,
            projector: Projector::load(&vb, config, projector_dim)?,
            response_weighting: config.response_weighting.clone(),
        })
    }

    pub fn output_dim(&self) -> usize {
        self.projector.output_dim
    }

    /// The response weighting of this model's pooling, if any.
    pub fn response_weighting(&self) -> Option<&ResponseWeighting> {
        self.response_weighting.as_ref()
    }

    /// The pooling weights `[batch, seq]` of a batch under this model's response
    /// weighting (the mask itself without one), see [`crate::pooling`].
    pub fn pool_weights(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        pool_weights(input_ids, attention_mask, self.response_weighting.as_ref())
    }

    /// `input_ids` u32 and `attention_mask` f32 (1 real, 0 padding), both `[batch, seq]`
    /// and padded on the right as [`crate::TokenBatch`] does; returns the embeddings
    /// `[batch, output_dim]`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask, self.layers.len())?;
        let weights = self.pool_weights(input_ids, attention_mask)?;
        self.project(&self.pool_from_layer(&hidden, attention_mask, &weights, self.layers.len())?)
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// The hidden states `[batch, seq, hidden]` after the embeddings and the first `layers`
    /// layers: the bottom of [`Self::forward`], which training caches when it is frozen.
    pub fn hidden_states(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        layers: usize,
    ) -> Result<Tensor> {
        let mut hidden = self.embeddings.forward(input_ids)?;
        for layer in &self.layers[..layers] {
            hidden = layer.forward(&hidden, attention_mask)?;
        }
        Ok(hidden)
    }

    /// Layers `first..` over `hidden` (the output of layer `first − 1`), then the weighted
    /// mean by `pool_weights` `[batch, seq]` (see [`Self::pool_weights`]): `[batch, hidden]`
    /// in f32, before the projector.
    pub fn pool_from_layer(
        &self,
        hidden: &Tensor,
        attention_mask: &Tensor,
        pool_weights: &Tensor,
        first: usize,
    ) -> Result<Tensor> {
        let mut hidden = hidden.clone();
        for layer in &self.layers[first..] {
            hidden = layer.forward(&hidden, attention_mask)?;
        }
        Ok(weighted_mean(&hidden, pool_weights)?)
    }

    /// `Σ_t w_t·h_t` `[batch, hidden]` in f32 after each layer, bottom first, for each of
    /// `pool_weights` (`[weighting][depth]`): what every truncation of this encoder
    /// (`Checkpoint::truncated`) pools, before the division, from one pass.
    pub fn summed_by_depth(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
        pool_weights: &[Tensor],
    ) -> Result<Vec<Vec<Tensor>>> {
        let mut hidden = self.embeddings.forward(input_ids)?;
        let mut sums = vec![Vec::with_capacity(self.layers.len()); pool_weights.len()];
        for layer in &self.layers {
            hidden = layer.forward(&hidden, attention_mask)?;
            for (by_depth, weights) in sums.iter_mut().zip(pool_weights) {
                by_depth.push(weighted_sum(&hidden, weights)?);
            }
        }
        Ok(sums)
    }

    /// The projector over pooled states `[batch, hidden]` (identity without one).
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        self.projector.forward(pooled)
    }
}
