//! Linear projections of the Qwen3-VL network, with an optional LoRA delta applied either merged
//! into the weight at load or unmerged at every call (so one base can serve several adapters).

use std::collections::HashMap;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

/// One LoRA pair for a module: `delta W = scale · B · A` with `A` `(r, in)`, `B` `(out, r)`.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// LoRA pairs keyed by the base module's full name (`model.language_model.layers.0.self_attn.q_proj`).
#[derive(Debug, Clone, Default)]
pub struct AdapterSet {
    pub pairs: HashMap<String, LoraPair>,
    /// Fold the deltas into the base weights at load instead of adding them at run time.
    pub merged: bool,
}

/// A linear layer, possibly carrying an unmerged LoRA pair.
#[derive(Debug, Clone)]
pub struct Proj {
    base: Linear,
    lora: Option<LoraPair>,
}

impl Proj {
    /// Loads `{prefix}.weight` (and `.bias`) and applies the adapter pair for this module, if any.
    pub fn load(
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        vb: VarBuilder,
        adapters: &AdapterSet,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias { Some(vb.get(out_dim, "bias")?) } else { None };
        let pair = adapters.pairs.get(&vb.prefix());
        match pair {
            Some(p) if adapters.merged => {
                let delta = (p.b.to_dtype(DType::F32)?.matmul(&p.a.to_dtype(DType::F32)?)? * p.scale)?;
                let merged = (weight.to_dtype(DType::F32)? + delta)?.to_dtype(weight.dtype())?;
                Ok(Self::from_weight(merged, bias))
            }
            Some(p) => {
                let dtype = weight.dtype();
                let pair = LoraPair { a: p.a.to_dtype(dtype)?, b: p.b.to_dtype(dtype)?, scale: p.scale };
                Ok(Self { base: Linear::new(weight, bias), lora: Some(pair) })
            }
            None => Ok(Self::from_weight(weight, bias)),
        }
    }

    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { base: Linear::new(weight, bias), lora: None }
    }
}

impl Module for Proj {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.base.forward(x)?;
        match &self.lora {
            None => Ok(y),
            Some(p) => {
                let down = x.broadcast_matmul(&p.a.t()?)?;
                let up = (down.broadcast_matmul(&p.b.t()?)? * p.scale)?;
                y + up
            }
        }
    }
}
