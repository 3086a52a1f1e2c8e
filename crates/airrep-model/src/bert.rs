//! The AirRep encoder: BERT, mean pooling over every non-padding token ([CLS] and
//! [SEP] included), then the projector `e = W·pooled + b` (DESIGN 1). No L2 norm.
//!
//! One forward serves inference and training. They differ only in the layer norm,
//! softmax and GELU kernels: the fused ones are fast but have no backward pass (a model
//! built on them silently trains nothing), so training uses [`Kernels::Differentiable`].
//!
//! Mixed precision ([`Kernels::Portable`] with a bf16 `VarBuilder`, i.e.
//! `Precision::Bf16`): as PyTorch's autocast, only the matrix products run in bf16 — the
//! linear layers' weights are bf16 and their inputs are cast to bf16, q·kᵀ and p·v take
//! bf16 operands — while the embeddings, the residual stream, the linear biases, the layer
//! norms, GELU and the softmax's accumulation stay f32. The linear layers' products have
//! f32 outputs with the bias folded in ([`mixed::linear`]); q·kᵀ and p·v return bf16.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Linear, VarBuilder};

use crate::config::BertConfig;
use crate::error::Result;
use crate::kernels::{self, Product};

mod mixed;

/// Which implementation of the non-matmul kernels the forward uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernels {
    /// Fused candle-nn and our own CPU kernels, products as the [`Product`] says;
    /// forward only, CPU only.
    Fused(Product),
    /// Composed from primitive ops, every one with a backward pass.
    Differentiable,
    /// Forward-only candle ops that every backend implements (fused layer norm and
    /// softmax on CUDA), in any float dtype: inference off the CPU or in bf16.
    Portable,
}

impl Kernels {
    /// The inference kernels for a model on `device` computing in `dtype`: our fused CPU
    /// kernels where they apply (CPU, f32; bf16 with AMX; AMX products only if `amx`),
    /// candle's portable ones elsewhere.
    pub fn inference(device: &Device, dtype: DType, amx: bool) -> Self {
        match Product::for_cpu(dtype, amx) {
            Some(product) if device.is_cpu() => Kernels::Fused(product),
            _ => Kernels::Portable,
        }
    }

    fn layer_norm(
        self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        eps: f32,
    ) -> candle_core::Result<Tensor> {
        match self {
            Kernels::Fused(_) => candle_nn::ops::layer_norm(x, weight, bias, eps),
            Kernels::Differentiable => candle_nn::ops::layer_norm_slow(x, weight, bias, eps),
            Kernels::Portable => candle_nn::ops::layer_norm(x, weight, bias, eps),
        }
    }

    /// Exact (erf) GELU, HF's "gelu".
    fn gelu(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            // The fused path never gets here: its feed-forward block runs in `kernels`.
            Kernels::Fused(_) | Kernels::Differentiable | Kernels::Portable => x.gelu_erf(),
        }
    }

    /// `norm(linear(x) + residual)`, the post-norm residual block's output.
    fn linear_add_norm(
        self,
        x: &Tensor,
        linear: &Dense,
        residual: &Tensor,
        norm: &LayerNorm,
    ) -> candle_core::Result<Tensor> {
        match linear {
            Dense::Packed(w) => kernels::linear(
                x,
                w,
                kernels::Epilogue::AddLayerNorm {
                    residual,
                    weight: &norm.weight,
                    bias: &norm.bias,
                    eps: norm.eps,
                },
            ),
            _ => norm.forward(&(linear.forward(x)? + residual)?),
        }
    }

    /// Attention probabilities `[batch, heads, seq, seq]` from `q` (already scaled) and
    /// `k`, both `[batch, heads, seq, head_dim]`, over the keys `attention_mask` keeps.
    fn attention(
        self,
        q: &Tensor,
        k: &Tensor,
        attention_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        match self {
            Kernels::Portable => portable_attention(q, k, attention_mask),
            _ => self.attention_probs(&q.matmul(&k.t()?)?, attention_mask),
        }
    }

    /// Softmax of `scores` `[batch, heads, seq, seq]` over the keys that
    /// `attention_mask` `[batch, seq]` marks as real tokens.
    fn attention_probs(
        self,
        scores: &Tensor,
        attention_mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        match self {
            // The fused path never gets here: its attention runs in `kernels`.
            Kernels::Fused(_) | Kernels::Differentiable => {
                let (batch, seq) = attention_mask.dims2()?;
                let bias =
                    ((1.0 - attention_mask)? * f32::MIN as f64)?.reshape((batch, 1, 1, seq))?;
                candle_nn::ops::softmax(&scores.broadcast_add(&bias)?, D::Minus1)
            }
            Kernels::Portable => {
                // A large finite bias (not f32::MIN, which is -inf in bf16) in the
                // scores' dtype; the softmax of a masked key is then exactly 0.
                let (batch, seq) = attention_mask.dims2()?;
                let bias = ((attention_mask.to_dtype(DType::F32)? - 1.0)? * 1e30)?
                    .to_dtype(scores.dtype())?
                    .reshape((batch, 1, 1, seq))?;
                let scores = scores.broadcast_add(&bias)?;
                if scores.device().is_cpu() && scores.dtype() != DType::F32 {
                    // candle's CPU softmax sums in the input dtype: a bf16 sum over
                    // hundreds of keys is far off. (Its CUDA kernel accumulates in f32.)
                    candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
                        .to_dtype(scores.dtype())
                } else {
                    candle_nn::ops::softmax_last_dim(&scores)
                }
            }
        }
    }
}

