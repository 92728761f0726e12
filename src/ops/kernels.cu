// CUDA kernels of the fused training ops in fused.rs (f32, contiguous inputs). Each kernel is the
// same per-row formula as the CPU code beside it; rows go to one warp each (the reductions are warp
// shuffles), except the cross-entropy rows, whose vocabulary-wide reductions take a whole block.
// build.rs compiles this file to PTX when the `cuda` feature is on.

#include <stdint.h>

#define WARP 32
#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = WARP / 2; o > 0; o /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// The warp's row, or -1 past the last one (the whole warp leaves together).
__device__ __forceinline__ long long warp_row(long long rows) {
    long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / WARP;
    return row < rows ? row : -1;
}

// ---- RMSNorm with a frozen weight -------------------------------------------------------------

extern "C" __global__ void rms_norm_f32(const float* x, const float* w, float* y, long long rows,
                                        int d, float eps) {
    long long row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % WARP;
    const float* xr = x + row * d;
    float ss = 0.f;
    for (int i = lane; i < d; i += WARP) ss += xr[i] * xr[i];
    float r = rsqrtf(warp_sum(ss) / d + eps);
    float* yr = y + row * d;
    for (int i = lane; i < d; i += WARP) yr[i] = xr[i] * r * w[i];
}

// dx = r·w·g − x·r³·mean(w·g·x)
extern "C" __global__ void rms_norm_grad_f32(const float* x, const float* w, const float* g,
                                             float* dx, long long rows, int d, float eps) {
    long long row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % WARP;
    const float* xr = x + row * d;
    const float* gr = g + row * d;
    float ss = 0.f, dot = 0.f;
    for (int i = lane; i < d; i += WARP) {
        ss += xr[i] * xr[i];
        dot += xr[i] * gr[i] * w[i];
    }
    ss = warp_sum(ss);
    dot = warp_sum(dot);
    float r = rsqrtf(ss / d + eps);
    float c = r * r * r * dot / d;
    float* o = dx + row * d;
    for (int i = lane; i < d; i += WARP) o[i] = r * w[i] * gr[i] - xr[i] * c;
}

// ---- Causal softmax of (…, t, t) scores -------------------------------------------------------

extern "C" __global__ void causal_softmax_f32(const float* x, float* y, long long rows, int t,
                                              float scale) {
    long long row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % WARP;
    int n = (int)(row % t) + 1;
    const float* xr = x + row * t;
    float* yr = y + row * t;
    float m = -INFINITY;
    for (int i = lane; i < n; i += WARP) m = fmaxf(m, xr[i]);
    m = warp_max(m) * scale;
    float s = 0.f;
    for (int i = lane; i < n; i += WARP) {
        float e = __expf(xr[i] * scale - m);
        yr[i] = e;
        s += e;
    }
    float inv = 1.f / warp_sum(s);
    // Each lane rescales the entries it wrote itself, so no barrier is needed.
    for (int i = lane; i < t; i += WARP) yr[i] = i < n ? yr[i] * inv : 0.f;
}

// dx = scale·p·(g − Σ p·g) over the visible keys, 0 elsewhere.
extern "C" __global__ void causal_softmax_grad_f32(const float* p, const float* g, float* dx,
                                                   long long rows, int t, float scale) {
    long long row = warp_row(rows);
    if (row < 0) return;
    int lane = threadIdx.x % WARP;
    int n = (int)(row % t) + 1;
    const float* pr = p + row * t;
    const float* gr = g + row * t;
    float dot = 0.f;
    for (int i = lane; i < n; i += WARP) dot += pr[i] * gr[i];
    dot = warp_sum(dot);
    float* o = dx + row * t;
    for (int i = lane; i < t; i += WARP) o[i] = i < n ? scale * pr[i] * (gr[i] - dot) : 0.f;
}

// ---- Rotary embedding, half-rotation layout ---------------------------------------------------

// x, y: (b, h, t, 2·half); cos, sin: (cb, t, half) with cb 1 or b; sign −1 rotates back.
extern "C" __global__ void rope_f32(const float* x, const float* cos_t, const float* sin_t,
                                    float* y, long long pairs, int h, int t, int half,
                                    int per_batch, float sign) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= pairs) return;
    int i = (int)(k % half);
    long long row = k / half;  // (b·h + head)·t + pos
    int pos = (int)(row % t);
    long long bi = per_batch ? row / ((long long)h * t) : 0;
    long long at = (bi * t + pos) * half + i;
    float c = cos_t[at], s = sign * sin_t[at];
    const float* xr = x + row * 2 * half;
    float* yr = y + row * 2 * half;
    float x1 = xr[i], x2 = xr[i + half];
    yr[i] = x1 * c - x2 * s;
    yr[i + half] = x2 * c + x1 * s;
}

