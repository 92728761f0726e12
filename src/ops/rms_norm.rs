//! RMSNorm over the last dimension with a frozen weight: one pass forward, one backward.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "cuda")]
use super::cuda::view;
use super::{fast_path, last_dim, slice, MIN_ROWS_PER_TASK};

struct RmsNorm {
    eps: f32,
}

/// Rows of `d` and a weight of `d` values.
fn norm_rows(lx: &Layout, lw: &Layout, op: &str) -> candle_core::Result<(usize, usize)> {
    let d = last_dim(lx, op)?;
    if lw.shape().dims() != [d] {
        candle_core::bail!("{op}: weight {:?} for rows of {d}", lw.shape().dims())
    }
    Ok((lx.shape().elem_count() / d, d))
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, d) = norm_rows(lx, lw, self.name())?;
        let x = slice(sx, lx, self.name())?;
        let w = slice(sw, lw, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, x)| {
                let r = inv_rms(x, self.eps);
                for ((o, x), w) in o.iter_mut().zip(x).zip(w) {
                    *o = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, width) = norm_rows(lx, lw, self.name())?;
        let (x, w) = (view(sx, lx, self.name())?, view(sw, lw, self.name())?);
        let r = cuda::Rows { rows, width };
        Ok((
            cuda::rms_norm(&sx.device, &x, &w, r, self.eps)?,
            lx.shape().clone(),
        ))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = RmsNormGrad { eps: self.eps };
        Ok((Some(x.apply_op3_no_bwd(w, &g.contiguous()?, &op)?), None))
    }
}

/// `∂L/∂x` of RMSNorm from `(x, w, ∂L/∂y)`: `r·w·g − x·r³·mean(w·g·x)` per row.
struct RmsNormGrad {
    eps: f32,
}

impl CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, d) = norm_rows(lx, lw, self.name())?;
        let x = slice(sx, lx, self.name())?;
        let w = slice(sw, lw, self.name())?;
        let g = slice(sg, lg, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, (x, g))| {
                let r = inv_rms(x, self.eps);
                let dot: f32 = x.iter().zip(g).zip(w).map(|((x, g), w)| x * g * w).sum();
                let c = r * r * r * dot / d as f32;
                for (((o, x), g), w) in o.iter_mut().zip(x).zip(g).zip(w) {
                    *o = r * w * g - x * c;
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sw: &CudaStorage,
        lw: &Layout,
        sg: &CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (rows, width) = norm_rows(lx, lw, self.name())?;
        let (x, w) = (view(sx, lx, self.name())?, view(sw, lw, self.name())?);
        let g = view(sg, lg, self.name())?;
        let r = cuda::Rows { rows, width };
        let out = cuda::rms_norm_grad(&sx.device, &x, &w, &g, r, self.eps)?;
        Ok((out, lx.shape().clone()))
    }
}

/// RMSNorm over the last dimension with a frozen `(d,)` weight (no weight gradient).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if fast_path(&[x, weight]) {
        x.contiguous()?
            .apply_op2(&weight.detach().contiguous()?, RmsNorm { eps })
    } else {
        candle_nn::ops::rms_norm_slow(x, &weight.detach(), eps)
    }
}