/// A linear layer: candle's, or with [`Kernels::Fused`] its weight packed once for
/// `kernels::linear` (the candle tensors are not kept: no second copy), or in mixed
/// precision a bf16 product and an f32 bias.
enum Dense {
    Candle(Linear),
    Packed(kernels::PackedLinear),
    /// [`Kernels::Portable`]: `linear` holds the weight (bf16, or f32) and no bias; `bias`
    /// is f32. The input is cast to the weight's dtype; the product (f32 accumulation) has
    /// an f32 output with the bias folded in: [`mixed::linear`].
    Mixed {
        linear: Linear,
        bias: Tensor,
    },
}

impl Dense {
    fn new(linear: Linear, kernels: Kernels) -> Result<Self> {
        Ok(match (kernels, linear.bias()) {
            (Kernels::Fused(product), Some(bias)) => {
                Dense::Packed(kernels::PackedLinear::new(linear.weight(), bias, product)?)
            }
            (Kernels::Portable, Some(bias)) => Dense::Mixed {
                linear: Linear::new(linear.weight().clone(), None),
                bias: bias.clone(),
            },
            _ => Dense::Candle(linear),
        })
    }

    fn load(vb: &VarBuilder, out_dim: usize, in_dim: usize, kernels: Kernels) -> Result<Self> {
        Self::new(linear(vb, out_dim, in_dim)?, kernels)
    }

    /// `x·Wᵀ + b`, in f32 for [`Dense::Mixed`] (whatever `x`'s dtype).
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Dense::Candle(linear) => linear.forward(x),
            Dense::Packed(w) => kernels::linear(x, w, kernels::Epilogue::None),
            Dense::Mixed { linear, bias } => mixed::linear(x, linear.weight(), bias),
        }
    }

    /// The dtype the products run in.
    fn matmul_dtype(&self) -> DType {
        match self {
            Dense::Candle(linear) | Dense::Mixed { linear, .. } => linear.weight().dtype(),
            Dense::Packed(_) => DType::F32,
        }
    }
}

/// [`Kernels::attention`] for [`Kernels::Portable`]. The key mask enters the product
/// itself: q gains a column of ones and k a column holding each key's bias (0, or -1e30
/// on padding; -1e30 stays finite in bf16), zero-padded to a multiple of 8 columns for
/// tensor cores. On CUDA this replaces a broadcast add of a `[b, 1, 1, s]` bias to the
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

