//! Launches of the fused ops' CUDA kernels (`kernels.cu`, compiled to PTX by build.rs). Each
//! function takes views of contiguous f32 inputs (u32 targets) whose shapes the caller checked and
//! returns a fresh output buffer as candle storage (AdamW's two kernels update in place). Every
//! kernel's parameters are its inputs, then its output, then its scalars.

use candle_core::cuda_backend::cudarc::driver::{
    CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::{CudaDType, WrapErr};
use candle_core::{CudaDevice, CudaStorage, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused_kernels.ptx"));
const MODULE: &str = "vlmtest_fused";

/// Threads per block of the row kernels (eight rows, one warp each).
const ROW_BLOCK: u32 = 256;
/// Threads per block of the elementwise kernels and of the cross-entropy rows.
const WIDE_BLOCK: u32 = 1024;

/// The contiguous part of `s` that `l` covers.
pub fn view<'a, T: CudaDType + DeviceRepr>(
    s: &'a CudaStorage,
    l: &Layout,
    op: &str,
) -> Result<CudaView<'a, T>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the input must be contiguous")
    };
    Ok(s.as_cuda_slice::<T>()?.slice(a..b))
}

fn grid(units: usize, per_block: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (units.div_ceil(per_block as usize) as u32, 1, 1),
        block_dim: (per_block, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One warp per row.
fn warp_rows(rows: usize) -> LaunchConfig {
    grid(rows * 32, ROW_BLOCK)
}

/// One thread per element.
fn elems(n: usize) -> LaunchConfig {
    grid(n, WIDE_BLOCK)
}

/// One block per row.
fn block_rows(rows: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows as u32, 1, 1),
        block_dim: (WIDE_BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Allocates `n` f32 outputs, launches kernel `name` over `cfg` with the inputs, the output and
/// the scalars (skipped when `n` is 0: an empty grid is a launch error), and wraps the output.
macro_rules! launch {
    ($dev:expr, $name:literal, $n:expr, $cfg:expr, [$($input:expr),*], [$($scalar:expr),*]) => {{
        let dev: &CudaDevice = $dev;
        let n: usize = $n;
        // SAFETY: the kernel writes every one of the n elements.
        let mut out = unsafe { dev.alloc::<f32>(n)? };
        if n > 0 {
            let func = dev.get_or_load_custom_func($name, MODULE, PTX)?;
            let mut args = func.builder();
            $( args.arg($input); )*
            args.arg(&mut out);
            $( let scalar = $scalar; args.arg(&scalar); )*
            // SAFETY: the arguments follow the kernel's signature in kernels.cu.
            unsafe { args.launch($cfg) }.w()?;
        }
        Ok(CudaStorage::wrap_cuda_slice(out, dev.clone()))
    }};
}

/// `(rows, width)` of a row-wise op.
#[derive(Clone, Copy)]
pub struct Rows {
    pub rows: usize,
    pub width: usize,
}

impl Rows {
    fn n(self) -> usize {
        self.rows * self.width
    }
}

pub fn rms_norm(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    w: &CudaView<f32>,
    r: Rows,
    eps: f32,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "rms_norm_f32",
        r.n(),
        warp_rows(r.rows),
        [x, w],
        [r.rows as i64, r.width as i32, eps]
    )
}

pub fn rms_norm_grad(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    w: &CudaView<f32>,
    g: &CudaView<f32>,
    r: Rows,
    eps: f32,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "rms_norm_grad_f32",
        r.n(),
        warp_rows(r.rows),
        [x, w, g],
        [r.rows as i64, r.width as i32, eps]
    )
}

pub fn causal_softmax(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    r: Rows,
    scale: f32,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "causal_softmax_f32",
        r.n(),
        warp_rows(r.rows),
        [x],
        [r.rows as i64, r.width as i32, scale]
    )
}

pub fn causal_softmax_grad(
    dev: &CudaDevice,
    p: &CudaView<f32>,
    g: &CudaView<f32>,
    r: Rows,
    scale: f32,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "causal_softmax_grad_f32",
        r.n(),
        warp_rows(r.rows),
        [p, g],
        [r.rows as i64, r.width as i32, scale]
    )
}

/// `x` is `(b, h, t, 2·half)`, the tables `(per_batch ? b : 1, t, half)`.
#[allow(clippy::too_many_arguments)]
pub fn rope(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    cos: &CudaView<f32>,
    sin: &CudaView<f32>,
    (b, h, t, half): (usize, usize, usize, usize),
    per_batch: bool,
    sign: f32,
) -> Result<CudaStorage> {
    let pairs = b * h * t * half;
    launch!(
        dev,
        "rope_f32",
        2 * pairs,
        elems(pairs),
        [x, cos, sin],
        [
            pairs as i64,
            h as i32,
            t as i32,
            half as i32,
            i32::from(per_batch),
            sign
        ]
    )
}

