//! A whole LoRA layer of the training forward as one differentiable op:
//! `y = x·Wᵀ + scale · ((x ∘ mask)·Aᵀ)·Bᵀ`, with `W` frozen (any dtype; `x` is cast to it and
//! the product back to f32) and `A`, `B` trained in f32.
//!
//! Written from tensor primitives the same layer is about a dozen graph nodes (reshapes, casts,
//! transposes, two matmuls, a scale, an add), and candle's backward pays one zero-filled buffer and
//! one add for every input of every node, besides the node's own gradient kernels. On a GPU each of
//! those is a kernel launch and an allocation, and the host time spent issuing them, not the
//! arithmetic, bounds a training step. Here the forward issues the same matmuls on the inputs'
//! storage in place (through the backend's own `matmul`, as `frozen::frozen_matmul`), and the
//! backward computes `∂x`, `∂A`, `∂B` directly: one node per layer. The same generic code runs on
//! the CPU and on CUDA.

use candle_core::op::{Add, Mul};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, DType, Layout, Shape, Tensor, D};

use super::frozen::{self, Pick};

/// The frozen half of a layer: the weight, and the input already cast to its dtype (shared by the
/// layers that read one input; detached).
#[derive(Clone)]
pub struct Frozen<'a> {
    /// (out, in), contiguous.
    pub weight: &'a Tensor,
    /// `x` in the weight's dtype, or `None` when the weight is f32.
    pub cast_input: Option<&'a Tensor>,
}

/// The trained half: `A` (r, in), `B` (out, r), the scale, and the dropout mask of `x` (f32, the
/// inverse keep probability where kept).
pub struct Adapter<'a> {
    pub a: &'a Tensor,
    pub b: &'a Tensor,
    pub scale: f64,
    pub mask: Option<&'a Tensor>,
}

struct Shapes {
    rows: usize,
    inp: usize,
    out: usize,
    /// `x`'s leading dimensions, then `out`.
    out_shape: Shape,
    /// `x` as the contiguous `(rows, inp)` matrix it is.
    x2: Layout,
}

fn shapes(lx: &Layout, weight: &Tensor, op: &str) -> candle_core::Result<Shapes> {
    let (out_shape, rows, out, inp) = frozen::dims(lx, weight, op)?;
    Ok(Shapes {
        rows,
        inp,
        out,
        out_shape,
        x2: Layout::contiguous_with_offset((rows, inp), lx.start_offset()),
    })
}

/// `x·Wᵀ` in f32: through the cast input when there is one, cast back to f32.
fn base_product<S: Pick>(
    x: &S,
    lx: &Layout,
    frozen: &FrozenOwned,
    s: &Shapes,
    op: &str,
) -> candle_core::Result<S> {
    let (y, _) = match &frozen.cast_input {
        Some(xw) => {
            let (xs, lxw) = xw.storage_and_layout();
            frozen::backend_matmul(S::pick(&xs, op)?, lxw, &frozen.weight, op)?
        }
        None => frozen::backend_matmul(x, lx, &frozen.weight, op)?,
    };
    if frozen.weight.dtype() == DType::F32 {
        Ok(y)
    } else {
        y.to_dtype(&Layout::contiguous((s.rows, s.out)), DType::F32)
    }
}

/// Owned handles of the frozen operands, kept inside the ops.
#[derive(Clone)]
struct FrozenOwned {
    weight: Tensor,
    cast_input: Option<Tensor>,
}

impl FrozenOwned {
    fn new(f: &Frozen) -> candle_core::Result<Self> {
        Ok(Self {
            weight: f.weight.contiguous()?,
            cast_input: f.cast_input.map(|t| t.detach().contiguous()).transpose()?,
        })
    }

    /// `∂L/∂x` of the frozen product: `g·W` in the weight's dtype, back to f32.
    fn input_grad(&self, g: &Tensor) -> candle_core::Result<Tensor> {
        let dt = self.weight.dtype();
        g.to_dtype(dt)?.matmul(&self.weight)?.to_dtype(DType::F32)
    }
}