/// A linear layer: the weight in `vb`'s dtype (the dtype the products run in), the bias in
/// f32 when `vb` is bf16 (mixed precision, see [`Dense::Mixed`]).
fn linear(vb: &VarBuilder, out_dim: usize, in_dim: usize) -> Result<Linear> {
    let weight = vb.get((out_dim, in_dim), "weight")?;
    let bias = f32_vb(vb).get(out_dim, "bias")?;
    Ok(Linear::new(weight, Some(bias)))
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
        self.kernels
            .layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

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

/// The q, k and v projections: three candle layers, or with [`Kernels::Fused`] one
/// packed `[3·hidden, hidden]` product that `kernels::attention` reads heads from
/// in place.
enum Projections {
    Separate {
        query: Dense,
        key: Dense,
        value: Dense,
    },
    Packed(kernels::PackedLinear),
}

struct SelfAttention {
    projections: Projections,
    output: Dense,
    norm: LayerNorm,
    num_heads: usize,
    kernels: Kernels,
}

impl SelfAttention {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        let h = c.hidden_size;
        let (query, key, value) = (
            linear(&vb.pp("self.query"), h, h)?,
            linear(&vb.pp("self.key"), h, h)?,
            linear(&vb.pp("self.value"), h, h)?,
        );
        let projections = match kernels {
            Kernels::Fused(product) => {
                let parts = [&query, &key, &value];
                let weights: Vec<&Tensor> = parts.iter().map(|l| l.weight()).collect();
                let biases = parts
                    .iter()
                    .map(|l| {
                        l.bias().ok_or_else(|| {
                            candle_core::Error::Msg("attention projection without a bias".into())
                        })
                    })
                    .collect::<candle_core::Result<Vec<_>>>()?;
                Projections::Packed(kernels::PackedLinear::new(
                    &Tensor::cat(&weights, 0)?,
                    &Tensor::cat(&biases, 0)?,
                    product,
                )?)
            }
            _ => Projections::Separate {
                query: Dense::new(query, kernels)?,
                key: Dense::new(key, kernels)?,
                value: Dense::new(value, kernels)?,
            },
        };
        Ok(Self {
            projections,
            output: Dense::load(&vb.pp("output.dense"), h, h, kernels)?,
            norm: LayerNorm::load(&vb.pp("output.LayerNorm"), c, kernels)?,
            num_heads: c.num_attention_heads,
            kernels,
        })
    }

    /// Post-norm multi-head self-attention; `attention_mask` is `[batch, seq]`, 1 on real
    /// tokens and 0 on padding.
    fn forward(&self, x: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
        let context = match &self.projections {
            Projections::Packed(qkv) => kernels::attention(
                &kernels::linear(x, qkv, kernels::Epilogue::None)?,
                attention_mask,
                self.num_heads,
            )?,
            Projections::Separate { query, key, value } => {
                self.context(x, attention_mask, query, key, value)?
            }
        };
        self.kernels
            .linear_add_norm(&context, &self.output, x, &self.norm)
    }

    /// The attention context `[batch, seq, hidden]` from candle ops.
    fn context(
        &self,
        x: &Tensor,
        attention_mask: &Tensor,
        query: &Dense,
        key: &Dense,
        value: &Dense,
    ) -> candle_core::Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let head_dim = hidden / self.num_heads;
        // In mixed precision the heads are split by the cast to bf16 (one copy), the
        // products take bf16 operands, and the context stays bf16: the output projection
        // would cast it to bf16 anyway. Otherwise `to_dtype` is a no-op.
        let dtype = query.matmul_dtype();
        let split_heads = |t: Tensor| {
            t.reshape((batch, seq, self.num_heads, head_dim))?
                .transpose(1, 2)?
                .to_dtype(dtype)?
                .contiguous()
        };
        // The input is cast once for the three projections.
        let x = x.to_dtype(dtype)?;
        // Scaling q before the product is cheaper than scaling the seq x seq scores.
        let q = split_heads((query.forward(&x)? / (head_dim as f64).sqrt())?)?;
        let k = split_heads(key.forward(&x)?)?;
        let v = split_heads(value.forward(&x)?)?;
        let probs = self.kernels.attention(&q, &k, attention_mask)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((batch, seq, hidden))
    }
}

struct FeedForward {
    intermediate: Dense,
    output: Dense,
    norm: LayerNorm,
    kernels: Kernels,
}

