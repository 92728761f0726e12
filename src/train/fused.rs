//! Fused, differentiable ops for the training forward: RMSNorm, causal softmax, rotary embedding,
//! SiLU-gated product and per-row cross-entropy.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward pass, and the same
//! functions written from primitives (`rms_norm_slow`, `softmax`, `rope_slow`) cost one tensor,
//! one allocation and one pass over memory per primitive, twice that again in the backward (where
//! candle also accumulates every gradient into a fresh zero tensor). On the CPU in f32 each op here
//! is one custom op: one pass forward, one pass backward, rows spread over rayon's pool (the one
//! candle's matmul uses), reading the inputs' storage in place. Elsewhere (CUDA, bf16) each falls
//! back to the primitive formula, which is also the reference the tests compare against.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Rows handed to one rayon task at least: small rows (a 64-wide head) are not worth a task each.
const MIN_ROWS_PER_TASK: usize = 16;

fn fast_path(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// The f32 slice a contiguous layout covers.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: only f32 is supported on the CPU")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous")
    };
    Ok(&v[a..b])
}

fn last_dim(l: &Layout, op: &str) -> candle_core::Result<usize> {
    match l.shape().dims().last() {
        Some(&d) if d > 0 => Ok(d),
        _ => candle_core::bail!("{op}: the input has no last dimension"),
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm with a frozen weight.

struct RmsNorm {
    /// (d,), f32, contiguous.
    weight: Tensor,
    eps: f32,
}

fn weight_vec(w: &Tensor, d: usize, op: &str) -> candle_core::Result<Vec<f32>> {
    if w.dims1()? != d {
        candle_core::bail!("{op}: weight has {} values for rows of {d}", w.dims1()?)
    }
    w.to_vec1::<f32>()
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ss: f32 = x.iter().map(|v| v * v).sum();
    1.0 / (ss / x.len() as f32 + eps).sqrt()
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "fused-rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let d = last_dim(l, self.name())?;
        let w = weight_vec(&self.weight, d, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, x)| {
                let r = inv_rms(x, self.eps);
                for ((o, x), w) in o.iter_mut().zip(x).zip(&w) {
                    *o = x * r * w;
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = RmsNormGrad {
            weight: self.weight.clone(),
            eps: self.eps,
        };
        Ok(Some(x.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

/// `∂L/∂x` of RMSNorm from `(x, ∂L/∂y)`: `r·w·g − x·r³·mean(w·g·x)` per row.
struct RmsNormGrad {
    weight: Tensor,
    eps: f32,
}

impl CustomOp2 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "fused-rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(sx, lx, self.name())?;
        let g = slice(sg, lg, self.name())?;
        let d = last_dim(lx, self.name())?;
        let w = weight_vec(&self.weight, d, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, (x, g))| {
                let r = inv_rms(x, self.eps);
                let dot: f32 = x.iter().zip(g).zip(&w).map(|((x, g), w)| x * g * w).sum();
                let c = r * r * r * dot / d as f32;
                for (((o, x), g), w) in o.iter_mut().zip(x).zip(g).zip(&w) {
                    *o = r * w * g - x * c;
                }
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

/// RMSNorm over the last dimension with a frozen `(d,)` weight (no weight gradient).
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    if fast_path(&[x, weight]) {
        let op = RmsNorm {
            weight: weight.contiguous()?,
            eps,
        };
        x.contiguous()?.apply_op1(op)
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

    fn bwd(&self, _x: &Tensor, p: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = CausalSoftmaxGrad { scale: self.scale };
        Ok(Some(p.apply_op2_no_bwd(&g.contiguous()?, &op)?))
    }
}

fn square_last(l: &Layout, op: &str) -> candle_core::Result<usize> {
    let d = l.shape().dims();
    match d {
        [.., a, b] if a == b && *a > 0 => Ok(*b),
        _ => candle_core::bail!("{op}: scores must end in a square (t, t), got {d:?}"),
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

// ---------------------------------------------------------------------------------------------
// Rotary embedding (the half-rotation layout of HF Llama and Qwen).

struct Rope {
    /// (cb, t, d/2) with cb 1 or the batch, f32, contiguous.
    cos: Tensor,
    sin: Tensor,
    /// The transpose (the backward): rotate by −θ.
    inverse: bool,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "fused-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let (b, h, t, d) = l.shape().dims4()?;
        let (cb, ct, half) = self.cos.dims3()?;
        if ct != t || half * 2 != d || (cb != 1 && cb != b) {
            candle_core::bail!(
                "{}: cos/sin {:?} do not fit x {:?}",
                self.name(),
                self.cos.dims(),
                l.shape().dims()
            )
        }
        let cos = self.cos.flatten_all()?.to_vec1::<f32>()?;
        let sin = self.sin.flatten_all()?.to_vec1::<f32>()?;
        let sign = if self.inverse { -1.0 } else { 1.0 };
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .enumerate()
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(row, (o, x))| {
                let bi = if cb == 1 { 0 } else { row / (h * t) };
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
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            inverse: !self.inverse,
        };
        Ok(Some(g.contiguous()?.apply_op1(op)?))
    }
}

/// Rotates the halves of each head of `x` `(b, heads, t, d)` by `(cos, sin)`, each `(t, d/2)` or
/// `(b or 1, 1, t, d/2)`: `[x1·c − x2·s, x2·c + x1·s]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let (cos, sin) = match cos.rank() {
        2 => (cos.unsqueeze(0)?, sin.unsqueeze(0)?),
        4 => (cos.squeeze(1)?, sin.squeeze(1)?),
        _ => (cos.clone(), sin.clone()),
    };
    if fast_path(&[x, &cos, &sin]) {
        let op = Rope {
            cos: cos.contiguous()?,
            sin: sin.contiguous()?,
            inverse: false,
        };
        x.contiguous()?.apply_op1(op)
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
        let g = slice(sg, lg, self.name())?;
        let u = slice(su, lu, self.name())?;
        if lg.shape() != lu.shape() {
            candle_core::bail!("{}: gate and up shapes differ", self.name())
        }
        let mut out = vec![0f32; g.len()];
        out.par_iter_mut()
            .zip(g.par_iter().zip(u.par_iter()))
            .with_min_len(MIN_ELEMS_PER_TASK)
            .for_each(|(o, (g, u))| *o = g * sigmoid(*g) * u);
        Ok((CpuStorage::F32(out), lg.shape().clone()))
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
        let g = slice(sg, lg, self.name())?;
        let u = slice(su, lu, self.name())?;
        let dy = slice(sd, ld, self.name())?;
        let n = g.len();
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
        let mut dims = vec![2];
        dims.extend_from_slice(lg.shape().dims());
        Ok((CpuStorage::F32(out), Shape::from(dims)))
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

struct Nll {
    targets: Vec<u32>,
}

fn check_targets(targets: &[u32], rows: usize, v: usize, op: &str) -> candle_core::Result<()> {
    if targets.len() != rows {
        candle_core::bail!("{op}: {} targets for {rows} rows", targets.len())
    }
    if let Some(t) = targets.iter().find(|t| **t as usize >= v) {
        candle_core::bail!("{op}: target {t} outside the vocabulary of {v}")
    }
    Ok(())
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    m + x.iter().map(|v| (v - m).exp()).sum::<f32>().ln()
}

impl CustomOp1 for Nll {
    fn name(&self) -> &'static str {
        "fused-nll"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let (rows, v) = l.shape().dims2()?;
        check_targets(&self.targets, rows, v, self.name())?;
        let out: Vec<f32> = x
            .par_chunks(v)
            .zip(self.targets.par_iter())
            .map(|(x, t)| log_sum_exp(x) - x[*t as usize])
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(rows)))
    }

    fn bwd(&self, x: &Tensor, nll: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = NllGrad {
            targets: self.targets.clone(),
        };
        Ok(Some(x.apply_op3_no_bwd(nll, &g.contiguous()?, &op)?))
    }
}

/// `∂L/∂x = g·(softmax(x) − onehot(target))` per row; the row's log-sum-exp is `nll + x[target]`.
struct NllGrad {
    targets: Vec<u32>,
}

impl CustomOp3 for NllGrad {
    fn name(&self) -> &'static str {
        "fused-nll-grad"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sn: &CpuStorage,
        ln: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(sx, lx, self.name())?;
        let nll = slice(sn, ln, self.name())?;
        let g = slice(sg, lg, self.name())?;
        let (rows, v) = lx.shape().dims2()?;
        check_targets(&self.targets, rows, v, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(v)
            .zip(x.par_chunks(v))
            .enumerate()
            .for_each(|(r, (o, x))| {
                let t = self.targets[r] as usize;
                let lse = nll[r] + x[t];
                for (o, x) in o.iter_mut().zip(x) {
                    *o = g[r] * (x - lse).exp();
                }
                o[t] -= g[r];
            });
        Ok((CpuStorage::F32(out), lx.shape().clone()))
    }
}

/// The negative log-likelihood of `targets` (n,) u32 under logits `(n, vocab)`: one value per row.
pub fn nll(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    if fast_path(&[logits]) && targets.device().is_cpu() {
        let targets = targets.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        logits.contiguous()?.apply_op1(Nll { targets })
    } else {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        logp.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?.neg()
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    use super::*;
    use crate::lora::LoraRng;
    use crate::test_support::max_abs_diff;

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
            let n = y.elem_count();
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.4)
                .collect();
            let w = Tensor::from_vec(w, y.shape(), &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let grads = (&y * &w).unwrap().sum_all().unwrap().backward().unwrap();
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
}
