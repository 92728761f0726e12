//! A linear layer with a LoRA update: `y = W·x + b + s·B·A·dropout(x)`.
//!
//! The base `candle_nn::Linear` stays frozen. For training, A and B are `Var`s registered in a
//! `VarMap` of their own (so the optimiser sees only them); for inference they are plain tensors
//! and the update can be merged into the weight once, which makes the forward as cheap as the
//! base layer's.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::fused_linear::{self, Adapter, Frozen};
use super::LoraError;

/// The seeded random source for LoRA initialisation and dropout masks. candle's CPU `rand` cannot
/// be seeded, so masks and initial weights come from here to keep runs reproducible.
#[derive(Debug, Clone)]
pub struct LoraRng(StdRng);

impl LoraRng {
    pub fn new(seed: u64) -> Self {
        Self(StdRng::seed_from_u64(seed))
    }

    /// `n` values uniform in `[-bound, bound)`.
    pub fn uniform(&mut self, n: usize, bound: f32) -> Vec<f32> {
        (0..n).map(|_| self.0.random_range(-bound..bound)).collect()
    }

    /// A dropout mask of `shape` made on `device` (see `ops::dropout_mask`); the next seed of
    /// this generator picks it.
    pub fn dropout_mask_on(
        &mut self,
        shape: &candle_core::Shape,
        p: f32,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        crate::ops::dropout_mask(shape, p, self.next_seed(), device)
    }

    /// The generator state, for a checkpoint (a fresh seed drawn from it).
    pub fn next_seed(&mut self) -> u64 {
        self.0.random()
    }
}

/// The low-rank pair of one layer.
#[derive(Debug, Clone)]
struct Delta {
    /// (r, in).
    a: Tensor,
    /// (out, r).
    b: Tensor,
    scale: f64,
    dropout: f32,
}

/// A linear layer with an optional LoRA update.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    base: Linear,
    delta: Option<Delta>,
    /// When set, `base`'s weight already contains `s·B·A` and `delta` is not applied again.
    merged: Option<Linear>,
}

impl LoraLinear {
    /// A layer without an adapter: the base layer, unchanged.
    pub fn frozen(base: Linear) -> Self {
        Self {
            base,
            delta: None,
            merged: None,
        }
    }

    /// A layer with the given A (r, in) and B (out, r); shapes are checked against the base.
    pub fn new(
        base: Linear,
        module: &str,
        a: Tensor,
        b: Tensor,
        scale: f64,
        dropout: f32,
    ) -> Result<Self, LoraError> {
        let (out, inp) = base.weight().dims2()?;
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        if b_r != r {
            return Err(LoraError::RankMismatch {
                module: module.to_owned(),
                a: a.dims().to_vec(),
                b: b.dims().to_vec(),
            });
        }
        if (b_out, a_in) != (out, inp) {
            return Err(LoraError::ShapeMismatch {
                module: module.to_owned(),
                base: (out, inp),
                adapter: (b_out, a_in),
            });
        }
        Ok(Self {
            base,
            delta: Some(Delta {
                a,
                b,
                scale,
                dropout,
            }),
            merged: None,
        })
    }

    /// A trainable layer: A and B become `Var`s named `<module>.lora_A.weight` and
    /// `<module>.lora_B.weight` in `varmap`, initialised as PEFT does (A Kaiming-uniform with
    /// bound `1/sqrt(in)`, B zero, so the layer starts equal to the base).
    pub fn trainable(
        base: Linear,
        module: &str,
        rank: usize,
        scale: f64,
        dropout: f32,
        varmap: &VarMap,
        rng: &mut LoraRng,
    ) -> Result<Self, LoraError> {
        let (out, inp) = base.weight().dims2()?;
        let device = base.weight().device().clone();
        let bound = 1.0 / (inp as f32).sqrt();
        let a = Tensor::from_vec(rng.uniform(rank * inp, bound), (rank, inp), &device)?;
        let b = Tensor::zeros((out, rank), DType::F32, &device)?;
        let a = register(varmap, &format!("{module}.lora_A.weight"), &a)?;
        let b = register(varmap, &format!("{module}.lora_B.weight"), &b)?;
        Self::new(base, module, a, b, scale, dropout)
    }

    /// `trainable` with the rank, scale and dropout `cfg` gives `module`.
    pub fn trainable_from(
        cfg: &super::AdapterConfig,
        base: Linear,
        module: &str,
        varmap: &VarMap,
        rng: &mut LoraRng,
    ) -> Result<Self, LoraError> {
        let rank = cfg.rank_for(module);
        let scale = cfg.scale_for(module, rank);
        let dropout = cfg.lora_dropout as f32;
        Self::trainable(base, module, rank, scale, dropout, varmap, rng)
    }

