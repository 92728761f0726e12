//! Helpers shared by the unit tests and, through `#[path]`, the integration tests.

use candle_core::{DType, Tensor};

/// The largest absolute elementwise difference of two tensors of one shape, compared in f32.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "tensors of different shapes");
    let f32 = |t: &Tensor| t.to_dtype(DType::F32).expect("f32 conversion");
    (f32(a) - f32(b))
        .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
        .expect("difference of two tensors")
}

/// `Σ y·w` with fixed weights in [−0.4, 0.56): a loss under which every element of `y` carries its
/// own gradient, for comparing backward passes. (The unit tests use it; the integration tests,
/// which include this file too, do not.)
#[allow(dead_code)]
pub fn weighted_sum(y: &Tensor) -> candle_core::Result<Tensor> {
    let w: Vec<f32> = (0..y.elem_count())
        .map(|i| ((i * 7919) % 13) as f32 / 13.0 - 0.4)
        .collect();
    let w = Tensor::from_vec(w, y.shape(), y.device())?.to_dtype(y.dtype())?;
    (y * w)?.sum_all()
}
