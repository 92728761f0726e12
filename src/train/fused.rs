//! Fused, differentiable ops for the training forward: RMSNorm, causal softmax, rotary embedding,
//! SiLU-gated product and per-row cross-entropy.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward pass, and the same
//! functions written from primitives (`rms_norm_slow`, `softmax`, `rope_slow`) cost one tensor,
//! one allocation, one pass over memory and (on a GPU) one kernel launch per primitive, twice that
//! again in the backward (where candle also accumulates every gradient into a fresh zero tensor).
//! In f32 each op here is one custom op: one pass forward, one pass backward. On the CPU rows are
//! spread over rayon's pool (the one candle's matmul uses) and inputs are read in place; on CUDA
//! (`cuda` feature) each pass is one kernel of `fused/kernels.cu`. In other dtypes (bf16) each
//! falls back to the primitive formula, which is also the reference the tests compare against.
//!
//! Frozen operands (the norm weight, the rotary tables, the targets) are inputs of the ops that get
//! no gradient, so every backend reads them where they are.

#[cfg(feature = "cuda")]
use candle_core::CudaStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

pub mod adamw;
#[cfg(feature = "cuda")]
mod cuda;

/// Rows handed to one rayon task at least: small rows (a 64-wide head) are not worth a task each.
const MIN_ROWS_PER_TASK: usize = 16;

/// Whether the fused kernels apply: f32 everywhere, on the CPU or (with the `cuda` feature) one
/// GPU.
fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter().all(|t| {
        t.dtype() == DType::F32
            && (t.device().is_cpu() || (cfg!(feature = "cuda") && t.device().is_cuda()))
    })
}

/// The f32 slice a contiguous layout covers.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: only f32 is supported")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous")
    };
    Ok(&v[a..b])
}

fn slice_u32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [u32]> {
    let CpuStorage::U32(v) = s else {
        candle_core::bail!("{op}: targets must be u32")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the targets must be contiguous")
    };
    Ok(&v[a..b])
}

fn last_dim(l: &Layout, op: &str) -> candle_core::Result<usize> {
    match l.shape().dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("{op}: the input has no last dimension"),
    }
}

// Each op's `cuda_fwd` exists with the `cuda` feature only; without it candle's CUDA storage
// never exists, and the trait's default (an error naming the op) stands.
#[cfg(feature = "cuda")]
use cuda::view;

// ---------------------------------------------------------------------------------------------
// RMSNorm with a frozen weight.

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

// ---------------------------------------------------------------------------------------------
// Causal softmax of attention scores.

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

/// Causal attention of queries `(b, heads, t, d)` over keys and values `(b, kv_heads, t, d)`
/// (grouped-query: head `h` reads kv head `h / (heads / kv_heads)`, as transformers'
/// `repeat_kv`), returning `(b, heads, t, d)`. The queries of one kv head's group are stacked into
/// one `(group·t, d)` matrix, so the keys and values are never copied per head (nor their
/// gradients summed back).
pub fn causal_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    let (b, nh, t, d) = q.dims4()?;
    let nkv = k.dim(1)?;
    if nkv == 0 || nh % nkv != 0 || k.dims() != v.dims() || k.dims() != [b, nkv, t, d] {
        candle_core::bail!(
            "causal-attention: q {:?}, k {:?}, v {:?} do not fit",
            q.dims(),
            k.dims(),
            v.dims()
        )
    }
    let grouped = q.contiguous()?.reshape((b, nkv, nh / nkv * t, d))?;
    let scores = grouped.matmul(&k.t()?)?.reshape((b, nh, t, t))?;
    let p = causal_softmax(&scores, scale)?.reshape((b, nkv, nh / nkv * t, t))?;
    p.matmul(&v.contiguous()?)?.reshape((b, nh, t, d))
}

// ---------------------------------------------------------------------------------------------
// Rotary embedding (the half-rotation layout of HF Llama and Qwen).

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

// ---------------------------------------------------------------------------------------------
// silu(gate) · up.

struct SiluMul;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Elements handed to one rayon task at least.
const MIN_ELEMS_PER_TASK: usize = 4096;

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

