//! Fused, differentiable tensor ops, one file each: RMSNorm (`rms_norm`), causal softmax
//! (`softmax`) and the grouped-query attention over it (`attention`), rotary embedding (`rope`),
//! the SiLU-gated product (`silu_gate`), per-row cross-entropy (`nll`), seeded dropout masks
//! (`dropout`) and AdamW's in-place update (`adamw`). The training forwards (`train`) and the
//! LoRA layers (`lora`) use them; they depend on nothing but candle.
//!
//! candle's fused `rms_norm`, `softmax_last_dim` and `rope` have no backward pass, and the same
//! functions written from primitives (`rms_norm_slow`, `softmax`, `rope_slow`) cost one tensor,
//! one allocation, one pass over memory and (on a GPU) one kernel launch per primitive, twice that
//! again in the backward (where candle also accumulates every gradient into a fresh zero tensor).
//! In f32 each op here is one custom op: one pass forward, one pass backward. On the CPU rows are
//! spread over rayon's pool (the one candle's matmul uses) and inputs are read in place; on CUDA
//! (`cuda` feature) each pass is one kernel of `ops/kernels.cu`. In other dtypes (bf16) each
//! falls back to the primitive formula, which is also the reference the tests compare against.
//!
//! Frozen operands (the norm weight, the rotary tables, the targets) are inputs of the ops that get
//! no gradient, so every backend reads them where they are.

use candle_core::{CpuStorage, DType, Layout, Tensor};

pub mod adamw;
pub mod attention;
#[cfg(feature = "cuda")]
mod cuda;
pub mod dropout;
pub mod nll;
pub mod rms_norm;
pub mod rope;
pub mod silu_gate;
pub mod softmax;
#[cfg(test)]
mod tests;

pub use attention::causal_attention;
pub use dropout::dropout_mask;
pub use nll::nll;
pub use rms_norm::rms_norm;
pub use rope::rope;
pub use silu_gate::silu_mul;
pub use softmax::causal_softmax;

/// Rows handed to one rayon task at least: small rows (a 64-wide head) are not worth a task each.
const MIN_ROWS_PER_TASK: usize = 16;

/// Elements handed to one rayon task at least.
const MIN_ELEMS_PER_TASK: usize = 4096;

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
