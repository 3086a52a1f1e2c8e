//! Model weights in memory, validated against the configuration.
//!
//! Two on-disk layouts load (DESIGN 1): AirRep (`bert.`-prefixed encoder plus
//! `projector.*`) and plain BERT / sentence-transformers (no prefix, no projector).
//! Inside the crate every tensor carries its AirRep name and is f32, so the model code
//! sees one layout and `to_safetensors` writes the AirRep layout back.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use crate::config::BertConfig;
use crate::error::{Error, Result};

pub const ENCODER_PREFIX: &str = "bert.";
pub const PROJECTOR_WEIGHT: &str = "projector.weight";
pub const PROJECTOR_BIAS: &str = "projector.bias";
/// Optional `[1]`: when present the projector's output is scaled to this length (its
/// direction divided by its norm), see [`Checkpoint::set_unit_scale`].
pub const PROJECTOR_SCALE: &str = "projector.scale";

/// Tensors a BERT checkpoint may carry that the encoder does not use: the pooler
/// and MLM heads, and the position-id buffer some exports save.
fn is_unused(name: &str) -> bool {
    let name = name.strip_prefix(ENCODER_PREFIX).unwrap_or(name);
    name.starts_with("pooler.") || name.starts_with("cls.") || name == "embeddings.position_ids"
}

