//! LoRA adapters in PEFT's on-disk format, and the LoRA linear layer that applies them.
//!
//! `config` reads and writes `adapter_config.json` with PEFT's field names; `adapter` reads and
//! writes `adapter_model.safetensors` with PEFT's tensor names
//! (`base_model.model.<module>.lora_A.weight`) and checks an adapter against the base model it is
//! loaded onto; `linear` is a `candle_nn::Linear` with a low-rank update, trainable (its A and B
//! live in their own `VarMap`) or frozen, applied unmerged (`W·x + s·B·A·x`) or merged
//! (`(W + s·B·A)·x`). For training, `frozen` multiplies by a frozen weight without its gradient and
//! `fused_linear` runs a whole layer (frozen product, cast, low-rank branch, dropout) as one
//! differentiable op.

pub mod adapter;
pub mod config;
pub mod frozen;
pub mod fused_linear;
pub mod linear;

use std::path::PathBuf;

pub use adapter::{LoraAdapter, LoraWeights, ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE};
pub use config::{AdapterConfig, TargetModules};
pub use linear::{LoraLinear, LoraRng};

/// Errors from reading, writing, checking or applying a LoRA adapter.
#[derive(Debug, thiserror::Error)]
pub enum LoraError {
    #[error("failed to read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to parse {path}, line {line}, column {column}: {reason}")]
    ConfigSyntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("invalid adapter config field `{field}`: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    #[error("failed to read safetensors file {path}: {reason}")]
    Weights { path: PathBuf, reason: String },
    #[error("{path}: tensor `{key}` is not a LoRA tensor (expected `base_model.model.<module>.lora_A.weight` or `.lora_B.weight`) nor a module listed in modules_to_save")]
    UnexpectedTensor { path: PathBuf, key: String },
    #[error("adapter module `{module}` has {present} but no {missing}")]
    IncompletePair {
        module: String,
        present: &'static str,
        missing: &'static str,
    },
    #[error("adapter module `{module}`: lora_A is {a:?} and lora_B is {b:?}, expected (r, in) and (out, r) with the same r")]
    RankMismatch {
        module: String,
        a: Vec<usize>,
        b: Vec<usize>,
    },
    #[error("adapter module `{module}` does not exist in the base model (base linear layers look like `{example}`)")]
    UnknownModule { module: String, example: String },
    #[error("adapter module `{module}`: base weight is {base:?} (out, in) but the adapter gives {adapter:?}")]
    ShapeMismatch {
        module: String,
        base: (usize, usize),
        adapter: (usize, usize),
    },
    #[error("target modules {targets} match no linear layer of the base model (its layers end with: {available})")]
    NoTargetMatched { targets: String, available: String },
    #[error("the adapter holds no LoRA tensors")]
    Empty,
    #[error("tensor error: {0}")]
    Tensor(#[from] candle_core::Error),
}

/// Test helper: asserts that `varmap` holds `expected` variables and that each got a non-zero
/// gradient in `grads` (every LoRA A and B matrix takes part in the loss).
#[cfg(test)]
pub(crate) fn assert_every_variable_has_a_gradient(
    varmap: &candle_nn::VarMap,
    grads: &candle_core::backprop::GradStore,
    expected: usize,
) {
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.len(), expected);
    for (name, var) in data.iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name} got no gradient"));
        let n = g
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(n > 0.0, "{name} got a zero gradient");
    }
}
