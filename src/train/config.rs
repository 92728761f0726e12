//! Training settings: defaults, then a named preset, then `train.toml`, then command-line flags.
//!
//! `TrainArgs` is both the TOML table and the flag set (every key has a `--flag` of the same name
//! with `-` for `_`), so the two cannot drift apart. `TrainConfig` is the validated result.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::lora::{AdapterConfig, TargetModules};

/// Learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

/// Where training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    Cpu,
    /// CUDA device 0 (a build with the `cuda` feature).
    Cuda,
}

/// The dtype of a Qwen3-VL base's frozen weights during training (LoRA pairs, norms and the
/// residual stream stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    F32,
    Bf16,
}

impl WeightDtype {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            WeightDtype::F32 => candle_core::DType::F32,
            WeightDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}

/// The device for `kind`: the CPU, CUDA device 0, or (none given) CUDA when the build has it and
/// a GPU is present, else the CPU.
pub fn device_for(kind: Option<DeviceKind>) -> Result<candle_core::Device, TrainError> {
    match kind {
        None => Ok(crate::model::spec::default_device()),
        Some(DeviceKind::Cpu) => Ok(candle_core::Device::Cpu),
        Some(DeviceKind::Cuda) => {
            crate::model::cuda_device::open(0).map_err(|e| TrainError::Config {
                field: "device",
                reason: format!(
                    "no CUDA device ({e}); build with `--features cuda` on a machine with a GPU, or pass --device cpu"
                ),
            })
        }
    }
}

/// Every setting, all optional: one TOML table and one flag set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainArgs {
    /// Named preset applied before the file and flags: `val_fast` or `dev`.
    #[arg(long)]
    pub preset: Option<String>,
    /// Base model: `smollm2` (the default GGUF) or a path to a Llama-architecture .gguf file.
    #[arg(long)]
    pub base: Option<String>,
    /// Training rows: `cases/*.jsonl` files (the reference answer is the training target).
    #[arg(long, value_delimiter = ',')]
    pub train: Option<Vec<PathBuf>>,
    /// Validation rows, evaluated with generation before, during and after training (scored
    /// with the rows' own expectations plus exact match and token F1).
    #[arg(long, value_delimiter = ',')]
    pub val: Option<Vec<PathBuf>>,
    /// Validate on this suite of the project (`project`'s vlmtest.toml), scored exactly as
    /// `vlmtest run` scores it: its prompt, scorers, task metrics and judge. Instead of `val`.
    #[arg(long)]
    pub suite: Option<String>,
    /// The vlmtest project holding `suite` (default: the current directory).
    #[arg(long)]
    pub project: Option<PathBuf>,
    /// Run folder: adapter, checkpoints, summaries, run_metadata.json.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    #[arg(long)]
    pub rank: Option<usize>,
    #[arg(long)]
    pub alpha: Option<f64>,
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Module-name suffixes (`q_proj,v_proj`), or one regex / `all-linear` as a single entry.
    #[arg(long, value_delimiter = ',')]
    pub target_modules: Option<Vec<String>>,
    /// Modules trained in full and saved with the adapter (PEFT's `modules_to_save`).
    #[arg(long, value_delimiter = ',')]
    pub modules_to_save: Option<Vec<String>>,
    #[arg(long)]
    pub use_rslora: Option<bool>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub weight_decay: Option<f64>,
    #[arg(long, value_enum)]
    pub schedule: Option<Schedule>,
    #[arg(long)]
    pub warmup_ratio: Option<f64>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop after this many optimizer steps (0: run all epochs).
    #[arg(long)]
    pub max_steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub grad_accum: Option<usize>,
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    #[arg(long)]
    pub max_grad_norm: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Use at most this many training rows (0: all).
    #[arg(long)]
    pub max_train_samples: Option<usize>,
    /// Evaluate at most this many validation rows (0: all).
    #[arg(long)]
    pub eval_max_samples: Option<usize>,
    #[arg(long)]
    pub eval_max_new_tokens: Option<usize>,
    /// Evaluate before training (the "before" bench).
    #[arg(long)]
    pub eval_before: Option<bool>,
    /// Evaluate after every epoch (early stopping and best checkpoint).
    #[arg(long)]
    pub eval_each_epoch: Option<bool>,
    /// Also evaluate every this many optimizer steps (0: only at epoch ends).
    #[arg(long)]
    pub eval_every: Option<usize>,
    /// The best-checkpoint and early-stopping metric: any metric of the validation report, by
    /// its gate name (`pass_rate`, `score.token_f1`, `spam.macro_f1`, `deals.f1`, `price.smape`),
    /// or `val_loss`. Its direction is the report's own (SMAPE and losses lower is better).
    #[arg(long)]
    pub metric: Option<String>,
    /// Stop after this many evaluations without improvement (0: never).
    #[arg(long)]
    pub patience: Option<usize>,
    /// The least change of `metric` that counts as an improvement.
    #[arg(long)]
    pub min_delta: Option<f64>,
    /// Save a checkpoint every this many steps (0: at epoch ends only).
    #[arg(long)]
    pub save_every: Option<usize>,
    /// Resume from the last checkpoint in output_dir when there is one.
    #[arg(long)]
    pub resume: Option<bool>,
    /// Also write the merged f32 weights (merged/model.safetensors, HF names).
    #[arg(long)]
    pub save_merged: Option<bool>,
    /// `cpu` or `cuda` (default: cuda when built with it and a GPU is present, else cpu).
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,
    /// Frozen weight dtype of a Qwen3-VL base: `f32` or `bf16` (default: f32 on the CPU, bf16
    /// on CUDA). GGUF bases always train in f32.
    #[arg(long, value_enum)]
    pub dtype: Option<WeightDtype>,
}

