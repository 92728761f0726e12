//! The SiLU-gated product `silu(gate) · up` of a Llama/Qwen MLP, differentiable.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "cuda")]
use super::cuda::view;
use super::{fast_path, slice, MIN_ELEMS_PER_TASK};

struct SiluMul;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn same_shape(a: &Layout, b: &Layout, op: &str) -> candle_core::Result<usize> {
    if a.shape() != b.shape() {
        candle_core::bail!(
            "{op}: shapes {:?} and {:?} differ",
            a.shape().dims(),
            b.shape().dims()
        )
    }
    Ok(a.shape().elem_count())
}

impl CustomOp2 for SiluMul {
    fn name(&self) -> &'static str {
        "fused-silu-mul"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        su: &CpuStorage,
        lu: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        same_shape(lg, lu, self.name())?;
        let g = slice(sg, lg, self.name())?;
        let u = slice(su, lu, self.name())?;
        let mut out = vec![0f32; g.len()];
        out.par_iter_mut()
            .zip(g.par_iter().zip(u.par_iter()))
            .with_min_len(MIN_ELEMS_PER_TASK)
            .for_each(|(o, (g, u))| *o = g * sigmoid(*g) * u);
        Ok((CpuStorage::F32(out), lg.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sg: &CudaStorage,
        lg: &Layout,
        su: &CudaStorage,
        lu: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = same_shape(lg, lu, self.name())?;
        let (g, u) = (view(sg, lg, self.name())?, view(su, lu, self.name())?);
        Ok((cuda::silu_mul(&sg.device, &g, &u, n)?, lg.shape().clone()))
    }

    fn bwd(
        &self,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let both = g.apply_op3_no_bwd(u, &grad.contiguous()?, &SiluMulGrad)?;
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// `(∂L/∂gate, ∂L/∂up)` stacked on a new first dimension.
struct SiluMulGrad;

fn stacked_pair(l: &Layout) -> Shape {
    let mut dims = vec![2];
    dims.extend_from_slice(l.shape().dims());
    Shape::from(dims)
}

impl CustomOp3 for SiluMulGrad {
    fn name(&self) -> &'static str {
        "fused-silu-mul-grad"
    }

    fn cpu_fwd(
        &self,
        sg: &CpuStorage,
        lg: &Layout,
        su: &CpuStorage,
        lu: &Layout,
        sd: &CpuStorage,
        ld: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = same_shape(lg, lu, self.name())?.max(same_shape(lg, ld, self.name())?);
        let g = slice(sg, lg, self.name())?;
        let u = slice(su, lu, self.name())?;
        let dy = slice(sd, ld, self.name())?;
        let mut out = vec![0f32; 2 * n];
        let (dg, du) = out.split_at_mut(n);
        dg.par_iter_mut()
            .zip(du.par_iter_mut())
            .zip(g.par_iter().zip(u.par_iter()).zip(dy.par_iter()))
            .with_min_len(MIN_ELEMS_PER_TASK)
            .for_each(|((dg, du), ((g, u), dy))| {
                let s = sigmoid(*g);
                *du = dy * g * s;
                *dg = dy * u * s * (1.0 + g * (1.0 - s));
            });
        Ok((CpuStorage::F32(out), stacked_pair(lg)))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sg: &CudaStorage,
        lg: &Layout,
        su: &CudaStorage,
        lu: &Layout,
        sd: &CudaStorage,
        ld: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let n = same_shape(lg, lu, self.name())?.max(same_shape(lg, ld, self.name())?);
        let (g, u) = (view(sg, lg, self.name())?, view(su, lu, self.name())?);
        let dy = view(sd, ld, self.name())?;
        Ok((
            cuda::silu_mul_grad(&sg.device, &g, &u, &dy, n)?,
            stacked_pair(lg),
        ))
    }
}

/// `silu(gate) · up`, elementwise.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(&[gate, up]) {
        gate.contiguous()?.apply_op2(&up.contiguous()?, SiluMul)
    } else {
        gate.silu()? * up
    }
}