// ---- silu(gate) · up --------------------------------------------------------------------------

__device__ __forceinline__ float sigmoidf(float v) { return 1.f / (1.f + __expf(-v)); }

extern "C" __global__ void silu_mul_f32(const float* g, const float* u, float* y, long long n) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    float gv = g[k];
    y[k] = gv * sigmoidf(gv) * u[k];
}

// out = [∂L/∂gate ; ∂L/∂up], each n long.
extern "C" __global__ void silu_mul_grad_f32(const float* g, const float* u, const float* dy,
                                             float* out, long long n) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    float gv = g[k], s = sigmoidf(gv), d = dy[k];
    out[k] = d * u[k] * s * (1.f + gv * (1.f - s));
    out[n + k] = d * gv * s;
}

// ---- Cross-entropy per row --------------------------------------------------------------------

// Block-wide reductions for one row of the vocabulary; `sh` holds one float per warp.
__device__ float block_max(float v, float* sh) {
    int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_max(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    v = warp_max(v);
    __syncthreads();
    return v;
}

__device__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x % WARP, wid = threadIdx.x / WARP, nw = blockDim.x / WARP;
    v = warp_sum(v);
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.f;
    v = warp_sum(v);
    __syncthreads();
    return v;
}

__device__ float row_log_sum_exp(const float* xr, int v, float* sh) {
    float m = -INFINITY;
    for (int i = threadIdx.x; i < v; i += blockDim.x) m = fmaxf(m, xr[i]);
    m = block_max(m, sh);
    float s = 0.f;
    for (int i = threadIdx.x; i < v; i += blockDim.x) s += expf(xr[i] - m);
    return m + logf(block_sum(s, sh));
}

// One block per row: nll[row] = logsumexp(x[row]) − x[row, target].
extern "C" __global__ void nll_f32(const float* x, const uint32_t* targets, float* nll, int v) {
    __shared__ float sh[WARP];
    const float* xr = x + (long long)blockIdx.x * v;
    float lse = row_log_sum_exp(xr, v, sh);
    uint32_t t = targets[blockIdx.x];
    // An out-of-vocabulary target (the CPU path reports it) gives NaN, not a stray read.
    if (threadIdx.x == 0) nll[blockIdx.x] = t < (uint32_t)v ? lse - xr[t] : NAN;
}

// dx = g·(softmax(x) − onehot(target)), one block per row.
extern "C" __global__ void nll_grad_f32(const float* x, const uint32_t* targets, const float* g,
                                        float* dx, int v) {
    __shared__ float sh[WARP];
    long long base = (long long)blockIdx.x * v;
    const float* xr = x + base;
    float lse = row_log_sum_exp(xr, v, sh);
    float gr = g[blockIdx.x];
    uint32_t t = targets[blockIdx.x];
    for (int i = threadIdx.x; i < v; i += blockDim.x)
        dx[base + i] = gr * (expf(xr[i] - lse) - (i == (int)t ? 1.f : 0.f));
}

// ---- AdamW, in place --------------------------------------------------------------------------

// mv = [m ; v] (2n): m ← β1·m + (1−β1)·g', v ← β2·v + (1−β2)·g'² with g' = gscale·g.
extern "C" __global__ void adamw_moments_f32(const float* g, float* mv, long long n, float b1,
                                             float b2, float gscale) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    float gv = g[k] * gscale;
    mv[k] = b1 * mv[k] + (1.f - b1) * gv;
    mv[n + k] = b2 * mv[n + k] + (1.f - b2) * gv * gv;
}

// p ← p·decay − lr·(m/bc1) / (sqrt(v/bc2) + eps), decay = 1 − lr·weight_decay.
extern "C" __global__ void adamw_apply_f32(const float* mv, float* p, long long n, float lr,
                                           float decay, float bc1, float bc2, float eps) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    float m_hat = mv[k] / bc1, v_hat = mv[n + k] / bc2;
    p[k] = p[k] * decay - lr * m_hat / (sqrtf(v_hat) + eps);
}

// ---- Dropout masks ----------------------------------------------------------------------------

// splitmix64's output function; element k of a mask hashes seed + (k+1)·golden, as fused.rs does.
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

extern "C" __global__ void dropout_mask_f32(float* out, long long n, unsigned long long seed,
                                            float p, float keep) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= n) return;
    unsigned long long z = seed + (unsigned long long)(k + 1) * 0x9E3779B97F4A7C15ull;
    float u = (float)(mix64(z) >> 40) * (1.0f / 16777216.0f);
    out[k] = u < p ? 0.f : keep;
}