macro_rules! overlay {
    ($dst:expr, $src:expr, $($f:ident),* $(,)?) => {
        $( if $src.$f.is_some() { $dst.$f = $src.$f.clone(); } )*
    };
}

impl TrainArgs {
    /// Fields set in `other` replace those here.
    pub fn overlay(&mut self, other: &TrainArgs) {
        overlay!(
            self,
            other,
            preset,
            base,
            train,
            val,
            suite,
            project,
            output_dir,
            rank,
            alpha,
            dropout,
            target_modules,
            modules_to_save,
            use_rslora,
            learning_rate,
            weight_decay,
            schedule,
            warmup_ratio,
            epochs,
            max_steps,
            batch_size,
            grad_accum,
            max_seq_len,
            max_grad_norm,
            seed,
            max_train_samples,
            eval_max_samples,
            eval_max_new_tokens,
            eval_before,
            eval_each_epoch,
            eval_every,
            metric,
            patience,
            min_delta,
            save_every,
            resume,
            save_merged,
            device,
            dtype,
        );
    }

    /// The named presets (seed 000's `val_fast` sanity run and `dev` run).
    pub fn preset(name: &str) -> Result<TrainArgs, TrainError> {
        match name {
            "val_fast" => Ok(TrainArgs {
                epochs: Some(1),
                max_steps: Some(20),
                max_train_samples: Some(64),
                eval_max_samples: Some(16),
                patience: Some(0),
                ..TrainArgs::default()
            }),
            "dev" => Ok(TrainArgs {
                epochs: Some(3),
                max_steps: Some(0),
                max_train_samples: Some(0),
                eval_max_samples: Some(64),
                patience: Some(2),
                ..TrainArgs::default()
            }),
            other => Err(TrainError::Config {
                field: "preset",
                reason: format!("unknown preset {other:?}; expected \"val_fast\" or \"dev\""),
            }),
        }
    }

