//! Opening a CUDA device the way vlmtest uses it (without the `cuda` feature, candle's error).
//!
//! Two cudarc defaults cost host time on every one of the thousands of tensors a training step
//! allocates, for nothing in a program that issues its work on one stream:
//! - event tracking: each allocation creates (and each free destroys) two CUDA events, which
//!   cudarc only reads once a context has a second stream; candle's device never makes one.
//! - the stream-ordered memory pool's release threshold of 0: at every synchronisation (each step
//!   reads its loss) the driver hands freed memory back to the OS and the next step maps it again.
//!
//! `open` turns both off (events untracked, threshold at the maximum, as PyTorch's caching
//! allocator keeps its blocks). `VLMTEST_CUDA_DEFAULTS=1` keeps cudarc's defaults, to compare.

#[cfg(feature = "cuda")]
use candle_core::cuda_backend::cudarc::driver::{result, sys};
#[cfg(feature = "cuda")]
use candle_core::cuda_backend::WrapErr;
use candle_core::Device;

/// CUDA device `ordinal`, tuned as above.
pub fn open(ordinal: usize) -> candle_core::Result<Device> {
    let dev = Device::new_cuda(ordinal)?;
    #[cfg(feature = "cuda")]
    if !crate::config::env::cuda_defaults() {
        if let Device::Cuda(c) = &dev {
            tune(c)?;
        }
    }
    Ok(dev)
}

#[cfg(feature = "cuda")]
fn tune(dev: &candle_core::CudaDevice) -> candle_core::Result<()> {
    // SAFETY: the events are only read when the context runs several streams, and candle's
    // device issues all its work on one; buffers allocated before this call keep theirs.
    unsafe { dev.disable_event_tracking() };
    let stream = dev.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread().w()?;
    let mut threshold: u64 = u64::MAX;
    // SAFETY: `cu_device` is the context's own device; the release threshold attribute takes a
    // pointer to a cuuint64_t, which `threshold` is.
    unsafe {
        let pool = result::device::get_default_mem_pool(ctx.cu_device()).w()?;
        result::mem_pool::set_attribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .w()?;
    }
    Ok(())
}
