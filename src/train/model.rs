//! The seam between the trainer and a network: `TrainableModel`. SmolLM2 (a Llama GGUF,
//! dequantized into `model::llama_f32`) implements it here, Qwen3-VL in `train::qwen`;
//! `load_base` picks one. A SmolLM2 snapshot is a `model::adapted_gguf::AdaptedGguf`, the model
//! `vlmtest --model X.gguf --adapter DIR` answers with.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use tokenizers::Tokenizer;

use super::batch::Batch;
use super::config::WeightDtype;
use super::data::{check_case, data_error, fit, target_text, Example};
use super::qwen::QwenTrain;
use super::TrainError;
use crate::case::Case;
use crate::lora::{AdapterConfig, LoraRng};
use crate::model::adapted_gguf::AdaptedGguf;
use crate::model::llama_f32::Llama;
use crate::model::{chatml, fetch, gguf_tokenizer, Model, ModelError};

/// A network the trainer can fine-tune with LoRA.
pub trait TrainableModel: Sync {
    /// A short label for logs and run metadata.
    fn label(&self) -> String;
    fn device(&self) -> &Device;
    /// Tokenizes a case into prompt and target ids, fitted into `max_seq_len`.
    fn encode(&self, case: &Case, max_seq_len: usize) -> Result<Example, TrainError>;
    /// The id used to pad batches (never a loss target).
    fn pad_id(&self) -> u32;
    /// Every linear layer's full name and (out, in), for target selection and adapter checks.
    fn linear_shapes(&self) -> BTreeMap<String, (usize, usize)>;
    /// Installs trainable LoRA layers with A/B in `varmap`; returns the adapted module names.
    fn attach_trainable(
        &mut self,
        cfg: &AdapterConfig,
        varmap: &VarMap,
        rng: &mut LoraRng,
    ) -> Result<Vec<String>, TrainError>;
    /// Summed cross-entropy over the batch's target tokens (differentiable).
    fn loss_sum(&self, batch: &Batch, rng: &mut LoraRng) -> Result<Tensor, TrainError>;
    /// A frozen, merged snapshot that answers conversations greedily, as `vlmtest run` answers
    /// with the saved adapter: the trainer evaluates it through the same pipeline.
    fn snapshot(&self) -> Result<Box<dyn Model + '_>, TrainError>;
    /// The merged weights under the base model's own names, for a merged checkpoint.
    fn merged_state_dict(&self) -> Result<BTreeMap<String, Tensor>, TrainError>;
    /// Files copied beside the merged weights so the merged folder loads on its own (a
    /// checkpoint folder's config, tokenizer and processor settings).
    fn merged_files(&self) -> Vec<PathBuf> {
        Vec::new()
    }
}

/// Loads the base a run names, routed as `vlmtest --model` routes it: a checkpoint folder whose
/// `config.json` says `"model_type": "qwen3_vl"` is a Qwen3-VL model; `smollm2` or a `.gguf`
/// file is a Llama GGUF (f32). `dtype` applies to Qwen3-VL (default f32 on the CPU, bf16 on CUDA).
pub fn load_base(
    base: &str,
    device: &Device,
    dtype: Option<WeightDtype>,
) -> Result<Box<dyn TrainableModel>, TrainError> {
    let path = PathBuf::from(base);
    if path.is_dir() {
        return match super::qwen::model_type(&path)?.as_deref() {
            Some("qwen3_vl") => {
                let dt = match dtype {
                    Some(d) => d.dtype(),
                    None if device.is_cpu() => DType::F32,
                    None => DType::BF16,
                };
                Ok(Box::new(QwenTrain::load(&path, device, dt)?))
            }
            other => Err(TrainError::Base {
                path: path.join("config.json"),
                reason: format!(
                    "model_type is {other:?}; checkpoint folders train only for \"qwen3_vl\""
                ),
            }),
        };
    }
    if dtype.is_some_and(|d| d != WeightDtype::F32) {
        return Err(TrainError::Config {
            field: "dtype",
            reason: "GGUF bases train in f32 only".into(),
        });
    }
    Ok(Box::new(SmolLm::load_on(&resolve_base(base)?, device)?))
}