// ---------------------------------------------------------------------------------------------
// A frozen layer (no adapter).

struct FrozenLinear {
    frozen: FrozenOwned,
}

impl FrozenLinear {
    fn fwd<S: Pick>(&self, x: &S, lx: &Layout) -> candle_core::Result<(S, Shape)> {
        let s = shapes(lx, &self.frozen.weight, self.name())?;
        let y = base_product(x, lx, &self.frozen, &s, self.name())?;
        Ok((y, s.out_shape))
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, x: &CpuStorage, lx: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(x, lx)
    }

    fn cuda_fwd(&self, x: &CudaStorage, lx: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        self.fwd(x, lx)
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let out = g.dim(D::Minus1)?;
        let g = g
            .detach()
            .contiguous()?
            .reshape((g.elem_count() / out, out))?;
        Ok(Some(self.frozen.input_grad(&g)?.reshape(x.shape())?))
    }
}

// ---------------------------------------------------------------------------------------------
// A layer with an adapter.

struct LoraLinearOp {
    frozen: FrozenOwned,
    scale: f64,
    mask: Option<Tensor>,
}

impl LoraLinearOp {
    #[allow(clippy::too_many_arguments)]
    fn fwd<S: Pick>(
        &self,
        x: &S,
        lx: &Layout,
        a: &S,
        la: &Layout,
        b: &S,
        lb: &Layout,
    ) -> candle_core::Result<(S, Shape)> {
        let op = self.name();
        let s = shapes(lx, &self.frozen.weight, op)?;
        let (r, ka) = la.shape().dims2()?;
        let (ob, rb) = lb.shape().dims2()?;
        if ka != s.inp || ob != s.out || rb != r {
            candle_core::bail!(
                "{op}: A {:?} and B {:?} do not fit a {}x{} layer",
                la.shape().dims(),
                lb.shape().dims(),
                s.out,
                s.inp
            )
        }
        let base = base_product(x, lx, &self.frozen, &s, op)?;
        let rows_in = Layout::contiguous((s.rows, s.inp));
        let rows_r = Layout::contiguous((s.rows, r));
        let rows_out = Layout::contiguous((s.rows, s.out));
        let h = match &self.mask {
            Some(m) => {
                let (ms, lm) = m.storage_and_layout();
                let lm = Layout::contiguous_with_offset((s.rows, s.inp), lm.start_offset());
                let xd = x.binary_impl::<Mul>(S::pick(&ms, op)?, &s.x2, &lm)?;
                xd.matmul(a, (1, s.rows, r, s.inp), &rows_in, &la.transpose(0, 1)?)?
            }
            None => x.matmul(a, (1, s.rows, r, s.inp), &s.x2, &la.transpose(0, 1)?)?,
        };
        // The scale goes on the narrow (rows, r) product.
        let h = h.affine(&rows_r, self.scale, 0.0)?;
        let z = h.matmul(b, (1, s.rows, s.out, r), &rows_r, &lb.transpose(0, 1)?)?;
        let y = base.binary_impl::<Add>(&z, &rows_out, &rows_out)?;
        Ok((y, s.out_shape))
    }
}

