//! `vlmtest-train`: LoRA fine-tuning on a suite's rows, judged with vlmtest's scorers before,
//! during and after training.
//!
//! The stages, in the order a run moves: `config` resolves defaults, a preset, `train.toml` and
//! flags; `data` turns `Case`s into token ids with a loss mask on the assistant answer, and
//! `batch` groups them by length; `model` trains SmolLM2 on `model::llama_f32` and `qwen` is the
//! Qwen3-VL forward (both behind the `TrainableModel` trait in `model`; `crate::ops` holds their
//! differentiable RMSNorm, causal softmax, rotary, SiLU-gate and cross-entropy kernels); `optim` and `schedule` are
//! AdamW with clipping and the learning-rate curve; `eval` generates on the validation rows and
//! scores them; `checkpoint` saves and resumes; `run` drives the loop and writes
//! `run_metadata.json`; `cli` holds the flags.

pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod eval;
pub mod model;
pub mod optim;
pub mod qwen;
pub mod run;
pub mod schedule;

use std::path::PathBuf;

/// Asks glibc's malloc to keep freed memory for reuse. A training step allocates and frees
/// thousands of megabyte-sized tensors; by default each above 128 KiB-32 MiB is an `mmap` of its
/// own, handed back on free, so the next faults in fresh zeroed pages (4-5 % of a SmolLM2 step's
/// wall time, half its system time, measured). Raising the mmap and trim thresholds and the top
/// pad keeps them on the heap; peak memory grows by about 3 %. A no-op on other platforms.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning parameters; it is called before threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

use crate::lora::LoraError;
use crate::model::ModelError;

/// Errors from a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("failed to parse config {path}: {reason}")]
    ConfigSyntax { path: PathBuf, reason: String },
    #[error("invalid training setting `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
    #[error("failed to load base model {path}: {reason}")]
    Base { path: PathBuf, reason: String },
    #[error("{origin}: case {case}: {reason}")]
    Data {
        origin: String,
        case: String,
        reason: String,
    },
    #[error("no training rows: {0}")]
    NoData(String),
    #[error("failed to read or write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot resume from {path}: {reason}")]
    Resume { path: PathBuf, reason: String },
    #[error("the loss became {0} at step {1}; lower the learning rate")]
    Diverged(f32, usize),
    #[error(transparent)]
    Lora(#[from] LoraError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.into();
        move |source| TrainError::Io { path, source }
    }
}
