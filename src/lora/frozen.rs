//! `x · Wᵀ` with a frozen weight, on any device and dtype, whose backward computes only the
//! input's gradient.
//!
//! candle's `matmul` backward always computes both operands' gradients, so every frozen base
//! layer (and a tied 49152×576 output head) would pay one extra matmul per step for a weight
//! gradient nobody reads. This custom op carries the weight inside it, so the graph sees one input
//! and `bwd` returns `grad · W` only. It calls the storage backend's own matmul (the one
//! `Tensor::matmul` uses) on the input's storage in place, without copies, so it also runs on CUDA
//! and in bf16. The same generic code serves both backends, so the CPU tests check the layouts the
//! GPU uses.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Shape, Storage, Tensor};

struct FrozenMatmul {
    /// (out, in).
    weight: Tensor,
}

/// The storage of an operand the op carries (a frozen weight, a mask) on the backend the op runs
/// on.
pub(super) trait Pick: BackendStorage + Sized {
    fn pick<'a>(s: &'a Storage, op: &str) -> candle_core::Result<&'a Self>;
}

impl Pick for CpuStorage {
    fn pick<'a>(s: &'a Storage, op: &str) -> candle_core::Result<&'a Self> {
        match s {
            Storage::Cpu(x) => Ok(x),
            _ => candle_core::bail!("{op}: operands on different devices"),
        }
    }
}

impl Pick for CudaStorage {
    fn pick<'a>(s: &'a Storage, op: &str) -> candle_core::Result<&'a Self> {
        match s {
            Storage::Cuda(x) => Ok(x),
            _ => candle_core::bail!("{op}: operands on different devices"),
        }
    }
}

/// The output shape and `(m, n, k)` for a contiguous input of `layout` (any leading dimensions)
/// times the (n, k) weight.
pub(super) fn dims(
    layout: &Layout,
    weight: &Tensor,
    op: &str,
) -> candle_core::Result<(Shape, usize, usize, usize)> {
    let (n, k) = weight.dims2()?;
    let d = layout.shape().dims();
    let Some((&last, lead)) = d.split_last() else {
        candle_core::bail!("{op}: the input has no dimensions")
    };
    if last != k {
        candle_core::bail!("{op}: input width {last} but the weight is {n}x{k}")
    }
    if !layout.is_contiguous() {
        candle_core::bail!("{op}: the input must be contiguous")
    }
    let mut out = lead.to_vec();
    out.push(n);
    Ok((Shape::from(out), lead.iter().product(), n, k))
}

/// `x (m, k) · Wᵀ` through the backend, in the weight's dtype: the weight's (n, k) layout
/// transposed is the strided (k, n) operand `Tensor::matmul` would pass for `w.t()`.
pub(super) fn backend_matmul<S: Pick>(
    x: &S,
    layout: &Layout,
    weight: &Tensor,
    op: &str,
) -> candle_core::Result<(S, Shape)> {
    let (shape, m, n, k) = dims(layout, weight, op)?;
    let (ws, wl) = weight.storage_and_layout();
    let lhs = Layout::contiguous_with_offset((m, k), layout.start_offset());
    let rhs = wl.transpose(0, 1)?;
    Ok((
        x.matmul(S::pick(&ws, op)?, (1, m, n, k), &lhs, &rhs)?,
        shape,
    ))
}

impl CustomOp1 for FrozenMatmul {
    fn name(&self) -> &'static str {
        "frozen-matmul"
    }

    fn cpu_fwd(
        &self,
        storage: &CpuStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        backend_matmul(storage, layout, &self.weight, self.name())
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        backend_matmul(storage, layout, &self.weight, self.name())
    }

    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.broadcast_matmul(&self.weight)?))
    }
}

/// `x · Wᵀ` for a weight that gets no gradient; `x` and `weight` share device and dtype.
pub fn frozen_matmul(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    if x.dtype() != weight.dtype() {
        candle_core::bail!(
            "frozen-matmul: input is {:?} but the weight is {:?}",
            x.dtype(),
            weight.dtype()
        )
    }
    // The backend matmul wants a contiguous weight with its own (n, k) layout.
    let weight = weight.contiguous()?;
    x.contiguous()?.apply_op1(FrozenMatmul { weight })
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Var};
    use candle_nn::{Linear, Module};

    use super::*;
    use crate::lora::LoraRng;
    use crate::test_support::max_abs_diff;

    #[test]
    fn equals_linear_in_value_and_input_gradient() {
        let mut rng = LoraRng::new(5);
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let w = Tensor::from_vec(rng.uniform(7 * 3, 1.0), (7, 3), &dev)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            let x = Var::from_tensor(
                &Tensor::from_vec(rng.uniform(3 * 4 * 3, 1.0), (3, 4, 3), &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            // A contiguous view with an offset: the op must read from the layout's start.
            let xv = x.as_tensor().narrow(0, 1, 2).unwrap();
            assert!(xv.layout().start_offset() > 0 && xv.is_contiguous());
            let plain = Linear::new(w.clone(), None).forward(&xv).unwrap();
            let fast = frozen_matmul(&xv, &w).unwrap();
            assert_eq!(fast.dims(), &[2, 4, 7]);
            let tol = if dtype == DType::F32 { 1e-6 } else { 2e-2 };
            assert!(max_abs_diff(&plain, &fast) < tol, "{dtype:?}");
            let g1 = plain
                .to_dtype(DType::F32)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let g2 = fast
                .to_dtype(DType::F32)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let (a, b) = (
                g1.get(x.as_tensor()).unwrap(),
                g2.get(x.as_tensor()).unwrap(),
            );
            let tol = if dtype == DType::F32 { 1e-5 } else { 5e-2 };
            assert!(max_abs_diff(a, b) < tol, "{dtype:?}");
        }
    }

    #[test]
    fn mismatched_dtypes_are_refused() {
        let dev = Device::Cpu;
        let w = Tensor::zeros((2, 3), DType::BF16, &dev).unwrap();
        let x = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
        assert!(frozen_matmul(&x, &w).is_err());
    }
}
