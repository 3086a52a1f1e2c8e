//! The fused CPU inference model: the function of [`super::ReferenceModel`], built from the
//! same checkpoint, on the packed products and fused kernels of `crate::kernels`. Forward
//! only, CPU only; activations are f32 and only the products follow the [`Product`] (f32
//! FMA, AMX split-bf16 at f32 accuracy, or AMX bf16).
//!
//! Per layer, where the reference takes a dozen candle ops:
//! * q, k and v are one packed `[3·hidden, hidden]` product that the attention kernel
//!   reads the heads from in place;
//! * the output projection adds the residual and applies the layer norm in its epilogue;
//! * the feed-forward block (product, GELU, product, residual, layer norm) is one chain
//!   over blocks of rows that stay in cache.
//!
//! The embeddings, pooling and projector are the reference's own.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::{weight_and_bias, Embeddings, Kernels, LayerNorm, Projector};
use crate::config::BertConfig;
use crate::error::Result;
use crate::kernels::{self, Epilogue, PackedLinear, Product};
use crate::pooling::{pool_weights, weighted_mean, ResponseWeighting};

/// One BERT layer on packed weights (the candle tensors are not kept: no second copy).
struct FusedLayer {
    /// q, k and v stacked.
    qkv: PackedLinear,
    attention_output: PackedLinear,
    attention_norm: LayerNorm,
    intermediate: PackedLinear,
    output: PackedLinear,
    output_norm: LayerNorm,
    num_heads: usize,
}

impl FusedLayer {
    fn load(vb: &VarBuilder, c: &BertConfig, product: Product) -> Result<Self> {
        let packed = |name: &str, out_dim: usize, in_dim: usize| -> Result<PackedLinear> {
            let (weight, bias) = weight_and_bias(&vb.pp(name), out_dim, in_dim)?;
            Ok(PackedLinear::new(&weight, &bias, product)?)
        };
        let h = c.hidden_size;
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for name in ["query", "key", "value"] {
            let (weight, bias) = weight_and_bias(&vb.pp("attention.self").pp(name), h, h)?;
            weights.push(weight);
            biases.push(bias);
        }
        // Only the norms' parameters are read: the kernels apply them.
        let norm = |name: &str| LayerNorm::load(&vb.pp(name), c, Kernels::Portable);
        Ok(Self {
            qkv: PackedLinear::new(
                &Tensor::cat(&weights, 0)?,
                &Tensor::cat(&biases, 0)?,
                product,
            )?,
            attention_output: packed("attention.output.dense", h, h)?,
            attention_norm: norm("attention.output.LayerNorm")?,
            intermediate: packed("intermediate.dense", c.intermediate_size, h)?,
            output: packed("output.dense", h, c.intermediate_size)?,
            output_norm: norm("output.LayerNorm")?,
            num_heads: c.num_attention_heads,
        })
    }

    fn forward(&self, x: &Tensor, attention_mask: &Tensor) -> candle_core::Result<Tensor> {
        let qkv = kernels::linear(x, &self.qkv, Epilogue::None)?;
        let context = kernels::attention(&qkv, attention_mask, self.num_heads)?;
        let norm = &self.attention_norm;
        let attended = kernels::linear(
            &context,
            &self.attention_output,
            Epilogue::AddLayerNorm {
                residual: x,
                weight: &norm.weight,
                bias: &norm.bias,
                eps: norm.eps,
            },
        )?;
        let norm = &self.output_norm;
        kernels::feed_forward(
            &attended,
            &self.intermediate,
            &self.output,
            &norm.weight,
            &norm.bias,
            norm.eps,
        )
    }
}

pub struct FusedModel {
    embeddings: Embeddings,
    layers: Vec<FusedLayer>,
    projector: Projector,
    response_weighting: Option<ResponseWeighting>,
}

impl FusedModel {
    /// Builds the model from AirRep-named tensors (see `checkpoint`) on the CPU, its linear
    /// layers packed for `product`; `projector_dim` as for [`super::ReferenceModel::load`].
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        projector_dim: Option<usize>,
        product: Product,
    ) -> Result<Self> {
        let bert = vb.pp("bert");
        let layers = (0..config.num_hidden_layers)
            .map(|i| FusedLayer::load(&bert.pp(format!("encoder.layer.{i}")), config, product))
            .collect::<Result<_>>()?;
        Ok(Self {
            embeddings: Embeddings::load(&bert.pp("embeddings"), config, Kernels::Portable)?,
            layers,
            projector: Projector::load(&vb, config, projector_dim)?,
            response_weighting: config.response_weighting.clone(),
        })
    }

    pub fn output_dim(&self) -> usize {
        self.projector.output_dim
    }

    /// As [`super::ReferenceModel::forward`].
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let mut hidden = self.embeddings.forward(input_ids)?;
        for layer in &self.layers {
            hidden = layer.forward(&hidden, attention_mask)?;
        }
        let weights = pool_weights(input_ids, attention_mask, self.response_weighting.as_ref())?;
        self.projector.forward(&weighted_mean(&hidden, &weights)?)
    }
}

