//! Grouped-query causal attention built on `softmax::causal_softmax`, without copying keys and
//! values per query head.

use candle_core::Tensor;

use super::softmax::causal_softmax;

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
