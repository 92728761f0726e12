//! Per-row cross-entropy (negative log-likelihood of the target id) over logits, differentiable.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "cuda")]
use super::cuda::view;
use super::{fast_path, slice, slice_u32};

struct Nll;

/// `(rows, vocab)` of the logits, checked against `(rows,)` targets.
fn nll_rows(lx: &Layout, lt: &Layout, op: &str) -> candle_core::Result<(usize, usize)> {
    let (rows, v) = lx.shape().dims2()?;
    if lt.shape().dims() != [rows] {
        candle_core::bail!("{op}: targets {:?} for {rows} rows", lt.shape().dims())
    }
    Ok((rows, v))
}

fn check_targets(targets: &[u32], v: usize, op: &str) -> candle_core::Result<()> {
    if let Some(t) = targets.iter().find(|t| **t as usize >= v) {
        candle_core::bail!("{op}: target {t} outside the vocabulary of {v}")
    }
    Ok(())
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    m + x.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
}

impl CustomOp2 for Nll {
    fn name(&self) -> &'static str {
        "fused-nll"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        st: &CpuStorage,
        lt: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, v) = nll_rows(lx, lt, self.name())?;
        let x = slice(sx, lx, self.name())?;
        let targets = slice_u32(st, lt, self.name())?;
        check_targets(targets, v, self.name())?;
        let out: Vec<f32> = x
            .par_chunks(v)
            .zip(targets.par_iter())
            .map(|(x, t)| log_sum_exp(x) - x[*t as usize])
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        st: &CudaStorage,
        lt: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, width) = nll_rows(lx, lt, self.name())?;
        let (x, t) = (view(sx, lx, self.name())?, view(st, lt, self.name())?);
        let r = cuda::Rows { rows, width };
        Ok((cuda::nll(&sx.device, &x, &t, r)?, Shape::from(rows)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        targets: &Tensor,
        _nll: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = x.apply_op3_no_bwd(targets, &g.contiguous()?, &NllGrad)?;
        Ok((Some(dx), None))
    }
}

/// `∂L/∂x = g·(softmax(x) − onehot(target))` per row.
struct NllGrad;

impl CustomOp3 for NllGrad {
    fn name(&self) -> &'static str {
        "fused-nll-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        st: &CpuStorage,
        lt: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, v) = nll_rows(lx, lt, self.name())?;
        let x = slice(sx, lx, self.name())?;
        let targets = slice_u32(st, lt, self.name())?;
        let g = slice(sg, lg, self.name())?;
        check_targets(targets, v, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .zip(targets.par_iter().zip(g.par_iter()))
            .for_each(|((o, x), (t, g))| {
                let lse = log_sum_exp(x);
                for (o, x) in o.iter_mut().zip(x) {
                    *o = g * (x - lse).exp();
                }
                o[*t as usize] -= g;
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        st: &CudaStorage,
        lt: &Layout,
        sg: &CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, width) = nll_rows(lx, lt, self.name())?;
        let (x, t) = (view(sx, lx, self.name())?, view(st, lt, self.name())?);
        let g = view(sg, lg, self.name())?;
        let r = cuda::Rows { rows, width };
        Ok((
            cuda::nll_grad(&sx.device, &x, &t, &g, r)?,
            lx.shape().clone(),
        ))
    }
}

/// The negative log-likelihood of `targets` (n,) under logits `(n, vocab)`: one value per row.
/// Targets outside the vocabulary are an error on the CPU and NaN on a GPU (checking them there
/// would wait for the device).
pub fn nll(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(&[logits]) {
        let targets = targets.to_dtype(DType::U32)?.contiguous()?;
        logits.contiguous()?.apply_op2(&targets, Nll)
    } else {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
    }
}