    pub fn base(&self) -> &Linear {
        &self.base
    }

    /// A (r, in) and B (out, r), when the layer has an adapter.
    pub fn lora_tensors(&self) -> Option<(&Tensor, &Tensor)> {
        self.delta.as_ref().map(|d| (&d.a, &d.b))
    }

    pub fn scale(&self) -> Option<f64> {
        self.delta.as_ref().map(|d| d.scale)
    }

    pub fn is_merged(&self) -> bool {
        self.merged.is_some()
    }

    /// `W + s·B·A`, or `W` without an adapter.
    pub fn merged_weight(&self) -> Result<Tensor, LoraError> {
        let w = self.base.weight();
        match &self.delta {
            None => Ok(w.clone()),
            Some(d) => {
                let ba = d.b.matmul(&d.a)?.to_dtype(w.dtype())?;
                Ok((w + (ba * d.scale)?)?)
            }
        }
    }

    /// Folds the update into the weight: later forwards cost one matmul and give no gradient to
    /// A and B.
    pub fn merge(&mut self) -> Result<(), LoraError> {
        if self.delta.is_some() && self.merged.is_none() {
            let w = self.merged_weight()?.detach();
            self.merged = Some(Linear::new(w, self.base.bias().cloned()));
        }
        Ok(())
    }

    /// Undoes `merge`: the base weight was never modified, so this only drops the merged copy.
    pub fn unmerge(&mut self) {
        self.merged = None;
    }

    /// The training forward of `x` `(…, in)` f32: dropout on the LoRA branch's input with masks
    /// from `rng`; the whole layer is one differentiable op (`fused_linear`).
    pub fn forward_train(&self, x: &Tensor, rng: &mut LoraRng) -> Result<Tensor, LoraError> {
        self.forward_train_cast(x, None, rng)
    }

    /// `forward_train` with `x` already cast to the frozen weight's dtype (`cast`, shared by the
    /// layers that read one input; made here when `None` and the weight is not f32).
    pub fn forward_train_cast(
        &self,
        x: &Tensor,
        cast: Option<&Tensor>,
        rng: &mut LoraRng,
    ) -> Result<Tensor, LoraError> {
        let base = self.merged.as_ref().unwrap_or(&self.base);
        let wdtype = base.weight().dtype();
        let cast = match (wdtype, cast) {
            (DType::F32, _) => None,
            (_, Some(c)) => Some(c.clone()),
            (_, None) => Some(x.detach().to_dtype(wdtype)?),
        };
        let frozen = Frozen {
            weight: base.weight(),
            cast_input: cast.as_ref(),
        };
        let delta = self.delta.as_ref().filter(|_| self.merged.is_none());
        let mask = match delta {
            Some(d) if d.dropout > 0.0 => {
                Some(rng.dropout_mask_on(x.shape(), d.dropout, x.device())?)
            }
            _ => None,
        };
        let adapter = delta.map(|d| Adapter {
            a: &d.a,
            b: &d.b,
            scale: d.scale,
            mask: mask.as_ref(),
        });
        let y = fused_linear::linear(x, &frozen, adapter.as_ref())?;
        Ok(match base.bias() {
            Some(b) => y.broadcast_add(&b.to_dtype(DType::F32)?)?,
            None => y,
        })
    }
}

fn lora_branch(x: &Tensor, d: &Delta) -> candle_core::Result<Tensor> {
    let ax = Linear::new(d.a.clone(), None).forward(x)?;
    let bax = Linear::new(d.b.clone(), None).forward(&ax)?;
    bax * d.scale
}

impl Module for LoraLinear {
    /// The inference forward (no dropout), merged or not.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(m) = &self.merged {
            return m.forward(x);
        }
        let y = self.base.forward(x)?;
        match &self.delta {
            None => Ok(y),
            Some(d) => y + lora_branch(x, d)?,
        }
    }
}

/// Adds `value` to `varmap` as a new `Var` under `name` and returns its tensor (which shares the
/// `Var`'s id, so gradients computed through it reach the `Var`).
pub fn register(varmap: &VarMap, name: &str, value: &Tensor) -> Result<Tensor, LoraError> {
    let var = Var::from_tensor(value)?;
    let t = var.as_tensor().clone();
    let mut data = varmap.data().lock().map_err(|_| LoraError::InvalidConfig {
        field: "varmap",
        reason: "the variable map lock is poisoned".into(),
    })?;
    data.insert(name.to_owned(), var);
    Ok(t)
}

