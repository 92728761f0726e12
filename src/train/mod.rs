//! `vlmtest-train`: LoRA fine-tuning on a suite's rows, judged with vlmtest's scorers before,
//! during and after training.
//!
//! The stages, in the order a run moves: `config` resolves defaults, a preset, `train.toml` and
//! flags; `data` turns `Case`s into token ids with a loss mask on the assistant answer, and
//! `batch` groups them by length; `llama` is the differentiable SmolLM2 forward and `qwen` the
//! Qwen3-VL one (both behind the `TrainableModel` trait in `model`; `frozen` is their
//! weight-gradient-free matmul); `optim` and `schedule` are
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
pub mod frozen;
pub mod llama;
pub mod model;
pub mod optim;
pub mod qwen;
pub mod run;
pub mod schedule;

use std::path::PathBuf;

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