    /// Parses `train.toml`; unknown keys are errors naming the key and line.
    pub fn from_toml(text: &str, path: &Path) -> Result<TrainArgs, TrainError> {
        toml::from_str(text).map_err(|e| TrainError::ConfigSyntax {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }
}

/// The resolved, validated settings of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: Option<String>,
    pub base: String,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub suite: Option<String>,
    pub project: PathBuf,
    pub output_dir: PathBuf,
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: Vec<String>,
    pub modules_to_save: Vec<String>,
    pub use_rslora: bool,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    pub warmup_ratio: f64,
    pub epochs: usize,
    pub max_steps: usize,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_seq_len: usize,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub max_train_samples: usize,
    pub eval_max_samples: usize,
    pub eval_max_new_tokens: usize,
    pub eval_before: bool,
    pub eval_each_epoch: bool,
    pub eval_every: usize,
    pub metric: String,
    pub patience: usize,
    pub min_delta: f64,
    pub save_every: usize,
    pub resume: bool,
    pub save_merged: bool,
    /// None: CUDA when available, else the CPU.
    pub device: Option<DeviceKind>,
    /// None: f32 on the CPU, bf16 on CUDA.
    pub dtype: Option<WeightDtype>,
}

impl TrainConfig {
    /// defaults ← preset (from the file or the flags) ← file ← flags, then validation.
    pub fn resolve(file: Option<&Path>, flags: &TrainArgs) -> Result<TrainConfig, TrainError> {
        let from_file = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(TrainError::io(p))?;
                TrainArgs::from_toml(&text, p)?
            }
            None => TrainArgs::default(),
        };
        let preset = flags.preset.clone().or_else(|| from_file.preset.clone());
        let mut args = match &preset {
            Some(name) => TrainArgs::preset(name)?,
            None => TrainArgs::default(),
        };
        args.overlay(&from_file);
        args.overlay(flags);
        args.preset = preset;
        Self::from_args(args)
    }

    /// Fills defaults and validates.
    pub fn from_args(a: TrainArgs) -> Result<TrainConfig, TrainError> {
        let cfg = TrainConfig {
            preset: a.preset,
            base: a.base.unwrap_or_else(|| "smollm2".into()),
            train: a.train.unwrap_or_default(),
            val: a.val.unwrap_or_default(),
            suite: a.suite,
            project: a.project.unwrap_or_else(|| PathBuf::from(".")),
            output_dir: a.output_dir.unwrap_or_else(|| PathBuf::from("runs/lora")),
            rank: a.rank.unwrap_or(16),
            alpha: a.alpha.unwrap_or(32.0),
            dropout: a.dropout.unwrap_or(0.05),
            target_modules: a
                .target_modules
                .unwrap_or_else(|| vec!["q_proj".into(), "v_proj".into()]),
            modules_to_save: a.modules_to_save.unwrap_or_default(),
            use_rslora: a.use_rslora.unwrap_or(false),
            learning_rate: a.learning_rate.unwrap_or(2e-4),
            weight_decay: a.weight_decay.unwrap_or(0.01),
            schedule: a.schedule.unwrap_or(Schedule::Cosine),
            warmup_ratio: a.warmup_ratio.unwrap_or(0.05),
            epochs: a.epochs.unwrap_or(3),
            max_steps: a.max_steps.unwrap_or(0),
            batch_size: a.batch_size.unwrap_or(4),
            grad_accum: a.grad_accum.unwrap_or(1),
            max_seq_len: a.max_seq_len.unwrap_or(256),
            max_grad_norm: a.max_grad_norm.unwrap_or(1.0),
            seed: a.seed.unwrap_or(42),
            max_train_samples: a.max_train_samples.unwrap_or(0),
            eval_max_samples: a.eval_max_samples.unwrap_or(0),
            eval_max_new_tokens: a.eval_max_new_tokens.unwrap_or(64),
            eval_before: a.eval_before.unwrap_or(true),
            eval_each_epoch: a.eval_each_epoch.unwrap_or(true),
            eval_every: a.eval_every.unwrap_or(0),
            metric: a.metric.unwrap_or_else(|| "pass_rate".into()),
            patience: a.patience.unwrap_or(3),
            min_delta: a.min_delta.unwrap_or(0.0),
            save_every: a.save_every.unwrap_or(0),
            resume: a.resume.unwrap_or(true),
            save_merged: a.save_merged.unwrap_or(false),
            device: a.device,
            dtype: a.dtype,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |field, reason: String| Err(TrainError::Config { field, reason });
        if self.train.is_empty() {
            return bad(
                "train",
                "no training files given (`train = [\"cases/x.jsonl\"]` or --train)".into(),
            );
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("{} is not a positive number", self.learning_rate),
            );
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("{} is negative or not a number", self.weight_decay),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} is not in [0, 1)", self.warmup_ratio),
            );
        }
        if self.epochs == 0 && self.max_steps == 0 {
            return bad(
                "epochs",
                "0 epochs and no max_steps: nothing to train".into(),
            );
        }
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("grad_accum", self.grad_accum),
            ("max_seq_len", self.max_seq_len),
            ("eval_max_new_tokens", self.eval_max_new_tokens),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.suite.is_some() && !self.val.is_empty() {
            return bad(
                "suite",
                "set `suite` (a suite of the project) or `val` (row files), not both".into(),
            );
        }
        if let Err(reason) = super::eval::Objective::parse(&self.metric) {
            return bad("metric", reason);
        }
        if !(self.min_delta.is_finite() && self.min_delta >= 0.0) {
            return bad(
                "min_delta",
                format!("{} is negative or not a number", self.min_delta),
            );
        }
        if !(self.max_grad_norm.is_finite() && self.max_grad_norm > 0.0) {
            return bad(
                "max_grad_norm",
                format!("{} is not a positive number", self.max_grad_norm),
            );
        }
        self.adapter_config().validate()?;
        Ok(())
    }

    /// The PEFT config this run trains.
    pub fn adapter_config(&self) -> AdapterConfig {
        let targets = match self.target_modules.as_slice() {
            [one]
                if one == TargetModules::ALL_LINEAR
                    || one.contains(['*', '(', '|', '\\', '^', '$']) =>
            {
                TargetModules::Pattern(one.clone())
            }
            list => TargetModules::List(list.to_vec()),
        };
        let mut c = AdapterConfig::new(self.rank, self.alpha, self.dropout, targets);
        c.use_rslora = self.use_rslora;
        c.modules_to_save =
            (!self.modules_to_save.is_empty()).then(|| self.modules_to_save.clone());
        c
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainArgs,
    }

    #[test]
    fn flags_override_file_which_overrides_preset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.toml");
        std::fs::write(
            &p,
            "preset = \"val_fast\"\ntrain = [\"a.jsonl\"]\nrank = 4\nmax_steps = 7\n",
        )
        .unwrap();
        let flags = Cli::parse_from(["x", "--rank", "8", "--target-modules", "q_proj,k_proj"]).args;
        let c = TrainConfig::resolve(Some(&p), &flags).unwrap();
        assert_eq!(c.rank, 8);
        assert_eq!(c.max_steps, 7);
        assert_eq!(c.eval_max_samples, 16, "from the preset");
        assert_eq!(c.target_modules, vec!["q_proj", "k_proj"]);
        assert_eq!(c.preset.as_deref(), Some("val_fast"));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("train.toml");
        std::fs::write(&p, "train = [\"a.jsonl\"]\nrnak = 4\n").unwrap();
        let err = TrainConfig::resolve(Some(&p), &TrainArgs::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.toml") && err.contains("rnak"), "{err}");
        for (flags, field) in [
            (
                vec!["x", "--train", "a", "--learning-rate=-1"],
                "learning_rate",
            ),
            (vec!["x", "--train", "a", "--batch-size", "0"], "batch_size"),
            (vec!["x", "--train", "a", "--dropout", "1"], "lora_dropout"),
            (vec!["x", "--train", "a", "--preset", "fast"], "preset"),
            (vec!["x", "--train", "a", "--metric", "f1"], "spam.macro_f1"),
            (vec!["x", "--train", "a", "--min-delta=-1"], "min_delta"),
            (
                vec!["x", "--train", "a", "--val", "v", "--suite", "s"],
                "not both",
            ),
            (vec!["x"], "train"),
        ] {
            let f = Cli::parse_from(flags).args;
            let err = TrainConfig::resolve(None, &f).unwrap_err().to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn single_regex_target_becomes_a_pattern() {
        let f = Cli::parse_from(["x", "--train", "a", "--target-modules", r".*\.(q|v)_proj"]).args;
        let c = TrainConfig::resolve(None, &f).unwrap();
        assert!(matches!(
            c.adapter_config().target_modules,
            Some(TargetModules::Pattern(_))
        ));
    }
}
