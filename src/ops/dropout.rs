//! Dropout masks that are a function of a seed alone, identical on the CPU and on a GPU.

use candle_core::{Shape, Tensor};
use rayon::prelude::*;

#[cfg(feature = "cuda")]
use super::cuda;
use super::MIN_ELEMS_PER_TASK;

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
