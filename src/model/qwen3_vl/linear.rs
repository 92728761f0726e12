//! Linear projections of the Qwen3-VL network. Each is a [`LoraLinear`] from `crate::lora`, so a
//! PEFT adapter applies either merged into the weight at load or unmerged at every call (one
//! base serving several adapters).

use candle_core::{Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::lora::{LoraAdapter, LoraLinear};

/// The adapter to apply while loading, and how.
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    pub adapter: Option<LoraAdapter>,
    /// Fold the deltas into the base weights at load instead of adding them at run time.
    pub merged: bool,
}

/// A linear layer, possibly carrying a LoRA pair.
#[derive(Debug, Clone)]
pub struct Proj(LoraLinear);

impl Proj {
    /// Loads `{prefix}.weight` (and `.bias`) and applies the adapter's pair for this module.
    pub fn load(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        adapters: &AdapterSet,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        let base = Linear::new(weight, bias);
        let Some(adapter) = &adapters.adapter else {
            return Ok(Self(LoraLinear::frozen(base)));
        };
        let wrap = |e: crate::lora::LoraError| candle_core::Error::Msg(e.to_string());
        let mut layer = adapter.apply(&vb.prefix(), base).map_err(wrap)?;
        if adapters.merged {
            layer.merge().map_err(wrap)?;
        }
        Ok(Self(layer))
    }

    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self(LoraLinear::frozen(Linear::new(weight, bias)))
    }
}

impl Module for Proj {
    /// Rows of any leading shape go through as one 2-D matrix product (one GEMM over all
    /// tokens, rather than a batched product that reads the weight once per batch row).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() <= 2 {
            return self.0.forward(x);
        }
        let (lead, inner) = dims.split_at(dims.len() - 1);
        let y = self
            .0
            .forward(&x.reshape((lead.iter().product::<usize>(), inner[0]))?)?;
        let mut shape = lead.to_vec();
        shape.push(y.dim(1)?);
        y.reshape(shape)
    }
}