// ---------------------------------------------------------------------------------------------
// Cross-entropy per row.

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

// ---------------------------------------------------------------------------------------------
// Dropout masks.

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's output function.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Element `k` of the mask of `seed`: 0 with probability `p`, else `keep`. A counter-based hash, so
/// any element is computed on its own, identically on the CPU and in the CUDA kernel.
fn mask_value(seed: u64, k: u64, p: f32, keep: f32) -> f32 {
    let u = (mix64(seed.wrapping_add((k + 1).wrapping_mul(GOLDEN))) >> 40) as f32 / 16_777_216.0;
    if u < p {
        0.0
    } else {
        keep
    }
}

/// A dropout mask of `shape` on `device` (f32: 0 with probability `p`, else `1 / (1 − p)`), a
/// function of `seed` alone and the same on every device. On a GPU it is made there, so training
/// with dropout sends no mask across the bus.
pub fn dropout_mask(
    shape: &Shape,
    p: f32,
    seed: u64,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability {p} is not in [0, 1)")
    }
    let keep = 1.0 / (1.0 - p);
    let n = shape.elem_count();
    match device {
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(dev) => {
            let storage = candle_core::Storage::Cuda(cuda::dropout_mask(dev, n, seed, p, keep)?);
            let none = candle_core::op::BackpropOp::none();
            Ok(Tensor::from_storage(storage, shape.clone(), none, false))
        }
        _ => {
            let mut v = vec![0f32; n];
            v.par_iter_mut()
                .enumerate()
                .with_min_len(MIN_ELEMS_PER_TASK)
                .for_each(|(k, m)| *m = mask_value(seed, k as u64, p, keep));
            Tensor::from_vec(v, shape.clone(), &candle_core::Device::Cpu)?.to_device(device)
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    use super::*;
    use crate::lora::LoraRng;
    use crate::test_support::{max_abs_diff, weighted_sum};

    fn rand(rng: &mut LoraRng, shape: &[usize]) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(rng.uniform(n, 2.0), shape, &Device::Cpu).unwrap())
            .unwrap()
    }

    /// Runs `f` once on the fused path and once on the primitive formula (f64, where the fused
    /// kernels do not apply), with a weighted sum as the loss so every output element carries a
    /// distinct gradient; returns the largest output and input-gradient differences.
    fn compare(inputs: &[Var], f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>) -> (f32, f32) {
        let run = |dtype: DType| {
            let vars: Vec<Var> = inputs
                .iter()
                .map(|v| Var::from_tensor(&v.as_tensor().to_dtype(dtype).unwrap()).unwrap())
                .collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ts).unwrap();
            let grads = weighted_sum(&y).unwrap().backward().unwrap();
            let gs: Vec<Tensor> = vars
                .iter()
                .map(|v| {
                    grads
                        .get(v.as_tensor())
                        .expect("every input gets a gradient")
                        .to_dtype(DType::F32)
                        .unwrap()
                })
                .collect();
            (y.to_dtype(DType::F32).unwrap(), gs)
        };
        let (y1, g1) = run(DType::F32);
        let (y2, g2) = run(DType::F64);
        let gd = g1
            .iter()
            .zip(&g2)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        (max_abs_diff(&y1, &y2), gd)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn rms_norm_matches_the_primitive_formula(rows in 1usize..40, d in 1usize..70, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let x = rand(&mut rng, &[rows, d]);
            let w = Tensor::from_vec(rng.uniform(d, 1.5), d, &Device::Cpu).unwrap();
            let (dy, dg) = compare(&[x], |t| {
                rms_norm(&t[0], &w.to_dtype(t[0].dtype())?, 1e-5)
            });
            prop_assert!(dy < 1e-4 && dg < 1e-3, "value {dy}, grad {dg}");
        }

        #[test]
        fn causal_softmax_matches_the_masked_softmax(n in 1usize..6, t in 1usize..40, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let x = rand(&mut rng, &[n, t, t]);
            let (dy, dg) = compare(&[x], |s| causal_softmax(&s[0], 0.37));
            prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
        }

        #[test]
        fn rope_matches_the_rotation(b in 1usize..3, h in 1usize..4, t in 1usize..20,
                                     half in 1usize..12, per_row: bool, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let x = rand(&mut rng, &[b, h, t, 2 * half]);
            let cb = if per_row { b } else { 1 };
            let cos = Tensor::from_vec(rng.uniform(cb * t * half, 1.0), (cb, 1, t, half), &Device::Cpu).unwrap();
            let sin = Tensor::from_vec(rng.uniform(cb * t * half, 1.0), (cb, 1, t, half), &Device::Cpu).unwrap();
            let (dy, dg) = compare(&[x], |s| {
                let dt = s[0].dtype();
                rope(&s[0], &cos.to_dtype(dt)?, &sin.to_dtype(dt)?)
            });
            prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
        }

        #[test]
        fn silu_mul_matches_the_product(n in 1usize..5000, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let g = rand(&mut rng, &[n]);
            let u = rand(&mut rng, &[n]);
            let (dy, dg) = compare(&[g, u], |s| silu_mul(&s[0], &s[1]));
            prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
        }

        #[test]
        fn nll_matches_log_softmax_and_gather(rows in 1usize..20, v in 1usize..300, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let x = rand(&mut rng, &[rows, v]);
            let t: Vec<u32> = (0..rows).map(|r| ((r as u64 * 31 + seed) % v as u64) as u32).collect();
            let t = Tensor::from_vec(t, rows, &Device::Cpu).unwrap();
            let (dy, dg) = compare(&[x], |s| nll(&s[0], &t));
            prop_assert!(dy < 1e-4 && dg < 1e-5, "value {dy}, grad {dg}");
        }
    }

    /// The attention reference: every kv head copied to its query heads (transformers'
    /// `repeat_kv`), scores masked and softmaxed from primitives.
    fn attention_with_repeated_kv(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
        let (b, nh, t, d) = q.dims4().unwrap();
        let rep = nh / k.dim(1).unwrap();
        let repeat = |x: &Tensor| {
            Tensor::cat(&vec![x; rep], 2)
                .unwrap()
                .reshape((b, nh, t, d))
                .unwrap()
        };
        let (k, v) = (repeat(k), repeat(v));
        let mask: Vec<f32> = (0..t)
            .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), q.device())
            .unwrap()
            .to_dtype(q.dtype())
            .unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&v)
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn grouped_attention_matches_repeated_kv(b in 1usize..3, nkv in 1usize..4, rep in 1usize..4,
                                                 t in 1usize..12, d in 1usize..9, seed: u64) {
            let mut rng = LoraRng::new(seed);
            let q = rand(&mut rng, &[b, nkv * rep, t, d]);
            let k = rand(&mut rng, &[b, nkv, t, d]);
            let v = rand(&mut rng, &[b, nkv, t, d]);
            let grouped = |s: &[Tensor]| causal_attention(&s[0], &s[1], &s[2], 0.3);
            let (dy, dg) = compare(&[q.clone(), k.clone(), v.clone()], grouped);
            prop_assert!(dy < 1e-5 && dg < 1e-5, "value {dy}, grad {dg}");
            let fused = causal_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.3).unwrap();
            let reference =
                attention_with_repeated_kv(q.as_tensor(), k.as_tensor(), v.as_tensor(), 0.3);
            prop_assert!(max_abs_diff(&fused, &reference) < 1e-5);
        }
    }

    #[test]
    fn attention_rejects_heads_that_do_not_group() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 3, 4, 2), DType::F32, &dev).unwrap();
        let kv = Tensor::zeros((1, 2, 4, 2), DType::F32, &dev).unwrap();
        let e = causal_attention(&q, &kv, &kv, 1.0).unwrap_err().to_string();
        assert!(e.contains("do not fit"), "{e}");
    }

    #[test]
    fn rope_takes_shared_tables_of_rank_two() {
        let mut rng = LoraRng::new(3);
        let x = rand(&mut rng, &[2, 3, 5, 8]);
        let cos = Tensor::from_vec(rng.uniform(20, 1.0), (5, 4), &Device::Cpu).unwrap();
        let sin = Tensor::from_vec(rng.uniform(20, 1.0), (5, 4), &Device::Cpu).unwrap();
        let fused = rope(x.as_tensor(), &cos, &sin).unwrap();
        let slow = candle_nn::rotary_emb::rope_slow(x.as_tensor(), &cos, &sin).unwrap();
        assert!(max_abs_diff(&fused, &slow) < 1e-6);
    }

    #[test]
    fn bad_shapes_and_targets_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
        assert!(causal_softmax(&x, 1.0).is_err());
        let w = Tensor::ones(5, DType::F32, &dev).unwrap();
        assert!(rms_norm(&x, &w, 1e-5).is_err());
        let logits = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let t = Tensor::from_vec(vec![0u32, 3], 2, &dev).unwrap();
        let e = nll(&logits, &t).unwrap_err().to_string();
        assert!(e.contains("outside the vocabulary"), "{e}");
    }

    #[test]
    fn dropout_masks_follow_the_seed_and_the_rate() {
        let shape = Shape::from((300, 200));
        let m = dropout_mask(&shape, 0.25, 7, &Device::Cpu).unwrap();
        let again = dropout_mask(&shape, 0.25, 7, &Device::Cpu).unwrap();
        let other = dropout_mask(&shape, 0.25, 8, &Device::Cpu).unwrap();
        assert_eq!(max_abs_diff(&m, &again), 0.0);
        assert!(max_abs_diff(&m, &other) > 0.0);
        let v = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let dropped = v.iter().filter(|x| **x == 0.0).count() as f64 / v.len() as f64;
        // 60,000 draws: the rate is within 1% of 0.25 (about 5 standard deviations).
        assert!((dropped - 0.25).abs() < 0.01, "{dropped}");
        assert!(v
            .iter()
            .all(|x| *x == 0.0 || (*x - 1.0 / 0.75).abs() < 1e-6));
        assert!(dropout_mask(&shape, 1.0, 7, &Device::Cpu).is_err());
    }

    /// The CUDA kernels against the CPU ones (built with `--features cuda`; needs a GPU).
    #[cfg(feature = "cuda")]
    mod on_cuda {
        use super::*;

        /// Runs `f` on the CPU and on the GPU with the same inputs and a weighted-sum loss;
        /// returns the largest output and input-gradient differences.
        fn cpu_vs_cuda(
            inputs: &[Tensor],
            grads_of: usize,
            f: impl Fn(&[Tensor]) -> candle_core::Result<Tensor>,
        ) -> (f32, f32) {
            let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
            let run = |dev: &Device| {
                let vars: Vec<Var> = inputs[..grads_of]
                    .iter()
                    .map(|t| Var::from_tensor(&t.to_device(dev).unwrap()).unwrap())
                    .collect();
                let mut ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
                ts.extend(inputs[grads_of..].iter().map(|t| t.to_device(dev).unwrap()));
                let y = f(&ts).unwrap();
                let grads = weighted_sum(&y).unwrap().backward().unwrap();
                let gs: Vec<Tensor> = vars
                    .iter()
                    .map(|v| {
                        grads
                            .get(v.as_tensor())
                            .unwrap()
                            .to_device(&Device::Cpu)
                            .unwrap()
                    })
                    .collect();
                (y.to_device(&Device::Cpu).unwrap(), gs)
            };
            let (y1, g1) = run(&Device::Cpu);
            let (y2, g2) = run(&gpu);
            let gd = g1
                .iter()
                .zip(&g2)
                .map(|(a, b)| max_abs_diff(a, b))
                .fold(0f32, f32::max);
            (max_abs_diff(&y1, &y2), gd)
        }

        fn uniform(rng: &mut LoraRng, shape: &[usize], scale: f32) -> Tensor {
            let n = shape.iter().product();
            Tensor::from_vec(rng.uniform(n, scale), shape, &Device::Cpu).unwrap()
        }

        #[test]
        fn every_fused_op_on_cuda_matches_the_cpu() {
            let mut rng = LoraRng::new(11);
            // The 2B Qwen3-VL shapes (hidden 2048, head 128, 512 positions), and odd ones.
            for (rows, d) in [(64, 2048), (300, 128), (7, 33)] {
                let x = uniform(&mut rng, &[rows, d], 2.0);
                let w = uniform(&mut rng, &[d], 1.5);
                let (dy, dg) = cpu_vs_cuda(&[x, w], 1, |t| rms_norm(&t[0], &t[1], 1e-6));
                assert!(dy < 1e-5 && dg < 1e-4, "rms_norm {rows}x{d}: {dy} {dg}");
            }
            for (n, t) in [(4, 512), (3, 37), (2, 1)] {
                let x = uniform(&mut rng, &[n, t, t], 4.0);
                let (dy, dg) = cpu_vs_cuda(&[x], 1, |s| causal_softmax(&s[0], 0.088));
                assert!(dy < 1e-5 && dg < 1e-5, "softmax {n}x{t}: {dy} {dg}");
            }
            for (b, h, t, half, cb) in [(2, 16, 64, 64, 2), (1, 3, 5, 4, 1), (3, 2, 7, 3, 3)] {
                let x = uniform(&mut rng, &[b, h, t, 2 * half], 2.0);
                let cos = uniform(&mut rng, &[cb, 1, t, half], 1.0);
                let sin = uniform(&mut rng, &[cb, 1, t, half], 1.0);
                let (dy, dg) = cpu_vs_cuda(&[x, cos, sin], 1, |s| rope(&s[0], &s[1], &s[2]));
                assert!(dy < 1e-5 && dg < 1e-5, "rope {b}x{h}x{t}x{half}: {dy} {dg}");
            }
            for n in [6144 * 3 + 5, 1] {
                let g = uniform(&mut rng, &[n], 4.0);
                let u = uniform(&mut rng, &[n], 2.0);
                let (dy, dg) = cpu_vs_cuda(&[g, u], 2, |s| silu_mul(&s[0], &s[1]));
                assert!(dy < 1e-5 && dg < 1e-5, "silu_mul {n}: {dy} {dg}");
            }
            for (rows, v) in [(5, 151_936), (3, 1000), (2, 1)] {
                let x = uniform(&mut rng, &[rows, v], 8.0);
                let t: Vec<u32> = (0..rows).map(|r| ((r * 7919) % v) as u32).collect();
                let t = Tensor::from_vec(t, rows, &Device::Cpu).unwrap();
                let (dy, dg) = cpu_vs_cuda(&[x, t], 1, |s| nll(&s[0], &s[1]));
                // Values near 17: the CPU sums a row's 151,936 exponentials in sequence, the GPU
                // as a tree, so they differ in the fifth significant digit.
                assert!(dy < 5e-4 && dg < 1e-6, "nll {rows}x{v}: {dy} {dg}");
            }
            let q = uniform(&mut rng, &[2, 16, 64, 128], 1.0);
            let k = uniform(&mut rng, &[2, 8, 64, 128], 1.0);
            let v = uniform(&mut rng, &[2, 8, 64, 128], 1.0);
            let (dy, dg) = cpu_vs_cuda(&[q, k, v], 3, |s| {
                causal_attention(&s[0], &s[1], &s[2], 0.088)
            });
            assert!(dy < 1e-4 && dg < 1e-4, "attention: {dy} {dg}");
        }

        #[test]
        fn a_dropout_mask_made_on_the_gpu_equals_the_cpu_one() {
            let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
            let shape = Shape::from((1000, 333));
            let c = dropout_mask(&shape, 0.05, 12345, &Device::Cpu).unwrap();
            let g = dropout_mask(&shape, 0.05, 12345, &gpu).unwrap();
            assert_eq!(max_abs_diff(&c, &g.to_device(&Device::Cpu).unwrap()), 0.0);
        }

        #[test]
        fn empty_inputs_launch_nothing() {
            let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
            let x = Tensor::zeros((0, 8), DType::F32, &gpu).unwrap();
            let w = Tensor::ones(8, DType::F32, &gpu).unwrap();
            assert_eq!(rms_norm(&x, &w, 1e-6).unwrap().dims(), [0, 8]);
        }
    }
}
