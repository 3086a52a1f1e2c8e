//! Weight gradients summed over several backward passes (the memory trick's chunks).

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

use crate::error::Result;

/// One slot per trainable variable.
pub(crate) struct Gradients {
    vars: Vec<Var>,
    pub(crate) sums: Vec<Option<Tensor>>,
}

impl Gradients {
    pub(crate) fn new(vars: Vec<Var>) -> Self {
        let sums = vec![None; vars.len()];
        Self { vars, sums }
    }

    pub(crate) fn add(&mut self, store: &GradStore) -> Result<()> {
        for (var, sum) in self.vars.iter().zip(&mut self.sums) {
            if let Some(g) = store.get(var.as_tensor()) {
                *sum = Some(match sum.take() {
                    Some(total) => (total + g)?,
                    None => g.clone(),
                });
            }
        }
        Ok(())
    }

    /// The global L2 norm over every variable.
    pub(crate) fn norm(&self) -> Result<f64> {
        let mut squares = 0.0;
        for g in self.sums.iter().flatten() {
            squares += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        Ok(squares.sqrt())
    }

    /// The gradients times `scale`, as the optimiser takes them.
    pub(crate) fn into_store(self, scale: f64) -> Result<GradStore> {
        let mut store = GradStore::default();
        for (var, sum) in self.vars.iter().zip(self.sums) {
            if let Some(g) = sum {
                store.insert(var.as_tensor(), (g * scale)?);
            }
        }
        Ok(store)
    }
}