#[cfg(test)]
mod tests {
    use airrep_core::simd::{with_tier, Tier};
    use candle_core::{DType, Device};

    use super::super::ReferenceModel;
    use super::*;
    use crate::checkpoint::Checkpoint;
    use crate::testing::{golden_dir, minilm_dir, relative_l2_error, Golden};
    use crate::tokenize::{TextTokenizer, DEFAULT_MAX_LENGTH};

    /// The fused model against the reference in both kernel sets, from the same f32
    /// checkpoint, on the golden texts as one padded batch: tiny-airrep, and MiniLM-L6
    /// where it is fetched, the f32 products on every SIMD tier the CPU has (the same
    /// bound: the tiers differ by rounding only). With f32 products only the order of the
    /// sums (and FMA's single rounding) differs
    /// (measured worst relative L2 3.9e-7 tiny-airrep, 1.6e-6 MiniLM); AMX split-bf16
    /// products, where the CPU has them, are f32 to about 1e-5 (6.4e-6, 1.4e-5). The
    /// bounds leave room for other CPUs' summation orders and stay under the golden
    /// tests' 1e-4. tiny-airrep runs a second time with its response weighted, which both
    /// models must pool alike.
    #[test]
    fn fused_forward_matches_the_reference() {
        let golden = Golden::load();
        let texts = golden.texts();
        let mut dirs = vec![golden_dir("tiny-airrep")];
        dirs.extend(minilm_dir());
        let mut products: Vec<_> = Tier::available()
            .into_iter()
            .map(|tier| (Product::F32, tier, 1e-5))
            .collect();
        if kernels::amx_available() {
            products.push((Product::AmxSplit, Tier::best(), 5e-5));
        }
        let tiny = dirs[0].clone();
        for (dir, weighted) in dirs.into_iter().map(|d| (d, false)).chain([(tiny, true)]) {
            let mut checkpoint = Checkpoint::from_dir(&dir).unwrap();
            let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
            let tokenizer =
                TextTokenizer::for_model(&tokenizer_json, DEFAULT_MAX_LENGTH, &checkpoint.config)
                    .unwrap();
            if weighted {
                checkpoint.config.response_weighting = Some(ResponseWeighting {
                    marker: crate::pooling::response_marker(&tokenizer).unwrap(),
                    weight: 2.0,
                });
            }
            let (config, projector_dim) = (&checkpoint.config, checkpoint.projector_dim());
            let batch = tokenizer.batch(&texts).unwrap();
            let (input_ids, mask) = batch.to_tensors(&Device::Cpu).unwrap();
            let vb =
                || VarBuilder::from_tensors(checkpoint.tensors().clone(), DType::F32, &Device::Cpu);
            for kernels in [Kernels::Differentiable, Kernels::Portable] {
                let reference = ReferenceModel::load(vb(), config, projector_dim, kernels)
                    .unwrap()
                    .forward(&input_ids, &mask)
                    .unwrap()
                    .to_vec2::<f32>()
                    .unwrap();
                for &(product, tier, tolerance) in &products {
                    let fused = with_tier(tier, || {
                        FusedModel::load(vb(), config, projector_dim, product)
                            .unwrap()
                            .forward(&input_ids, &mask)
                            .unwrap()
                            .to_vec2::<f32>()
                            .unwrap()
                    })
                    .unwrap();
                    let worst = fused
                        .iter()
                        .zip(&reference)
                        .map(|(f, r)| {
                            let r: Vec<f64> = r.iter().map(|&x| f64::from(x)).collect();
                            relative_l2_error(f, &r)
                        })
                        .fold(0.0, f64::max);
                    eprintln!(
                        "{}{}: fused {product:?} {tier} vs {kernels:?}: worst relative L2 {worst:.2e}",
                        dir.display(),
                        if weighted { " (response weighted)" } else { "" }
                    );
                    assert!(
                        worst <= tolerance,
                        "{}: fused {product:?} {tier} vs {kernels:?}: {worst:e} > {tolerance:e}",
                        dir.display()
                    );
                }
            }
        }
    }
}