pub fn silu_mul(
    dev: &CudaDevice,
    g: &CudaView<f32>,
    u: &CudaView<f32>,
    n: usize,
) -> Result<CudaStorage> {
    launch!(dev, "silu_mul_f32", n, elems(n), [g, u], [n as i64])
}

/// `[∂L/∂gate ; ∂L/∂up]`, `2n` values.
pub fn silu_mul_grad(
    dev: &CudaDevice,
    g: &CudaView<f32>,
    u: &CudaView<f32>,
    dy: &CudaView<f32>,
    n: usize,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "silu_mul_grad_f32",
        2 * n,
        elems(n),
        [g, u, dy],
        [n as i64]
    )
}

pub fn nll(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    targets: &CudaView<u32>,
    r: Rows,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "nll_f32",
        r.rows,
        block_rows(r.rows),
        [x, targets],
        [r.width as i32]
    )
}

pub fn nll_grad(
    dev: &CudaDevice,
    x: &CudaView<f32>,
    targets: &CudaView<u32>,
    g: &CudaView<f32>,
    r: Rows,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "nll_grad_f32",
        r.n(),
        block_rows(r.rows),
        [x, targets, g],
        [r.width as i32]
    )
}

/// The mutable contiguous part of `s` that `l` covers.
fn view_mut<'a>(s: &'a mut CudaStorage, l: &Layout, op: &str) -> Result<CudaViewMut<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{op}: the updated tensor must be contiguous")
    };
    Ok(s.as_cuda_slice_mut::<f32>()?.slice_mut(a..b))
}

/// Launches an in-place kernel over `n` elements: `(input, in/out, n, scalars…)`.
macro_rules! launch_in_place {
    ($dev:expr, $name:literal, $n:expr, [$input:expr, $inout:expr], [$($scalar:expr),*]) => {{
        let dev: &CudaDevice = $dev;
        let n: usize = $n;
        if n > 0 {
            let func = dev.get_or_load_custom_func($name, MODULE, PTX)?;
            let mut args = func.builder();
            args.arg($input);
            args.arg($inout);
            let len = n as i64;
            args.arg(&len);
            $( let scalar = $scalar; args.arg(&scalar); )*
            // SAFETY: the arguments follow the kernel's signature in kernels.cu.
            unsafe { args.launch(elems(n)) }.w()?;
        }
        Ok(())
    }};
}

/// AdamW's moment update in place on `mv = [m ; v]` (`2n` values) from the gradient.
pub fn adamw_moments(
    mv: &mut CudaStorage,
    lmv: &Layout,
    g: &CudaStorage,
    lg: &Layout,
    (b1, b2, gscale): (f32, f32, f32),
) -> Result<()> {
    let dev = mv.device.clone();
    let n = lg.shape().elem_count();
    let g = view::<f32>(g, lg, "adamw-moments")?;
    let mut mv = view_mut(mv, lmv, "adamw-moments")?;
    launch_in_place!(
        &dev,
        "adamw_moments_f32",
        n,
        [&g, &mut mv],
        [b1, b2, gscale]
    )
}

/// AdamW's parameter update in place on `p` from the moments.
pub fn adamw_apply(
    p: &mut CudaStorage,
    lp: &Layout,
    mv: &CudaStorage,
    lmv: &Layout,
    (lr, decay, bc1, bc2, eps): (f32, f32, f32, f32, f32),
) -> Result<()> {
    let dev = p.device.clone();
    let n = lp.shape().elem_count();
    let mv = view::<f32>(mv, lmv, "adamw-apply")?;
    let mut p = view_mut(p, lp, "adamw-apply")?;
    launch_in_place!(
        &dev,
        "adamw_apply_f32",
        n,
        [&mv, &mut p],
        [lr, decay, bc1, bc2, eps]
    )
}

/// `n` dropout-mask values of `seed` (the formula of `fused::dropout_mask`).
pub fn dropout_mask(
    dev: &CudaDevice,
    n: usize,
    seed: u64,
    p: f32,
    keep: f32,
) -> Result<CudaStorage> {
    launch!(
        dev,
        "dropout_mask_f32",
        n,
        elems(n),
        [],
        [n as i64, seed, p, keep]
    )
}
