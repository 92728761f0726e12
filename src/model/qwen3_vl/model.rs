//! `Qwen3VlModel`: a Qwen3-VL checkpoint (with an optional LoRA adapter) loaded and checked,
//! answering through vlmtest's `Model` trait (batched) and, for `vlmtest serve`, the `Decoder`
//! trait (one conversation at a time).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::adapter;
use super::config::Config;
use super::linear::AdapterSet;
use super::network::Network;
use super::processor::{Prepared, Processor};
use super::prompt;
use crate::case::{ImageSource, Message};
use crate::image::{Pixels, PreprocessorConfig};
use crate::lora::LoraAdapter;
use crate::model::byte_vocab;
use crate::model::checkpoint::{self, CheckpointFiles};
use crate::model::corrupt;
use crate::model::decode::Decoder;
use crate::model::{Answer, GenerationOptions, Model, ModelError, Request};

/// A Qwen3-VL checkpoint (with an optional LoRA adapter) ready to answer requests.
pub struct Qwen3VlModel {
    net: Network,
    processor: Processor,
    stop: Vec<u32>,
    pad: u32,
    fingerprint: String,
    label: String,
    /// The prompt `Decoder::prompt` prepared (ids and pixels), consumed by the prefill at
    /// position 0.
    pending: Option<Prepared>,
    /// Token bytes, built on first use (only `serve`'s constraint and logprobs read them).
    vocab: OnceLock<Vec<Option<Vec<u8>>>>,
}

impl Qwen3VlModel {
    /// Loads a checkpoint folder in f32 on CPU or bf16 on CUDA.
    pub fn load(
        checkpoint: &Path,
        adapter: Option<&Path>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        Self::load_with_dtype(checkpoint, adapter, device, dtype, true)
    }

    /// Loads with an explicit dtype; `merge` folds adapter weights into the base at load.
    pub fn load_with_dtype(
        checkpoint: &Path,
        adapter: Option<&Path>,
        device: &Device,
        dtype: DType,
        merge: bool,
    ) -> Result<Self, ModelError> {
        Self::load_from(
            checkpoint,
            adapter.map(AdapterSource::Dir),
            device,
            dtype,
            merge,
        )
    }

    /// Loads with an adapter held in memory (a trainer's current LoRA weights) instead of an
    /// adapter folder; `name` stands in for the folder name in the label and fingerprint. The
    /// adapter is checked and applied exactly as one read from disk.
    pub fn load_with_lora(
        checkpoint: &Path,
        adapter: &LoraAdapter,
        name: &str,
        device: &Device,
        dtype: DType,
        merge: bool,
    ) -> Result<Self, ModelError> {
        Self::load_from(
            checkpoint,
            Some(AdapterSource::Memory(adapter, name)),
            device,
            dtype,
            merge,
        )
    }

    fn load_from(
        checkpoint: &Path,
        adapter: Option<AdapterSource<'_>>,
        device: &Device,
        dtype: DType,
        merge: bool,
    ) -> Result<Self, ModelError> {
        let files = CheckpointFiles::locate(checkpoint)?;
        let cfg =
            Config::from_json(&files.read_config()?).map_err(|e| corrupt(&files.config, e))?;
        let processor = Processor::load(&files, &cfg)?;
        let tokenizer = processor.tokenizer();
        checkpoint::check_safetensors(&files.weights)?;
        let mut fingerprint = files.fingerprint()?;
        let adapters = match &adapter {
            Some(AdapterSource::Dir(dir)) => {
                let (set, fp) = adapter::load(dir, &cfg, device, dtype, merge)?;
                fingerprint = format!("{fingerprint}+{fp}");
                set
            }
            Some(AdapterSource::Memory(lora, name)) => {
                let set =
                    adapter::prepare((*lora).clone(), &cfg, device, dtype, merge, checkpoint)?;
                fingerprint = format!("{fingerprint}+memory:{name}");
                set
            }
            None => AdapterSet::default(),
        };
        // SAFETY: the weight files are mapped read-only for the model's lifetime.
        let mmaped = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&files.weights) }
            .map_err(|e| corrupt(&files.weights[0], e))?;
        let replace: std::collections::HashMap<String, Tensor> = adapters
            .adapter
            .as_ref()
            .map(|a| {
                a.saved_params
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let backend = adapter::Overlay {
            base: Box::new(mmaped),
            replace,
        };
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let net = Network::new(&cfg, vb, &adapters)
            .map_err(|e| corrupt(&files.dir, format!("weights do not match config.json: {e}")))?;
        let mut stop = cfg.eos_token_ids.clone();
        if let Some(g) = &files.generation_config {
            stop.extend(generation_eos(g)?);
        }
        for t in [prompt::IM_END, "<|endoftext|>"] {
            stop.extend(tokenizer.token_to_id(t));
        }
        stop.sort_unstable();
        stop.dedup();
        let pad = tokenizer.token_to_id("<|endoftext|>").unwrap_or(0);
        let name = checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let adapter_name = match &adapter {
            Some(AdapterSource::Dir(dir)) => dir.file_name().map(|a| a.to_string_lossy()),
            Some(AdapterSource::Memory(_, n)) => Some(std::borrow::Cow::Borrowed(*n)),
            None => None,
        };
        let label = match adapter_name {
            Some(a) => format!("qwen3-vl-{name}+{a}"),
            None => format!("qwen3-vl-{name}"),
        };
        Ok(Self {
            net,
            processor,
            stop,
            pad,
            fingerprint: format!("qwen3_vl:{fingerprint}:{dtype:?}"),
            label,
            pending: None,
            vocab: OnceLock::new(),
        })
    }

    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        self.processor.tokenizer()
    }

    /// The image preprocessing settings.
    pub fn processor(&self) -> &PreprocessorConfig {
        self.processor.image_config()
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// Renders, tokenizes and preprocesses one conversation.
    pub fn prepare(&self, messages: &[Message]) -> Result<Prepared, ModelError> {
        Ok(self.processor.prepare(messages)?)
    }

    /// The prompt text of a conversation (with the generation prompt) and its images in order.
    pub fn render<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<(String, Vec<&'m ImageSource>), ModelError> {
        Ok(self.processor.render(messages)?)
    }

    /// Tokenizes a rendered prompt and expands its image placeholders for `images`.
    pub fn prepare_pixels(&self, text: &str, images: Vec<Pixels>) -> Result<Prepared, ModelError> {
        Ok(self.processor.prepare_pixels(text, images)?)
    }

    /// Decodes generated ids to text, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.processor.decode(ids)
    }
}

