//! A GGUF base with an optional PEFT adapter merged in, in f32 (`llama_f32`), behind vlmtest's
//! `Model` trait: how `vlmtest --model X.gguf --adapter DIR` answers, and what a SmolLM2 training
//! snapshot is. It decodes greedily through the one generation loop (`decode`).

use std::borrow::Borrow;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::Device;
use tokenizers::Tokenizer;

use super::decode::{self, DecodeOptions, Decoder};
use super::llama_f32::{KvCache, Llama};
use super::{
    byte_vocab, chatml, gguf, gguf_tokenizer, Answer, GenerationOptions, Model, ModelError, Request,
};
use crate::case::Message;
use crate::lora::LoraAdapter;

/// A merged f32 Llama with its tokenizer, stop ids and identity.
pub struct AdaptedGguf {
    llama: Llama,
    tokenizer: Tokenizer,
    stop: Vec<u32>,
    fingerprint: String,
    label: String,
    /// Token bytes, built on first use (only `serve`'s constraint and logprobs read them).
    vocab: OnceLock<Vec<Option<Vec<u8>>>>,
}

impl AdaptedGguf {
    /// Loads `base` on the CPU and merges the PEFT adapter in folder `adapter`, if any.
    pub fn load(base: &Path, adapter: Option<&Path>) -> Result<Self, ModelError> {
        let (tokenizer, stop) = gguf_tokenizer::load(base)?;
        let mut llama = Llama::from_gguf(base, &Device::Cpu)?;
        let mut fingerprint = format!("adapted-gguf-f32-v1:{}", gguf::file_fingerprint(base)?);
        let mut label = base
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(dir) = adapter {
            let ad = LoraAdapter::load(dir, &Device::Cpu)?;
            llama.attach_adapter(&ad)?;
            llama = llama.merged_copy()?;
            let w = dir.join(crate::lora::ADAPTER_WEIGHTS_FILE);
            fingerprint.push_str(&format!("+lora:{}", gguf::file_fingerprint(&w)?));
            label.push_str("+lora");
        }
        Ok(Self::from_parts(llama, tokenizer, stop, fingerprint, label))
    }

    /// `load` with an adapter, its errors naming both paths (as `--model` and `--adapter` name
    /// them).
    pub fn load_described(base: &Path, adapter: &Path) -> Result<Self, ModelError> {
        Self::load(base, Some(adapter)).map_err(|e| {
            ModelError::Other(format!(
                "{} with adapter {}: {e}",
                base.display(),
                adapter.display()
            ))
        })
    }

    /// A model over an already merged network (a trainer's snapshot).
    pub fn from_parts(
        llama: Llama,
        tokenizer: Tokenizer,
        stop: Vec<u32>,
        fingerprint: String,
        label: String,
    ) -> Self {
        Self {
            llama,
            tokenizer,
            stop,
            fingerprint,
            label,
            vocab: OnceLock::new(),
        }
    }

    /// The merged f32 network (its `forward_cached` serves token-by-token decoding).
    pub fn llama(&self) -> &Llama {
        &self.llama
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// Greedy answer to one conversation (a fresh KV cache each time).
    pub fn answer(
        &self,
        messages: &[Message],
        max_new_tokens: usize,
    ) -> Result<Answer, ModelError> {
        let start = Instant::now();
        let mut session = LlamaSession::new(self);
        let (prompt_tokens, out) = decode::generate(
            &mut session,
            messages,
            &DecodeOptions::greedy(max_new_tokens),
        )?;
        let text = self
            .tokenizer
            .decode(&out.ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Answer {
            text: text.trim().to_owned(),
            prompt_tokens,
            generated_tokens: out.ids.len(),
            elapsed: start.elapsed(),
        })
    }
}

/// An `AdaptedGguf` (owned or borrowed) with the KV cache of the conversation it decodes.
pub struct LlamaSession<M> {
    model: M,
    cache: KvCache,
}

impl<M: Borrow<AdaptedGguf>> LlamaSession<M> {
    /// A session with an empty cache.
    pub fn new(model: M) -> Self {
        Self {
            model,
            cache: KvCache::default(),
        }
    }
}

impl<M: Borrow<AdaptedGguf> + Send> Decoder for LlamaSession<M> {
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .model
            .borrow()
            .tokenizer
            .encode(chatml::render(messages), false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        if pos == 0 {
            self.cache = KvCache::default();
        }
        let logits = self
            .model
            .borrow()
            .llama
            .forward_cached(tokens, &mut self.cache)?;
        Ok(logits
            .flatten_all()?
            .to_dtype(candle_core::DType::F32)?
            .to_vec1::<f32>()?)
    }

    fn eos_tokens(&self) -> &[u32] {
        &self.model.borrow().stop
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        let m = self.model.borrow();
        m.vocab
            .get_or_init(|| byte_vocab::byte_level_vocab(&m.tokenizer))
    }
}

impl Model for AdaptedGguf {
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
        requests
            .iter()
            .map(|r| self.answer(r.messages, options.max_new_tokens))
            .collect()
    }
}