#[derive(Clone, Debug)]
pub struct Checkpoint {
    pub config: BertConfig,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Loads config.json and model.safetensors contents (as stored in bytea columns).
    pub fn from_bytes(config_json: &[u8], safetensors: &[u8]) -> Result<Self> {
        let config = BertConfig::from_json(config_json)?;
        let file = safetensors::SafeTensors::deserialize(safetensors)
            .map_err(|e| Error::Checkpoint(format!("not a safetensors file: {e}")))?;
        let airrep_layout = file.names().iter().any(|n| n.starts_with(ENCODER_PREFIX));
        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            if is_unused(&name) {
                continue;
            }
            let tensor = load_f32(&name, &view)?;
            let canonical = if airrep_layout || name.starts_with("projector.") {
                name
            } else {
                format!("{ENCODER_PREFIX}{name}")
            };
            tensors.insert(canonical, tensor);
        }
        Self::new(config, tensors)
    }

    /// Reads `config.json` and `model.safetensors` from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        Self::from_bytes(
            &read_file(&dir.join("config.json"))?,
            &read_file(&dir.join("model.safetensors"))?,
        )
    }

    /// Wraps tensors already in the AirRep layout (e.g. trained weights) after checking
    /// them against `config`: every encoder tensor present with its shape, nothing else.
    pub fn new(config: BertConfig, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let expected = expected_shapes(&config);
        for (name, tensor) in &tensors {
            let shape = tensor.dims();
            match expected.get(name) {
                Some(want) if want.as_slice() != shape => {
                    return Err(Error::Checkpoint(format!(
                        "tensor {name} has shape {shape:?}, expected {want:?}"
                    )))
                }
                Some(_) => {}
                None if [PROJECTOR_WEIGHT, PROJECTOR_BIAS, PROJECTOR_SCALE]
                    .contains(&name.as_str()) => {}
                None => {
                    return Err(Error::Checkpoint(format!(
                        "unknown tensor {name} (shape {shape:?}) for a BERT encoder"
                    )))
                }
            }
        }
        if let Some(name) = expected.keys().find(|name| !tensors.contains_key(*name)) {
            return Err(Error::Checkpoint(format!(
                "missing tensor {name} (expected shape {:?})",
                expected[name]
            )));
        }
        check_projector(&tensors, config.hidden_size)?;
        let width = tensors
            .get(PROJECTOR_BIAS)
            .map_or(config.hidden_size, |b| b.dims()[0]);
        if width > airrep_core::vector::MAX_DIM {
            return Err(Error::Checkpoint(format!(
                "the model's embeddings would have {width} dimensions; airrep_vector holds at most {}",
                airrep_core::vector::MAX_DIM
            )));
        }
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
                // A broken checkpoint (loaded, or trained at a learning rate that diverged)
                // fails here by name, not as NaN embeddings later (or, on AMX, as a NaN
                // whose bf16 rounding carries into the sign bit).
                if !t
                    .flatten_all()?
                    .to_vec1::<f32>()?
                    .iter()
                    .all(|v| v.is_finite())
                {
                    return Err(Error::Checkpoint(format!(
                        "tensor {name} has NaN or infinite values"
                    )));
                }
                Ok((name, t))
            })
            .collect::<Result<_>>()?;
        Ok(Self { config, tensors })
    }

    /// Tensors by AirRep name, f32.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    pub fn has_projector(&self) -> bool {
        self.tensors.contains_key(PROJECTOR_WEIGHT)
    }

    /// Output width of the projector, None without one.
    pub fn projector_dim(&self) -> Option<usize> {
        self.tensors.get(PROJECTOR_BIAS).map(|bias| bias.dims()[0])
    }

    /// Width of the embeddings: the projector's output, or the hidden size without one.
    pub fn output_dim(&self) -> usize {
        self.projector_dim().unwrap_or(self.config.hidden_size)
    }

    /// The length every embedding is scaled to, None when the projector's output is used
    /// as it is (the paper's form).
    pub fn unit_scale(&self) -> Option<f32> {
        let scale = self.tensors.get(PROJECTOR_SCALE)?;
        Some(scale.to_vec1::<f32>().expect("checked in Checkpoint::new")[0])
    }

    /// Makes every embedding of this model `scale · y / |y|`, `y` the projector's output:
    /// each text's vector gets the same length, so a score is `scale²` times a cosine and
    /// the attention pooling's temperature is `scale²`. The projector cannot learn this
    /// (it gives every text the same linear map, not its own scale); it replaces any scale
    /// the model had.
    pub fn set_unit_scale(&mut self, scale: f32) -> Result<()> {
        if !self.has_projector() {
            return Err(Error::Input(
                "unit-length embeddings need a projector: give the model one first".into(),
            ));
        }
        let tensor = Tensor::new(&[scale], &Device::Cpu)?;
        check_scale(&tensor)?;
        self.tensors.insert(PROJECTOR_SCALE.into(), tensor);
        Ok(())
    }

    /// Sets the projector `e = weight · pooled + bias` (weight `[hidden, hidden]` stored
    /// [out, in], bias `[hidden]`, both on the CPU), replacing any the model had.
    pub fn set_projector(&mut self, weight: Tensor, bias: Tensor) -> Result<()> {
        let hidden = self.config.hidden_size;
        if weight.dims() != [hidden, hidden] || bias.dims() != [hidden] {
            return Err(Error::Input(format!(
                "a projector has shapes {:?} and {:?}, expected [{hidden}, {hidden}] and [{hidden}]",
                weight.dims(),
                bias.dims()
            )));
        }
        let f32_cpu = |t: Tensor| t.to_dtype(DType::F32)?.to_device(&Device::Cpu);
        self.tensors
            .insert(PROJECTOR_WEIGHT.into(), f32_cpu(weight)?);
        self.tensors.insert(PROJECTOR_BIAS.into(), f32_cpu(bias)?);
        Ok(())
    }

    /// The bottom `layers` transformer layers with the embeddings and the projector: the
    /// same encoder stopped early, so its output is the mean of layer `layers`' states.
    pub fn truncated(&self, layers: usize) -> Result<Checkpoint> {
        let total = self.config.num_hidden_layers;
        if !(1..=total).contains(&layers) {
            return Err(Error::Input(format!(
                "cannot keep {layers} layers of a model with {total}: keep 1 to {total}"
            )));
        }
        let tensors = self
            .tensors
            .iter()
            .filter(|(name, _)| layer_of(name).is_none_or(|layer| layer < layers))
            .map(|(name, tensor)| (name.clone(), tensor.clone()))
            .collect();
        let config = BertConfig {
            num_hidden_layers: layers,
            ..self.config.clone()
        };
        Self::new(config, tensors)
    }

    /// model.safetensors bytes in the AirRep layout, f32.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let sorted: BTreeMap<&String, &Tensor> = self.tensors.iter().collect();
        safetensors::serialize(sorted, None)
            .map_err(|e| Error::Checkpoint(format!("serialising safetensors: {e}")))
    }
}