/// Where an adapter comes from: a PEFT folder, or tensors in memory with a name.
enum AdapterSource<'a> {
    Dir(&'a Path),
    Memory(&'a LoraAdapter, &'a str),
}

/// The stop ids in `generation_config.json` (`eos_token_id`, a number or a list).
fn generation_eos(path: &Path) -> Result<Vec<u32>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| corrupt(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt(path, e))?;
    Ok(match &v["eos_token_id"] {
        serde_json::Value::Number(n) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    })
}

impl Model for Qwen3VlModel {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    fn generate(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
    ) -> Vec<Result<Answer, ModelError>> {
        let start = Instant::now();
        let prepared: Vec<Result<Prepared, ModelError>> =
            requests.iter().map(|r| self.prepare(r.messages)).collect();
        let ok: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
        let stop = self.stop.clone();
        let generated = self
            .net
            .generate(&ok, options.max_new_tokens, &stop, self.pad);
        let elapsed = start.elapsed();
        let mut outs = match generated {
            Ok(g) => g.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => ok
                .iter()
                .map(|_| Err(ModelError::Other(format!("batch generation failed: {e}"))))
                .collect(),
        }
        .into_iter();
        prepared
            .into_iter()
            .map(|p| {
                let p = p?;
                let ids = outs
                    .next()
                    .unwrap_or_else(|| Err(ModelError::Other("missing batch row".into())))?;
                Ok(Answer {
                    text: self.decode(&ids)?,
                    prompt_tokens: p.ids.len(),
                    generated_tokens: ids.len(),
                    elapsed,
                })
            })
            .collect()
    }
}

/// One conversation at a time, for `vlmtest serve`: prompts are rendered with the chat template
/// and may carry images, which the prefill runs through the vision tower.
impl Decoder for Qwen3VlModel {
    /// Renders, loads and preprocesses the images, expands their placeholders; the pixels wait
    /// for the prefill.
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let prepared = self.prepare(messages)?;
        let ids = prepared.ids.clone();
        self.pending = Some(prepared);
        Ok(ids)
    }

    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        if pos == 0 {
            let prepared = match self.pending.take() {
                Some(p) if p.ids == tokens => p,
                // A prompt given as ids alone carries no images.
                _ => Prepared {
                    ids: tokens.to_vec(),
                    images: Vec::new(),
                },
            };
            return self.net.start_logits(&prepared);
        }
        match tokens {
            [t] => self.net.step_logits(*t),
            _ => Err(ModelError::Other(
                "a Qwen3-VL continuation feeds one token at a time".into(),
            )),
        }
    }

    fn eos_tokens(&self) -> &[u32] {
        &self.stop
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        self.vocab
            .get_or_init(|| byte_vocab::byte_level_vocab(self.processor.tokenizer()))
    }

    fn accepts_images(&self) -> bool {
        true
    }
}
