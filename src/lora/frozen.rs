//! Matmul with a frozen weight whose backward computes only the input's gradient.
//!
//! candle's `matmul` backward always computes both operands' gradients, so every frozen base
//! layer (and the tied output head, 49152×576) would pay a full extra matmul per step for a weight
//! gradient that is thrown away. This custom op carries the weight inside it: the graph sees one
//! input, and `bwd` returns `grad · W` only.

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Module, Shape, Tensor};
use candle_nn::Linear;

struct FrozenMatmul {
    /// (out, in).
    weight: Tensor,
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
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("frozen-matmul: only f32 is supported")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-matmul: the input must be contiguous")
        };
        let x = Tensor::from_slice(&data[start..end], layout.shape(), &candle_core::Device::Cpu)?;
        let y = Linear::new(self.weight.clone(), None).forward(&x)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1::<f32>()?), shape))
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

/// `x · Wᵀ` for a weight that gets no gradient. Falls back to the plain matmul off the CPU or for
/// other dtypes (correct, only slower).
pub fn frozen_linear(x: &Tensor, weight: &Tensor) -> candle_core::Result<Tensor> {
    if x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x.rank() >= 2
    {
        x.contiguous()?.apply_op1(FrozenMatmul {
            weight: weight.clone(),
        })
    } else {
        Linear::new(weight.clone(), None).forward(x)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;
    use crate::lora::LoraRng;

    #[test]
    fn same_output_and_input_gradient_as_matmul() {
        let mut rng = LoraRng::new(1);
        let dev = Device::Cpu;
        let w = Tensor::from_vec(rng.uniform(5 * 3, 1.0), (5, 3), &dev).unwrap();
        let x = Var::from_tensor(
            &Tensor::from_vec(rng.uniform(2 * 4 * 3, 1.0), (2, 4, 3), &dev).unwrap(),
        )
        .unwrap();
        let plain = Linear::new(w.clone(), None).forward(x.as_tensor()).unwrap();
        let fast = frozen_linear(x.as_tensor(), &w).unwrap();
        let d = (&plain - &fast)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let g1 = plain.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = fast.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let (a, b) = (
            g1.get(x.as_tensor()).unwrap(),
            g2.get(x.as_tensor()).unwrap(),
        );
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