impl CustomOp3 for LoraLinearOp {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        lx: &Layout,
        a: &CpuStorage,
        la: &Layout,
        b: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        self.fwd(x, lx, a, la, b, lb)
    }

    fn cuda_fwd(
        &self,
        x: &CudaStorage,
        lx: &Layout,
        a: &CudaStorage,
        la: &Layout,
        b: &CudaStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        self.fwd(x, lx, a, la, b, lb)
    }

    /// With `x_d = x ∘ mask`, `h = scale·x_d·Aᵀ` and `g_B = scale·g·B`:
    /// `∂B = gᵀ·h`, `∂A = g_Bᵀ·x_d`, `∂x = g·W + (g_B·A) ∘ mask`.
    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        // Detached: the gradients are values, not graph nodes holding their inputs alive. All
        // products run on the (rows, features) matrices the inputs are.
        let out = g.dim(D::Minus1)?;
        let inp = x.dim(D::Minus1)?;
        let rows = g.elem_count() / out;
        let g = g.detach().contiguous()?.reshape((rows, out))?;
        let x2 = x.detach().reshape((rows, inp))?;
        let (a, b) = (a.detach(), b.detach());
        let mask = self
            .mask
            .as_ref()
            .map(|m| m.reshape((rows, inp)))
            .transpose()?;
        let xd = match &mask {
            Some(m) => (&x2 * m)?,
            None => x2,
        };
        let h = (xd.matmul(&a.t()?)? * self.scale)?;
        let db = g.t()?.matmul(&h)?;
        let gb = (g.matmul(&b)? * self.scale)?;
        let da = gb.t()?.matmul(&xd)?;
        let mut dx_lora = gb.matmul(&a)?;
        if let Some(m) = &mask {
            dx_lora = (dx_lora * m)?;
        }
        let dx = (self.frozen.input_grad(&g)? + dx_lora)?.reshape(x.shape())?;
        Ok((Some(dx), Some(da), Some(db)))
    }
}

