//! The local models `vlmtest serve` can put behind the OpenAI protocol besides a plain GGUF:
//! a GGUF with a PEFT adapter (what `vlmtest-train` writes), and a Qwen3-VL checkpoint (with or
//! without an adapter) that takes images.

use std::path::Path;

use candle_core::Tensor;

use super::engine::{byte_level_vocab, LogitsModel};
use crate::case::Message;
use crate::model::qwen3_vl::{Prepared, Qwen3VlModel};
use crate::model::spec::default_device;
use crate::model::{chatml, ModelError};
use crate::train::llama::KvCache;
use crate::train::model::AdaptedGguf;

/// A GGUF base with a PEFT adapter merged into f32 weights, decoding through a KV cache.
pub struct AdaptedGgufLogits {
    model: AdaptedGguf,
    cache: KvCache,
    vocab: Vec<Option<Vec<u8>>>,
}

impl AdaptedGgufLogits {
    pub fn load(gguf: &Path, adapter: &Path) -> Result<Self, ModelError> {
        let model = AdaptedGguf::load(gguf, Some(adapter)).map_err(|e| {
            ModelError::Other(format!(
                "{} with adapter {}: {e}",
                gguf.display(),
                adapter.display()
            ))
        })?;
        let vocab = byte_level_vocab(model.tokenizer());
        Ok(Self {
            model,
            cache: KvCache::default(),
            vocab,
        })
    }
}

/// Token ids of an already rendered prompt (its special tokens are in the text).
fn encode(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>, ModelError> {
    let enc = tokenizer
        .encode(text, false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

fn to_logits(t: &Tensor) -> Result<Vec<f32>, ModelError> {
    Ok(t.flatten_all()?
        .to_dtype(candle_core::DType::F32)?
        .to_vec1::<f32>()?)
}

impl LogitsModel for AdaptedGgufLogits {
    fn render(&self, messages: &[Message]) -> Result<String, ModelError> {
        Ok(chatml::render(messages))
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        encode(self.model.tokenizer(), text)
    }

    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        if pos == 0 {
            self.cache = KvCache::default();
        }
        let logits = self
            .model
            .llama()
            .forward_cached(tokens, &mut self.cache)
            .map_err(|e| ModelError::Other(e.to_string()))?;
        to_logits(&logits)
    }

    fn eos_tokens(&self) -> &[u32] {
        self.model.stop_tokens()
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        &self.vocab
    }
}

/// A Qwen3-VL checkpoint: prompts are rendered with its chat template and may carry images
/// (`image_url` data URIs), which the prefill runs through the vision tower.
pub struct QwenLogits {
    model: Qwen3VlModel,
    /// The prompt `prompt` prepared (ids and pixels), consumed by the prefill at position 0.
    pending: Option<Prepared>,
    vocab: Vec<Option<Vec<u8>>>,
}

impl QwenLogits {
    pub fn load(dir: &Path, adapter: Option<&Path>) -> Result<Self, ModelError> {
        let model = Qwen3VlModel::load(dir, adapter, &default_device())?;
        let vocab = byte_level_vocab(model.tokenizer());
        Ok(Self {
            model,
            pending: None,
            vocab,
        })
    }
}

impl LogitsModel for QwenLogits {
    fn render(&self, messages: &[Message]) -> Result<String, ModelError> {
        Ok(self.model.render(messages)?.0)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        encode(self.model.tokenizer(), text)
    }

    /// Renders, loads and preprocesses the images, expands their placeholders; the pixels wait
    /// for the prefill.
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let prepared = self.model.prepare(messages)?;
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
            return self.model.network().start_logits(&prepared);
        }
        match tokens {
            [t] => self.model.network().step_logits(*t),
            _ => Err(ModelError::Other(
                "a Qwen3-VL continuation feeds one token at a time".into(),
            )),
        }
    }

    fn eos_tokens(&self) -> &[u32] {
        self.model.stop_tokens()
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        &self.vocab
    }

    fn accepts_images(&self) -> bool {
        true
    }
}
