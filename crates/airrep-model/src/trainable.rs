//! The encoder with every weight a `Var`, for gradient training, on the CPU or a GPU.
//! Weights (and so the optimiser's state) are f32 on every device.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::bert::{Kernels, ReferenceModel};
use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::tokenize::TokenBatch;
use crate::train::ProjectorInit;

pub struct TrainableModel {
    varmap: VarMap,
    model: ReferenceModel,
    checkpoint: Checkpoint,
    device: Device,
}

impl TrainableModel {
    /// Every tensor of `checkpoint` (embeddings, all layers, projector) becomes a
    /// variable. A base model without a projector gets a fresh one started by `init`
    /// (a random one drawn from `projector_seed` on the CPU, so the draw is the same on
    /// every device). The variables live on `device`.
    pub fn new(
        checkpoint: &Checkpoint,
        init: ProjectorInit,
        projector_seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let mut checkpoint = checkpoint.clone();
        init.give(&mut checkpoint, projector_seed, None)?;
        let varmap = VarMap::new();
        {
            let mut vars = varmap
                .data()
                .lock()
                .expect("a fresh VarMap is not poisoned");
            for (name, tensor) in checkpoint.tensors() {
                vars.insert(name.clone(), Var::from_tensor(&tensor.to_device(device)?)?);
            }
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = ReferenceModel::load(
            vb,
            &checkpoint.config,
            checkpoint.projector_dim(),
            Kernels::Differentiable,
        )?;
        Ok(Self {
            varmap,
            model,
            checkpoint,
            device: device.clone(),
        })
    }

    /// The trainable variables, sorted by name so optimiser state lines up across runs.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let vars = self
            .varmap
            .data()
            .lock()
            .expect("VarMap lock is not poisoned");
        let mut named: Vec<_> = vars.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }

    pub fn vars(&self) -> Vec<Var> {
        self.named_vars().into_iter().map(|(_, v)| v).collect()
    }

    pub fn output_dim(&self) -> usize {
        self.model.output_dim()
    }

    /// The encoder itself, for forward passes that start above a frozen bottom.
    pub fn model(&self) -> &ReferenceModel {
        &self.model
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Embeddings `[batch, output_dim]` with the autograd graph attached.
    pub fn forward(&self, batch: &TokenBatch) -> Result<Tensor> {
        let (input_ids, mask) = batch.to_tensors(&self.device)?;
        self.model.forward(&input_ids, &mask)
    }

    /// The current weights as a checkpoint (AirRep layout, detached copies on the CPU).
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let tensors: HashMap<String, Tensor> = self
            .named_vars()
            .into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Checkpoint::new(self.checkpoint.config.clone(), tensors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{golden_dir, Golden};
    use crate::tokenize::{TextTokenizer, DEFAULT_MAX_LENGTH};

    fn setup() -> (TrainableModel, TextTokenizer, Golden) {
        let dir = golden_dir("tiny-airrep");
        let model = TrainableModel::new(
            &Checkpoint::from_dir(&dir).unwrap(),
            ProjectorInit::Random,
            0,
            &Device::Cpu,
        )
        .unwrap();
        let tokenizer_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
        let tokenizer = TextTokenizer::from_bytes(&tokenizer_json, DEFAULT_MAX_LENGTH).unwrap();
        (model, tokenizer, Golden::load())
    }

    #[test]
    fn every_variable_gets_a_gradient() {
        let (model, tokenizer, golden) = setup();
        let batch = tokenizer.batch(&golden.texts()[..6]).unwrap();
        let embeddings = model.forward(&batch).unwrap();
        // A scalar that depends on every output coordinate non-trivially.
        let loss = embeddings.sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = model.named_vars();
        let with_gradient: Vec<&str> = vars
            .iter()
            .filter(|(_, var)| {
                grads.get(var.as_tensor()).is_some_and(|g| {
                    g.abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap()
                        > 0.0
                })
            })
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(vars.len(), 5 + 16 * 2 + 2);
        assert_eq!(
            with_gradient.len(),
            vars.len(),
            "with a gradient: {with_gradient:?}"
        );
    }

    #[test]
    fn base_model_gets_a_projector_and_saves_airrep_layout() {
        let dir = golden_dir("tiny-airrep");
        let mut tensors = Checkpoint::from_dir(&dir).unwrap().tensors().clone();
        tensors.retain(|name, _| !name.starts_with("projector."));
        let config = Checkpoint::from_dir(&dir).unwrap().config;
        let base = Checkpoint::new(config, tensors).unwrap();
        let model = TrainableModel::new(&base, ProjectorInit::Random, 1, &Device::Cpu).unwrap();
        assert_eq!(model.vars().len(), 5 + 16 * 2 + 2);
        let saved = model.to_checkpoint().unwrap();
        assert!(saved.has_projector());
        let bytes = saved.to_safetensors().unwrap();
        assert!(
            Checkpoint::from_bytes(&saved.config.to_airrep_json(), &bytes)
                .unwrap()
                .has_projector()
        );
    }
}
