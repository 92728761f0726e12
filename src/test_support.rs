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