/// The transformer layer an AirRep tensor name belongs to (None for embeddings and the
/// projector).
pub(crate) fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix(ENCODER_PREFIX)?
        .strip_prefix("encoder.layer.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn load_f32(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Tensor> {
    use safetensors::Dtype;
    if !matches!(
        view.dtype(),
        Dtype::F32 | Dtype::F16 | Dtype::BF16 | Dtype::F64
    ) {
        return Err(Error::Checkpoint(format!(
            "tensor {name} has dtype {:?}; weights must be f32, f16 or bf16",
            view.dtype()
        )));
    }
    use candle_core::safetensors::Load;
    let tensor = view
        .load(&Device::Cpu)
        .map_err(|e| Error::Checkpoint(format!("tensor {name}: {e}")))?
        .to_dtype(DType::F32)?;
    Ok(tensor)
}

/// Every encoder tensor the configuration implies, by AirRep name.
fn expected_shapes(c: &BertConfig) -> HashMap<String, Vec<usize>> {
    let (h, i) = (c.hidden_size, c.intermediate_size);
    let mut shapes = HashMap::new();
    let mut linear = |prefix: String, out: usize, inp: usize| {
        shapes.insert(format!("{prefix}.weight"), vec![out, inp]);
        shapes.insert(format!("{prefix}.bias"), vec![out]);
    };
    for layer in 0..c.num_hidden_layers {
        let p = format!("{ENCODER_PREFIX}encoder.layer.{layer}");
        for proj in ["query", "key", "value"] {
            linear(format!("{p}.attention.self.{proj}"), h, h);
        }
        linear(format!("{p}.attention.output.dense"), h, h);
        linear(format!("{p}.intermediate.dense"), i, h);
        linear(format!("{p}.output.dense"), h, i);
    }
    let mut norm = |prefix: String| {
        shapes.insert(format!("{prefix}.weight"), vec![h]);
        shapes.insert(format!("{prefix}.bias"), vec![h]);
    };
    norm(format!("{ENCODER_PREFIX}embeddings.LayerNorm"));
    for layer in 0..c.num_hidden_layers {
        norm(format!(
            "{ENCODER_PREFIX}encoder.layer.{layer}.attention.output.LayerNorm"
        ));
        norm(format!(
            "{ENCODER_PREFIX}encoder.layer.{layer}.output.LayerNorm"
        ));
    }
    let e = format!("{ENCODER_PREFIX}embeddings");
    shapes.insert(format!("{e}.word_embeddings.weight"), vec![c.vocab_size, h]);
    shapes.insert(
        format!("{e}.position_embeddings.weight"),
        vec![c.max_position_embeddings, h],
    );
    shapes.insert(
        format!("{e}.token_type_embeddings.weight"),
        vec![c.type_vocab_size, h],
    );
    shapes
}

/// A projector is optional, but if present it is a whole `Linear(hidden -> out)`, with a
/// valid scale if it has one.
fn check_projector(tensors: &HashMap<String, Tensor>, hidden: usize) -> Result<()> {
    if let Some(scale) = tensors.get(PROJECTOR_SCALE) {
        if !tensors.contains_key(PROJECTOR_WEIGHT) {
            return Err(Error::Checkpoint(format!(
                "{PROJECTOR_SCALE} without a projector ({PROJECTOR_WEIGHT} is missing)"
            )));
        }
        check_scale(scale)?;
    }
    match (tensors.get(PROJECTOR_WEIGHT), tensors.get(PROJECTOR_BIAS)) {
        (None, None) => Ok(()),
        (Some(w), Some(b)) => match (w.dims(), b.dims()) {
            (&[out, inp], &[out_b]) if inp == hidden && out == out_b => Ok(()),
            (w, b) => Err(Error::Checkpoint(format!(
                "projector.weight has shape {w:?} and projector.bias {b:?}, expected \
                 [out, {hidden}] and [out]"
            ))),
        },
        (Some(_), None) => Err(Error::Checkpoint(format!(
            "missing tensor {PROJECTOR_BIAS}"
        ))),
        (None, Some(_)) => Err(Error::Checkpoint(format!(
            "missing tensor {PROJECTOR_WEIGHT}"
        ))),
    }
}

