//! AdamW's update of one variable as two in-place ops: the moments `[m ; v]` (one `(2, n)` tensor)
//! from the gradient, then the parameter from the moments. Written from tensor primitives the same
//! update is about sixteen ops, each a fresh tensor (a kernel launch and an allocation on a GPU),
//! for every one of a model's few hundred LoRA tensors.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Tensor};
use rayon::prelude::*;

/// One step's settings: the optimizer's hyper-parameters, the step number and the factor the
/// gradients are multiplied by first (global-norm clipping).
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1 for the first update (the bias corrections' exponent).
    pub step: usize,
    pub grad_scale: f64,
}

/// `(β1, β2, grad_scale)`, as the moment kernels take them.
type MomentScalars = (f32, f32, f32);
/// `(lr, 1 − lr·wd, 1 − β1ᵗ, 1 − β2ᵗ, ε)`, as the parameter kernels take them.
type ApplyScalars = (f32, f32, f32, f32, f32);

impl AdamStep {
    fn moment_scalars(&self) -> MomentScalars {
        let p = self;
        (p.beta1 as f32, p.beta2 as f32, self.grad_scale as f32)
    }

    fn apply_scalars(&self) -> ApplyScalars {
        let p = self;
        let t = self.step as i32;
        (
            p.lr as f32,
            (1.0 - p.lr * p.weight_decay) as f32,
            (1.0 - p.beta1.powi(t)) as f32,
            (1.0 - p.beta2.powi(t)) as f32,
            p.eps as f32,
        )
    }
}

fn f32_slice_mut<'a>(
    s: &'a mut CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the updated tensor must be contiguous")
    };
    Ok(&mut v[a..b])
}

/// The moments: `m ← β1·m + (1−β1)·g'`, `v ← β2·v + (1−β2)·g'²`, `g' = grad_scale·g`.
struct Moments(AdamStep);

impl InplaceOp2 for Moments {
    fn name(&self) -> &'static str {
        "adamw-moments"
    }

    fn cpu_fwd(
        &self,
        smv: &mut CpuStorage,
        lmv: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        let g = super::slice(sg, lg, self.name())?;
        let mv = f32_slice_mut(smv, lmv, self.name())?;
        let (m, v) = mv.split_at_mut(g.len());
        let (b1, b2, k) = self.0.moment_scalars();
        m.par_iter_mut()
            .zip(v.par_iter_mut())
            .zip(g.par_iter())
            .with_min_len(super::MIN_ELEMS_PER_TASK)
            .for_each(|((m, v), g)| {
                let g = g * k;
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        smv: &mut CudaStorage,
        lmv: &Layout,
        sg: &CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<()> {
        super::cuda::adamw_moments(smv, lmv, sg, lg, self.0.moment_scalars())
    }
}

/// The parameter: `p ← p·(1 − lr·wd) − lr·(m/bc1) / (√(v/bc2) + ε)`.
struct Apply(AdamStep);

impl InplaceOp2 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        sp: &mut CpuStorage,
        lp: &Layout,
        smv: &CpuStorage,
        lmv: &Layout,
    ) -> candle_core::Result<()> {
        let mv = super::slice(smv, lmv, self.name())?;
        let p = f32_slice_mut(sp, lp, self.name())?;
        let (m, v) = mv.split_at(p.len());
        let (lr, decay, bc1, bc2, eps) = self.0.apply_scalars();
        p.par_iter_mut()
            .zip(m.par_iter().zip(v.par_iter()))
            .with_min_len(super::MIN_ELEMS_PER_TASK)
            .for_each(|(p, (m, v))| {
                *p = *p * decay - lr * (m / bc1) / ((v / bc2).sqrt() + eps);
            });
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sp: &mut CudaStorage,
        lp: &Layout,
        smv: &CudaStorage,
        lmv: &Layout,
    ) -> candle_core::Result<()> {
        super::cuda::adamw_apply(sp, lp, smv, lmv, self.0.apply_scalars())
    }
}

/// Updates `param` (f32, contiguous) and its moments `mv` (`(2, n)` f32: `m` then `v`) in place
/// with gradient `grad`.
pub fn adamw_update(
    param: &Tensor,
    mv: &Tensor,
    grad: &Tensor,
    step: AdamStep,
) -> candle_core::Result<()> {
    let n = param.elem_count();
    if grad.elem_count() != n || mv.dims() != [2, n] {
        candle_core::bail!(
            "adamw: parameter {:?}, gradient {:?} and moments {:?} do not fit",
            param.dims(),
            grad.dims(),
            mv.dims()
        )
    }
    for t in [param, mv, grad] {
        if t.dtype() != DType::F32 {
            candle_core::bail!("adamw: only f32 is supported, got {:?}", t.dtype())
        }
    }
    let grad = grad.contiguous()?;
    mv.inplace_op2(&grad, &Moments(step))?;
    param.inplace_op2(mv, &Apply(step))
}