/// `x (…, in) f32 → (…, out) f32` through the frozen weight, plus the adapter when given (its
/// dropout mask, if any, shaped like `x`).
pub fn linear(
    x: &Tensor,
    frozen: &Frozen,
    adapter: Option<&Adapter>,
) -> candle_core::Result<Tensor> {
    if x.dtype() != DType::F32 {
        candle_core::bail!("lora-linear: the input must be f32, got {:?}", x.dtype())
    }
    let expected = if frozen.weight.dtype() == DType::F32 {
        None
    } else {
        Some(frozen.weight.dtype())
    };
    if frozen.cast_input.map(Tensor::dtype) != expected {
        candle_core::bail!(
            "lora-linear: a {:?} weight needs the input cast to it (and an f32 one none)",
            frozen.weight.dtype()
        )
    }
    if let Some(c) = frozen.cast_input {
        if c.dims() != x.dims() {
            candle_core::bail!(
                "lora-linear: cast input {:?} for x {:?}",
                c.dims(),
                x.dims()
            )
        }
    }
    if let Some(m) = adapter.and_then(|a| a.mask) {
        if m.dims() != x.dims() || m.dtype() != DType::F32 {
            candle_core::bail!(
                "lora-linear: dropout mask {:?} for x {:?}",
                m.dims(),
                x.dims()
            )
        }
    }
    let owned = FrozenOwned::new(frozen)?;
    let x = x.contiguous()?;
    match adapter {
        None => x.apply_op1(FrozenLinear { frozen: owned }),
        Some(ad) => {
            let op = LoraLinearOp {
                frozen: owned,
                scale: ad.scale,
                mask: ad.mask.map(|m| m.detach().contiguous()).transpose()?,
            };
            x.apply_op3(&ad.a.contiguous()?, &ad.b.contiguous()?, op)
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

    fn var(rng: &mut LoraRng, shape: &[usize]) -> Var {
        let n = shape.iter().product();
        Var::from_tensor(&Tensor::from_vec(rng.uniform(n, 1.0), shape, &Device::Cpu).unwrap())
            .unwrap()
    }

    /// The same layer from primitives: what the op replaces.
    fn reference(
        x: &Tensor,
        w: &Tensor,
        a: &Tensor,
        b: &Tensor,
        scale: f64,
        mask: Option<&Tensor>,
    ) -> Tensor {
        let wd = w.dtype();
        let base = x
            .to_dtype(wd)
            .unwrap()
            .matmul(&w.detach().t().unwrap())
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let xd = match mask {
            Some(m) => (x * m).unwrap(),
            None => x.clone(),
        };
        let lora = xd
            .matmul(&a.t().unwrap())
            .unwrap()
            .matmul(&b.t().unwrap())
            .unwrap();
        (base + (lora * scale).unwrap()).unwrap()
    }

    /// Output, ∂x, ∂A, ∂B of the op and of the reference under a weighted-sum loss.
    fn both(
        rows: usize,
        inp: usize,
        out: usize,
        r: usize,
        wdtype: DType,
        dropout: bool,
        seed: u64,
    ) -> [f32; 4] {
        let mut rng = LoraRng::new(seed);
        let x = var(&mut rng, &[rows, inp]);
        let a = var(&mut rng, &[r, inp]);
        let b = var(&mut rng, &[out, r]);
        let w = Tensor::from_vec(rng.uniform(out * inp, 1.0), (out, inp), &Device::Cpu)
            .unwrap()
            .to_dtype(wdtype)
            .unwrap();
        let mask = dropout.then(|| {
            rng.dropout_mask_on(&(rows, inp).into(), 0.3, &Device::Cpu)
                .unwrap()
        });
        let run = |y: Tensor| {
            let grads = weighted_sum(&y).unwrap().backward().unwrap();
            let g = |v: &Var| grads.get(v.as_tensor()).unwrap().clone();
            (y.clone(), g(&x), g(&a), g(&b))
        };
        let cast = (wdtype != DType::F32).then(|| x.as_tensor().to_dtype(wdtype).unwrap());
        let frozen = Frozen {
            weight: &w,
            cast_input: cast.as_ref(),
        };
        let adapter = Adapter {
            a: a.as_tensor(),
            b: b.as_tensor(),
            scale: 1.7,
            mask: mask.as_ref(),
        };
        let fused = run(linear(x.as_tensor(), &frozen, Some(&adapter)).unwrap());
        let slow = run(reference(
            x.as_tensor(),
            &w,
            a.as_tensor(),
            b.as_tensor(),
            1.7,
            mask.as_ref(),
        ));
        [
            max_abs_diff(&fused.0, &slow.0),
            max_abs_diff(&fused.1, &slow.1),
            max_abs_diff(&fused.2, &slow.2),
            max_abs_diff(&fused.3, &slow.3),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        #[test]
        fn the_fused_layer_matches_the_primitive_layer(rows in 1usize..20, inp in 1usize..24,
                                                       out in 1usize..24, r in 1usize..6,
                                                       dropout: bool, seed: u64) {
            let d = both(rows, inp, out, r, DType::F32, dropout, seed);
            prop_assert!(d.iter().all(|d| *d < 1e-4), "{d:?}");
        }

        #[test]
        fn a_bf16_weight_matches_the_cast_primitives(rows in 1usize..12, inp in 1usize..24,
                                                     out in 1usize..24, seed: u64) {
            let d = both(rows, inp, out, 4, DType::BF16, true, seed);
            // Both sides round the same products to bf16; only summation order differs.
            prop_assert!(d.iter().all(|d| *d < 2e-2), "{d:?}");
        }
    }

    #[test]
    fn a_frozen_layer_passes_the_input_gradient_only() {
        let mut rng = LoraRng::new(4);
        let x = var(&mut rng, &[3, 5]);
        let w = Tensor::from_vec(rng.uniform(4 * 5, 1.0), (4, 5), &Device::Cpu).unwrap();
        let y = linear(
            x.as_tensor(),
            &Frozen {
                weight: &w,
                cast_input: None,
            },
            None,
        )
        .unwrap();
        let expect = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert!(max_abs_diff(&y, &expect) < 1e-6);
        let grads = y.sum_all().unwrap().backward().unwrap();
        let dx = grads.get(x.as_tensor()).unwrap();
        let expect = Tensor::ones((3, 4), DType::F32, &Device::Cpu)
            .unwrap()
            .matmul(&w)
            .unwrap();
        assert!(max_abs_diff(dx, &expect) < 1e-6);
    }

    #[test]
    fn mismatched_operands_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
        let w = Tensor::zeros((4, 5), DType::F32, &dev).unwrap();
        let e = linear(
            &x,
            &Frozen {
                weight: &w,
                cast_input: None,
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("input width 3"), "{e}");
        let w = Tensor::zeros((4, 3), DType::BF16, &dev).unwrap();
        let e = linear(
            &x,
            &Frozen {
                weight: &w,
                cast_input: None,
            },
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("cast"), "{e}");
        let w = Tensor::zeros((4, 3), DType::F32, &dev).unwrap();
        let a = Tensor::zeros((2, 7), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((4, 2), DType::F32, &dev).unwrap();
        let ad = Adapter {
            a: &a,
            b: &b,
            scale: 1.0,
            mask: None,
        };
        let e = linear(
            &x,
            &Frozen {
                weight: &w,
                cast_input: None,
            },
            Some(&ad),
        )
        .unwrap_err();
        assert!(e.to_string().contains("do not fit"), "{e}");
    }

    /// The op on a GPU against the CPU (built with `--features cuda`; needs a GPU).
    #[cfg(feature = "cuda")]
    #[test]
    fn the_layer_on_cuda_matches_the_cpu() {
        let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
        let mut rng = LoraRng::new(21);
        let (rows, inp, out, r) = (300, 256, 384, 16);
        let x = Tensor::from_vec(rng.uniform(rows * inp, 1.0), (rows, inp), &Device::Cpu).unwrap();
        let a = Tensor::from_vec(rng.uniform(r * inp, 0.1), (r, inp), &Device::Cpu).unwrap();
        let b = Tensor::from_vec(rng.uniform(out * r, 0.1), (out, r), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(rng.uniform(out * inp, 0.1), (out, inp), &Device::Cpu).unwrap();
        let mask = rng
            .dropout_mask_on(&(rows, inp).into(), 0.1, &Device::Cpu)
            .unwrap();
        let run = |dev: &Device, wdtype: DType| {
            let x = Var::from_tensor(&x.to_device(dev).unwrap()).unwrap();
            let a = Var::from_tensor(&a.to_device(dev).unwrap()).unwrap();
            let b = Var::from_tensor(&b.to_device(dev).unwrap()).unwrap();
            let w = w.to_device(dev).unwrap().to_dtype(wdtype).unwrap();
            let mask = mask.to_device(dev).unwrap();
            let cast = (wdtype != DType::F32).then(|| x.as_tensor().to_dtype(wdtype).unwrap());
            let frozen = Frozen {
                weight: &w,
                cast_input: cast.as_ref(),
            };
            let ad = Adapter {
                a: a.as_tensor(),
                b: b.as_tensor(),
                scale: 2.0,
                mask: Some(&mask),
            };
            let y = linear(x.as_tensor(), &frozen, Some(&ad)).unwrap();
            let grads = weighted_sum(&y).unwrap().backward().unwrap();
            let cpu = |t: &Tensor| t.to_device(&Device::Cpu).unwrap();
            [
                cpu(&y),
                cpu(grads.get(x.as_tensor()).unwrap()),
                cpu(grads.get(a.as_tensor()).unwrap()),
                cpu(grads.get(b.as_tensor()).unwrap()),
            ]
        };
        for (wdtype, tol) in [(DType::F32, 1e-4), (DType::BF16, 5e-2)] {
            let (c, g) = (run(&Device::Cpu, wdtype), run(&gpu, wdtype));
            for (i, (c, g)) in c.iter().zip(&g).enumerate() {
                let d = max_abs_diff(c, g);
                assert!(d < tol, "{wdtype:?} output {i}: {d}");
            }
        }
    }
}
