//! Rotary position embedding in the half-rotation layout of HF Llama and Qwen, differentiable.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor, D};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
#[cfg(feature = "cuda")]
use super::cuda::view;
use super::{fast_path, slice, MIN_ROWS_PER_TASK};

struct Rope {
    /// The transpose (the backward): rotate by −θ.
    inverse: bool,
}

/// `(b, h, t, half)` of `x` and whether the `(cb, t, half)` tables hold one row per batch row.
fn rope_dims(
    lx: &Layout,
    lc: &Layout,
    ls: &Layout,
    op: &str,
) -> candle_core::Result<((usize, usize, usize, usize), bool)> {
    let (b, h, t, d) = lx.shape().dims4()?;
    let (cb, ct, half) = lc.shape().dims3()?;
    if ct != t || half * 2 != d || (cb != 1 && cb != b) || lc.shape() != ls.shape() {
        candle_core::bail!(
            "{op}: cos {:?} / sin {:?} do not fit x {:?}",
            lc.shape().dims(),
            ls.shape().dims(),
            lx.shape().dims()
        )
    }
    Ok(((b, h, t, half), cb != 1))
}

impl CustomOp3 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sc: &CpuStorage,
        lc: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let ((_, h, t, half), per_batch) = rope_dims(lx, lc, ls, self.name())?;
        let x = slice(sx, lx, self.name())?;
        let cos = slice(sc, lc, self.name())?;
        let sin = slice(ss, ls, self.name())?;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(2 * half)
            .zip(x.par_chunks(2 * half))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (o, x))| {
                let bi = if per_batch { row / (h * t) } else { 0 };
                let at = (bi * t + row % t) * half;
                let (c, s) = (&cos[at..at + half], &sin[at..at + half]);
                let (x1, x2) = x.split_at(half);
                let (o1, o2) = o.split_at_mut(half);
                for i in 0..half {
                    let si = sign * s[i];
                    o1[i] = x1[i] * c[i] - x2[i] * si;
                    o2[i] = x2[i] * c[i] + x1[i] * si;
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        sx: &CudaStorage,
        lx: &Layout,
        sc: &CudaStorage,
        lc: &Layout,
        ss: &CudaStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let (dims, per_batch) = rope_dims(lx, lc, ls, self.name())?;
        let x = view(sx, lx, self.name())?;
        let (c, s) = (view(sc, lc, self.name())?, view(ss, ls, self.name())?);
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let out = cuda::rope(&sx.device, &x, &c, &s, dims, per_batch, sign)?;
        Ok((out, lx.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = Rope {
            inverse: !self.inverse,
        };
        Ok((
            Some(g.contiguous()?.apply_op3_no_bwd(cos, sin, &op)?),
            None,
            None,
        ))
    }
}

/// Rotates the halves of each head of `x` `(b, heads, t, d)` by `(cos, sin)`, each `(t, d/2)` or
/// `(b or 1, 1, t, d/2)`: `[x1·c − x2·s, x2·c + x1·s]`. The tables get no gradient.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (cos, sin) = match cos.rank() {
        2 => (cos.unsqueeze(0)?, sin.unsqueeze(0)?),
        4 => (cos.squeeze(1)?, sin.squeeze(1)?),
        _ => (cos.clone(), sin.clone()),
    };
    let (cos, sin) = (cos.detach(), sin.detach());
    if fast_path(&[x, &cos, &sin]) {
        x.contiguous()?.apply_op3(
            &cos.contiguous()?,
            &sin.contiguous()?,
            Rope { inverse: false },
        )
    } else {
        let (cos, sin) = (cos.unsqueeze(1)?, sin.unsqueeze(1)?);
        let half = x.dim(D::Minus1)? / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let r1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let r2 = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        Tensor::cat(&[r1, r2], D::Minus1)
    }
}