/// A random base layer, for tests and benchmarks.
pub fn random_linear(
    out: usize,
    inp: usize,
    rng: &mut LoraRng,
    device: &Device,
) -> Result<Linear, LoraError> {
    let w = Tensor::from_vec(rng.uniform(out * inp, 0.5), (out, inp), device)?;
    Ok(Linear::new(w, None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::max_abs_diff;

    fn layer(rng: &mut LoraRng) -> LoraLinear {
        let dev = Device::Cpu;
        let base = random_linear(6, 5, rng, &dev).unwrap();
        let a = Tensor::from_vec(rng.uniform(10, 1.0), (2, 5), &dev).unwrap();
        let b = Tensor::from_vec(rng.uniform(12, 1.0), (6, 2), &dev).unwrap();
        LoraLinear::new(base, "m", a, b, 2.0, 0.0).unwrap()
    }

    #[test]
    fn merged_and_unmerged_forward_agree() {
        let mut rng = LoraRng::new(1);
        let mut l = layer(&mut rng);
        let x = Tensor::from_vec(rng.uniform(3 * 4 * 5, 1.0), (3, 4, 5), &Device::Cpu).unwrap();
        let unmerged = l.forward(&x).unwrap();
        let base_only = l.base().forward(&x).unwrap();
        assert!(
            max_abs_diff(&unmerged, &base_only) > 1e-2,
            "the update must change the output"
        );
        l.merge().unwrap();
        assert!(l.is_merged());
        let merged = l.forward(&x).unwrap();
        assert!(max_abs_diff(&unmerged, &merged) < 1e-5);
        l.unmerge();
        assert!(max_abs_diff(&unmerged, &l.forward(&x).unwrap()) < 1e-6);
    }

    #[test]
    fn unmerged_update_is_scale_b_a_x() {
        let mut rng = LoraRng::new(2);
        let l = layer(&mut rng);
        let x = Tensor::from_vec(rng.uniform(5, 1.0), (1, 5), &Device::Cpu).unwrap();
        let (a, b) = l.lora_tensors().unwrap();
        let expect = ((x
            .matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap()
            * 2.0)
            .unwrap()
            + l.base().forward(&x).unwrap())
        .unwrap();
        assert!(max_abs_diff(&expect, &l.forward(&x).unwrap()) < 1e-5);
    }

    #[test]
    fn trainable_layer_starts_at_the_base_and_gets_gradients() {
        let mut rng = LoraRng::new(3);
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let base = random_linear(4, 3, &mut rng, &dev).unwrap();
        let l = LoraLinear::trainable(base, "layer", 2, 1.0, 0.1, &varmap, &mut rng).unwrap();
        let x = Tensor::from_vec(rng.uniform(6, 1.0), (2, 3), &dev).unwrap();
        assert!(max_abs_diff(&l.forward(&x).unwrap(), &l.base().forward(&x).unwrap()) == 0.0);
        let loss = l
            .forward_train(&x, &mut rng)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.len(), 2);
        // B starts at zero, so only B gets a gradient on the first step; A's gradient is B^T·…=0.
        let gb = grads.get(data["layer.lora_B.weight"].as_tensor()).unwrap();
        assert!(
            gb.abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn wrong_shapes_are_rejected() {
        let mut rng = LoraRng::new(4);
        let dev = Device::Cpu;
        let base = random_linear(6, 5, &mut rng, &dev).unwrap();
        let a = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((6, 2), DType::F32, &dev).unwrap();
        let err = LoraLinear::new(base.clone(), "x.q_proj", a, b, 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("x.q_proj") && err.contains("(6, 5)") && err.contains("(6, 4)"),
            "{err}"
        );
        let a = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((6, 3), DType::F32, &dev).unwrap();
        let err = LoraLinear::new(base, "x.q_proj", a, b, 1.0, 0.0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("same r"), "{err}");
    }

    #[test]
    fn dropout_masks_are_seeded() {
        let shape = candle_core::Shape::from(100);
        let mask = |seed| {
            LoraRng::new(seed)
                .dropout_mask_on(&shape, 0.5, &Device::Cpu)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let (m1, m2) = (mask(9), mask(9));
        assert_eq!(m1, m2);
        assert!(m1.contains(&0.0) && m1.contains(&2.0));
        assert_ne!(m1, mask(10));
    }
}