/// Resolves `smollm2` to the cached default model (fetching it on first use), else a path.
pub fn resolve_base(base: &str) -> Result<PathBuf, TrainError> {
    if base == "smollm2" {
        Ok(fetch::ensure_default_model()?)
    } else {
        let p = PathBuf::from(base);
        if p.is_file() {
            Ok(p)
        } else {
            Err(TrainError::Base {
                path: p,
                reason:
                    "no such file (pass a .gguf file, `smollm2` or a Qwen3-VL checkpoint folder)"
                        .into(),
            })
        }
    }
}

fn encode_text(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, TrainError> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// SmolLM2 (any Llama GGUF) for training.
pub struct SmolLm {
    pub llama: Llama,
    tokenizer: Tokenizer,
    stop: Vec<u32>,
    label: String,
}

impl SmolLm {
    /// Loads on the CPU.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        Self::load_on(path, &Device::Cpu)
    }

    /// Loads and dequantizes onto `device` (f32).
    pub fn load_on(path: &Path, device: &Device) -> Result<Self, TrainError> {
        let (tokenizer, stop) = gguf_tokenizer::load(path)?;
        if stop.is_empty() {
            return Err(TrainError::Base {
                path: path.to_owned(),
                reason: "the GGUF names no end-of-turn token".into(),
            });
        }
        let llama = Llama::from_gguf(path, device)?;
        let label = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            llama,
            tokenizer,
            stop,
            label,
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The end-of-turn id appended to every target (`<|im_end|>` for ChatML models).
    pub fn end_of_turn(&self) -> u32 {
        self.tokenizer
            .token_to_id("<|im_end|>")
            .unwrap_or(self.stop[0])
    }
}

impl TrainableModel for SmolLm {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn device(&self) -> &Device {
        self.llama.device()
    }

    fn encode(&self, case: &Case, max_seq_len: usize) -> Result<Example, TrainError> {
        check_case(case)?;
        if case.has_images() {
            return Err(data_error(
                case,
                "has an image, but this base model reads text only",
            ));
        }
        let prompt = encode_text(&self.tokenizer, &chatml::render(&case.messages))?;
        let mut target = encode_text(&self.tokenizer, target_text(case)?)?;
        target.push(self.end_of_turn());
        fit(
            Example {
                name: case.id.test_name(),
                prompt,
                target,
                images: Vec::new(),
            },
            max_seq_len,
            case,
        )
    }

    fn pad_id(&self) -> u32 {
        self.end_of_turn()
    }

    fn linear_shapes(&self) -> BTreeMap<String, (usize, usize)> {
        self.llama.linear_shapes()
    }

    fn attach_trainable(
        &mut self,
        cfg: &AdapterConfig,
        varmap: &VarMap,
        rng: &mut LoraRng,
    ) -> Result<Vec<String>, TrainError> {
        if cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(TrainError::Config {
                field: "modules_to_save",
                reason: "SmolLM2 ties its output head to the embedding; training full modules is not supported for it"
                    .into(),
            });
        }
        Ok(self.llama.attach_trainable(cfg, varmap, rng)?)
    }

    fn loss_sum(&self, batch: &Batch, rng: &mut LoraRng) -> Result<Tensor, TrainError> {
        Ok(self
            .llama
            .loss_sum(&batch.ids, &batch.positions, &batch.targets, rng)?)
    }

    fn snapshot(&self) -> Result<Box<dyn Model + '_>, TrainError> {
        Ok(Box::new(AdaptedGguf::from_parts(
            self.llama.merged_copy()?,
            self.tokenizer.clone(),
            self.stop.clone(),
            format!("training-snapshot:{}", self.label),
            format!("{}+lora", self.label),
        )))
    }

    fn merged_state_dict(&self) -> Result<BTreeMap<String, Tensor>, TrainError> {
        Ok(self.llama.merged_state_dict()?)
    }
}