/// A unit scale is one positive, finite number.
fn check_scale(scale: &Tensor) -> Result<()> {
    let value = match scale.dims() {
        [1] => scale.to_dtype(DType::F32)?.to_vec1::<f32>()?[0],
        shape => {
            return Err(Error::Checkpoint(format!(
                "{PROJECTOR_SCALE} has shape {shape:?}, expected [1]"
            )))
        }
    };
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(Error::Checkpoint(format!(
            "{PROJECTOR_SCALE} must be a positive finite number, got {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::golden_dir;

    fn tiny() -> (Vec<u8>, Vec<u8>) {
        let dir = golden_dir("tiny-airrep");
        (
            std::fs::read(dir.join("config.json")).unwrap(),
            std::fs::read(dir.join("model.safetensors")).unwrap(),
        )
    }

    fn err_of(config: &[u8], tensors: BTreeMap<String, Tensor>) -> String {
        let bytes = safetensors::serialize(&tensors, None).unwrap();
        Checkpoint::from_bytes(config, &bytes)
            .unwrap_err()
            .to_string()
    }

    fn tiny_tensors() -> BTreeMap<String, Tensor> {
        let (_, weights) = tiny();
        candle_core::safetensors::load_buffer(&weights, &Device::Cpu)
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn loads_airrep_layout_with_projector() {
        let (config, weights) = tiny();
        let ckpt = Checkpoint::from_bytes(&config, &weights).unwrap();
        assert!(ckpt.has_projector());
        assert_eq!(ckpt.tensors().len(), 5 + 16 * 2 + 2);
        assert_eq!(ckpt.output_dim(), 32);
    }

    #[test]
    fn loads_plain_bert_layout_and_ignores_pooler() {
        let (config, _) = tiny();
        let mut plain: BTreeMap<String, Tensor> = tiny_tensors()
            .into_iter()
            .filter(|(n, _)| !n.starts_with("projector."))
            .map(|(n, t)| (n.trim_start_matches(ENCODER_PREFIX).to_string(), t))
            .collect();
        let dev = Device::Cpu;
        plain.insert(
            "pooler.dense.bias".into(),
            Tensor::zeros(32, DType::F32, &dev).unwrap(),
        );
        let ids = Tensor::arange(0i64, 512, &dev)
            .unwrap()
            .reshape((1, 512))
            .unwrap();
        plain.insert("embeddings.position_ids".into(), ids);
        let bytes = safetensors::serialize(&plain, None).unwrap();
        let mut ckpt = Checkpoint::from_bytes(&config, &bytes).unwrap();
        assert!(!ckpt.has_projector());
        assert!(ckpt
            .tensors()
            .contains_key("bert.embeddings.word_embeddings.weight"));

        let eye = Tensor::eye(32, DType::F32, &Device::Cpu).unwrap();
        let zeros = Tensor::zeros(32, DType::F32, &Device::Cpu).unwrap();
        let err = ckpt.set_projector(eye.clone(), eye.clone()).unwrap_err();
        assert!(
            err.to_string().contains("expected [32, 32] and [32]"),
            "{err}"
        );
        ckpt.set_projector(eye, zeros).unwrap();
        assert!(ckpt.has_projector());
        let w = ckpt.tensors()[PROJECTOR_WEIGHT].to_vec2::<f32>().unwrap();
        for (i, row) in w.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                assert_eq!(x, if i == j { 1.0 } else { 0.0 });
            }
        }
        let b = ckpt.tensors()[PROJECTOR_BIAS].to_vec1::<f32>().unwrap();
        assert!(b.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn rejects_embeddings_wider_than_the_vector_type() {
        let (config, _) = tiny();
        let dev = Device::Cpu;
        for (width, ok) in [
            (16_000, true),
            (16_001, false),
            (32_768, false),
            (65_536, false),
        ] {
            let mut wide = tiny_tensors();
            wide.insert(
                PROJECTOR_WEIGHT.into(),
                Tensor::zeros((width, 32), DType::F32, &dev).unwrap(),
            );
            wide.insert(
                PROJECTOR_BIAS.into(),
                Tensor::zeros(width, DType::F32, &dev).unwrap(),
            );
            let bytes = safetensors::serialize(&wide, None).unwrap();
            match Checkpoint::from_bytes(&config, &bytes) {
                Ok(ckpt) => assert!(ok && ckpt.output_dim() == width),
                Err(e) => assert!(
                    !ok && e
                        .to_string()
                        .contains(&format!("would have {width} dimensions")),
                    "{e}"
                ),
            }
        }
    }

    #[test]
    fn errors_name_the_tensor() {
        let (config, _) = tiny();

        let mut extra = tiny_tensors();
        extra.insert(
            "bert.encoder.layer.9.foo".into(),
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        );
        let err = err_of(&config, extra);
        assert!(
            err.contains("unknown tensor bert.encoder.layer.9.foo"),
            "{err}"
        );

        let mut missing = tiny_tensors();
        missing.remove("bert.encoder.layer.1.output.dense.bias");
        let err = err_of(&config, missing);
        assert!(
            err.contains("missing tensor bert.encoder.layer.1.output.dense.bias"),
            "{err}"
        );

        let mut reshaped = tiny_tensors();
        reshaped.insert(
            "bert.encoder.layer.0.intermediate.dense.weight".into(),
            Tensor::zeros((32, 64), DType::F32, &Device::Cpu).unwrap(),
        );
        let err = err_of(&config, reshaped);
        assert!(
            err.contains("bert.encoder.layer.0.intermediate.dense.weight"),
            "{err}"
        );
        assert!(
            err.contains("[32, 64]") && err.contains("[64, 32]"),
            "{err}"
        );

        let mut poisoned = tiny_tensors();
        let name = "bert.encoder.layer.0.output.dense.bias";
        let bias = Tensor::new(&[f32::NAN; 32], &Device::Cpu).unwrap();
        poisoned.insert(name.into(), bias);
        let err = err_of(&config, poisoned);
        assert!(err.contains(&format!("tensor {name} has NaN")), "{err}");
    }

    #[test]
    fn bf16_weights_load_as_f32() {
        let dir = golden_dir("tiny-airrep-bf16");
        let ckpt = Checkpoint::from_dir(&dir).unwrap();
        assert!(ckpt.tensors().values().all(|t| t.dtype() == DType::F32));
    }

    #[test]
    fn safetensors_round_trip() {
        let (config, weights) = tiny();
        let ckpt = Checkpoint::from_bytes(&config, &weights).unwrap();
        let again = Checkpoint::from_bytes(
            &ckpt.config.to_airrep_json(),
            &ckpt.to_safetensors().unwrap(),
        )
        .unwrap();
        for (name, tensor) in ckpt.tensors() {
            let diff = (tensor - &again.tensors()[name]).unwrap().abs().unwrap();
            assert_eq!(
                diff.flatten_all()
                    .unwrap()
                    .max(0)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0,
                "{name}"
            );
        }
    }

    #[test]
    fn a_unit_scale_round_trips_and_is_checked() {
        let (config, weights) = tiny();
        let mut ckpt = Checkpoint::from_bytes(&config, &weights).unwrap();
        assert_eq!(ckpt.unit_scale(), None);
        ckpt.set_unit_scale(1.5).unwrap();
        let again = Checkpoint::from_bytes(
            &ckpt.config.to_airrep_json(),
            &ckpt.to_safetensors().unwrap(),
        )
        .unwrap();
        assert_eq!(again.unit_scale(), Some(1.5));
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let err = ckpt.clone().set_unit_scale(bad).unwrap_err().to_string();
            assert!(err.contains("positive finite"), "{err}");
        }
        let dev = Device::Cpu;
        let mut tensors = tiny_tensors();
        tensors.insert(
            PROJECTOR_SCALE.into(),
            Tensor::new(&[1f32, 2.0], &dev).unwrap(),
        );
        assert!(err_of(&config, tensors.clone()).contains("shape [2], expected [1]"));
        tensors.insert(PROJECTOR_SCALE.into(), Tensor::new(&[-2f32], &dev).unwrap());
        assert!(err_of(&config, tensors.clone()).contains("got -2"));
        tensors.insert(PROJECTOR_SCALE.into(), Tensor::new(&[2f32], &dev).unwrap());
        tensors.retain(|name, _| name != PROJECTOR_WEIGHT && name != PROJECTOR_BIAS);
        assert!(err_of(&config, tensors).contains("without a projector"));
        let mut base = Checkpoint::from_bytes(&config, &weights).unwrap();
        base = Checkpoint::new(base.config.clone(), {
            let mut t = base.tensors().clone();
            t.retain(|name, _| !name.starts_with("projector."));
            t
        })
        .unwrap();
        assert!(base
            .set_unit_scale(2.0)
            .unwrap_err()
            .to_string()
            .contains("need a projector"));
    }
}
