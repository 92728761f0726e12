//! Causal softmax of attention scores `(…, t, t)`: query `i` sees keys `0..=i`.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor, D};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "cuda")]
use super::cuda::view;
use super::{fast_path, slice, MIN_ROWS_PER_TASK};

struct CausalSoftmax {
    scale: f32,
}

/// The number of keys query row `row` of a `(…, t, t)` score tensor sees.
fn visible(row: usize, t: usize) -> usize {
    row % t + 1
}

fn square_last(l: &Layout, op: &str) -> candle_core::Result<usize> {
    let d = l.shape().dims();
    match d {
        [.., a, b] if a == b && *a > 0 => Ok(*b),
        _ => candle_core::bail!("{op}: scores must end in a square (t, t), got {d:?}"),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "fused-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let t = square_last(l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(t)
            .zip(x.par_chunks(t))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (o, x))| {
                let n = visible(row, t);
                let (o, x) = (&mut o[..n], &x[..n]);
                let m = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v)) * self.scale;
                let mut sum = 0f32;
                for (o, x) in o.iter_mut().zip(x) {
                    *o = (x * self.scale - m).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|o| *o *= inv);
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let t = square_last(l, self.name())?;
        let r = cuda::Rows {
            rows: l.shape().elem_count() / t,
            width: t,
        };
        let x = view(s, l, self.name())?;
        Ok((
            cuda::causal_softmax(&s.device, &x, r, self.scale)?,
            l.shape().clone(),
        ))
    }

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = CausalSoftmaxGrad { scale: self.scale };
        Ok(Some(p.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

/// `∂L/∂x = scale·p·(g − Σ p·g)` per row.
struct CausalSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        sp: &CpuStorage,
        lp: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = slice(sp, lp, self.name())?;
        let g = slice(sg, lg, self.name())?;
        let t = square_last(lp, self.name())?;
        let mut out = vec![0f32; p.len()];
        out.par_chunks_mut(t)
            .zip(p.par_chunks(t).zip(g.par_chunks(t)))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (o, (p, g)))| {
                let n = visible(row, t);
                let dot: f32 = p[..n].iter().zip(&g[..n]).map(|(p, g)| p * g).sum();
                for ((o, p), g) in o[..n].iter_mut().zip(&p[..n]).zip(&g[..n]) {
                    *o = self.scale * p * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), lp.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sp: &CudaStorage,
        lp: &Layout,
        sg: &CudaStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let t = square_last(lp, self.name())?;
        let r = cuda::Rows {
            rows: lp.shape().elem_count() / t,
            width: t,
        };
        let (p, g) = (view(sp, lp, self.name())?, view(sg, lg, self.name())?);
        let out = cuda::causal_softmax_grad(&sp.device, &p, &g, r, self.scale)?;
        Ok((out, lp.shape().clone()))
    }
}

/// `softmax(scale · x)` over the last dimension of `(…, t, t)` scores, query `i` seeing keys
/// `0..=i` (the rest get probability 0).
pub fn causal_softmax(scores: &Tensor, scale: f64) -> candle_core::Result<Tensor> {
    if fast_path(&[scores]) {
        scores.contiguous()?.apply_op1(CausalSoftmax {
            scale: scale as f32,
        })
    } else {
        let t = scores.dim(D::Minus1)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), scores.device())?.to_dtype(scores.dtype())?;
        candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(&mask)?, D::Minus1)
    }
}
