//! Checkpoints: the adapter (PEFT format), the optimizer moments and the trainer's position, so an
//! interrupted run resumes where it stopped and reproduces the uninterrupted run.
//!
//! Layout under the run folder: `checkpoints/last/` (replaced atomically at each save),
//! `best/` (the adapter with the best evaluation so far), `adapter/` (the final adapter).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::TrainError;
use crate::lora::{AdapterConfig, LoraAdapter, LoraWeights};

pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "trainer_state.json";

/// Where the trainer is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// The epoch in progress (0-based).
    pub epoch: usize,
    /// Optimizer steps (groups of `grad_accum` batches) done within `epoch`.
    pub group_in_epoch: usize,
    pub best_metric: Option<f64>,
    pub best_step: Option<usize>,
    /// Evaluations in a row without improvement.
    pub bad_evals: usize,
    pub stopped_early: bool,
    /// (step, mean loss per target token) of every step.
    pub losses: Vec<(usize, f32)>,
    pub tokens_seen: usize,
    pub train_seconds: f64,
}

/// The trained variables, by name (`<module>.lora_A.weight`), sorted.
pub fn named_vars(varmap: &VarMap) -> BTreeMap<String, Var> {
    match varmap.data().lock() {
        Ok(d) => d.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(p) => p
            .into_inner()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// The adapter held by `varmap`'s current values.
pub fn adapter_from_vars(
    config: &AdapterConfig,
    vars: &BTreeMap<String, Var>,
) -> Result<LoraAdapter, TrainError> {
    let mut modules = BTreeMap::new();
    for (name, var) in vars {
        if let Some(m) = name.strip_suffix(".lora_A.weight") {
            let b = vars
                .get(&format!("{m}.lora_B.weight"))
                .ok_or_else(|| TrainError::Resume {
                    path: PathBuf::from(name),
                    reason: "lora_A without lora_B".into(),
                })?;
            modules.insert(
                m.to_owned(),
                LoraWeights {
                    a: var.as_tensor().detach().copy()?,
                    b: b.as_tensor().detach().copy()?,
                },
            );
        }
    }
    Ok(LoraAdapter {
        config: config.clone(),
        modules,
        saved_params: BTreeMap::new(),
    })
}

/// Sets the variables to an adapter's tensors (resume, or restoring the best adapter).
pub fn load_into_vars(
    adapter: &LoraAdapter,
    vars: &BTreeMap<String, Var>,
    dir: &Path,
) -> Result<(), TrainError> {
    for (name, var) in vars {
        let err = |reason: String| TrainError::Resume {
            path: dir.to_owned(),
            reason,
        };
        let (m, is_a) = match name.strip_suffix(".lora_A.weight") {
            Some(m) => (m, true),
            None => (name.strip_suffix(".lora_B.weight").unwrap_or(name), false),
        };
        let w = adapter
            .modules
            .get(m)
            .ok_or_else(|| err(format!("the saved adapter has no module `{m}`")))?;
        let t = if is_a { &w.a } else { &w.b };
        if t.dims() != var.dims() {
            return Err(err(format!(
                "`{name}` is {:?} there but {:?} here",
                t.dims(),
                var.dims()
            )));
        }
        var.set(&t.to_device(var.device())?)?;
    }
    Ok(())
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| TrainError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(path, text + "\n").map_err(TrainError::io(path))
}

/// Writes JSON (pretty), creating the parent folder.
pub fn save_json<T: Serialize>(path: &Path, value: &T) -> Result<(), TrainError> {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).map_err(TrainError::io(p))?;
    }
    write_json(path, value)
}

/// Saves `checkpoints/last` atomically: written beside it, then renamed over it.
pub fn save_last(
    run_dir: &Path,
    adapter: &LoraAdapter,
    opt: &AdamW,
    state: &TrainerState,
) -> Result<(), TrainError> {
    let root = run_dir.join("checkpoints");
    let tmp = root.join("last.tmp");
    let last = root.join("last");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(TrainError::io(&tmp))?;
    }
    adapter.save(&tmp)?;
    opt.save(&tmp.join(OPTIMIZER_FILE))?;
    write_json(&tmp.join(STATE_FILE), state)?;
    if last.exists() {
        std::fs::remove_dir_all(&last).map_err(TrainError::io(&last))?;
    }
    std::fs::rename(&tmp, &last).map_err(TrainError::io(&last))
}

/// The last checkpoint, if the run folder has one.
pub fn load_last(
    run_dir: &Path,
) -> Result<Option<(LoraAdapter, PathBuf, TrainerState)>, TrainError> {
    let last = run_dir.join("checkpoints").join("last");
    if !last.join(STATE_FILE).is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(last.join(STATE_FILE))
        .map_err(TrainError::io(last.join(STATE_FILE)))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|e| TrainError::Resume {
        path: last.join(STATE_FILE),
        reason: e.to_string(),
    })?;
    let adapter = LoraAdapter::load(&last, &candle_core::Device::Cpu)?;
    Ok(Some((adapter, last.join(OPTIMIZER_FILE), state)))
}

/// Writes merged weights (HF names) as `dir/model.safetensors`.
pub fn save_merged(dir: &Path, weights: &BTreeMap<String, Tensor>) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(TrainError::io(dir))?;
    let t: HashMap<String, Tensor> = weights
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(candle_core::safetensors::save(
        &t,
        dir.join("model.safetensors"),
    )?)
}