impl FeedForward {
    fn load(vb: &VarBuilder, c: &BertConfig, kernels: Kernels) -> Result<Self> {
        Ok(Self {
            intermediate: Dense::load(
                &vb.pp("intermediate.dense"),
                c.intermediate_size,
                c.hidden_size,
                kernels,
            )?,
            output: Dense::load(
                &vb.pp("output.dense"),
                c.hidden_size,
                c.intermediate_size,
                kernels,
            )?,
            norm: LayerNorm::load(&vb.pp("output.LayerNorm"), c, kernels)?,
            kernels,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let (Dense::Packed(up), Dense::Packed(down)) = (&self.intermediate, &self.output) {
            let norm = &self.norm;
            return kernels::feed_forward(x, up, down, &norm.weight, &norm.bias, norm.eps);
        }
        let inner = self.kernels.gelu(&self.intermediate.forward(x)?)?;
        self.kernels
            .linear_add_norm(&inner, &self.output, x, &self.norm)
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

pub struct AirRepModel {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// None for a base model that has not been trained yet: identity projection.
    projector: Option<Linear>,
    output_dim: usize,
}

impl AirRepModel {
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
        // The projector runs in f32 whatever the encoder's dtype (see `forward`).
        let projector = match projector_dim {
            Some(out_dim) => Some(linear(
                &vb.pp("projector").set_dtype(DType::F32),
                out_dim,
                config.hidden_size,
            )?),
            None => None,
        };
        Ok(Self {
            embeddings: Embeddings::load(&bert.pp("embeddings"), config, kernels)?,
            layers,
            projector,
            output_dim: projector_dim.unwrap_or(config.hidden_size),
        })
    }

    pub fn output_dim(&self) -> usize {
        self.output_dim
    }

    /// `input_ids` u32 and `attention_mask` f32 (1 real, 0 padding), both `[batch, seq]`
    /// and padded on the right as [`crate::TokenBatch`] does; returns the embeddings
    /// `[batch, output_dim]`.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden_states(input_ids, attention_mask, self.layers.len())?;
        self.project(&self.pool_from_layer(&hidden, attention_mask, self.layers.len())?)
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

    /// Layers `first..` over `hidden` (the output of layer `first − 1`), then mean pooling:
    /// `[batch, hidden]` in f32, before the projector.
    pub fn pool_from_layer(
        &self,
        hidden: &Tensor,
        attention_mask: &Tensor,
        first: usize,
    ) -> Result<Tensor> {
        let mut hidden = hidden.clone();
        for layer in &self.layers[first..] {
            hidden = layer.forward(&hidden, attention_mask)?;
        }
        // Pooling and projection accumulate in f32 even when the layers ran in bf16.
        Ok(mean_pool(
            &hidden.to_dtype(DType::F32)?,
            &attention_mask.to_dtype(DType::F32)?,
        )?)
    }

    /// Mean-pooled states `[batch, hidden]` in f32 after each layer, bottom first: what
    /// every truncation of this encoder (`Checkpoint::truncated`) pools, from one pass.
    pub fn pooled_by_depth(
        &self,
        input_ids: &Tensor,
        attention_mask: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let mask = attention_mask.to_dtype(DType::F32)?;
        let mut hidden = self.embeddings.forward(input_ids)?;
        let mut pooled = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            hidden = layer.forward(&hidden, attention_mask)?;
            pooled.push(mean_pool(&hidden.to_dtype(DType::F32)?, &mask)?);
        }
        Ok(pooled)
    }

    /// The projector over pooled states `[batch, hidden]` (identity without one).
    pub fn project(&self, pooled: &Tensor) -> Result<Tensor> {
        Ok(match &self.projector {
            Some(projector) => projector.forward(pooled)?,
            None => pooled.clone(),
        })
    }
}

/// Mean of the hidden states over real tokens: `[batch, seq, hidden] -> [batch, hidden]`.
fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
    let summed = hidden
        .broadcast_mul(&attention_mask.unsqueeze(2)?)?
        .sum(1)?;
    summed.broadcast_div(&attention_mask.sum_keepdim(1)?)
}
