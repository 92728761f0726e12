//! Stage 2 of the flow: turning a case's messages into an answer.
//!
//! `Model` is the one trait every backend implements: the local GGUF Llama-family model
//! (`gguf`), a GGUF with a merged LoRA adapter in f32 (`adapted_gguf` over `llama_f32`),
//! Qwen3-VL checkpoints (`qwen3_vl`), OpenAI-compatible servers (`openai`) and recorded answers
//! (`replay`). `spec` turns a `--model` string into the right backend. The local models decode
//! through one loop, `decode` (greedy, optionally under a JSON constraint from `constrain`, with
//! token bytes from `byte_vocab`).

pub mod adapted_gguf;
pub mod byte_vocab;
pub mod chatml;
pub mod checkpoint;
pub mod constrain;
pub mod cuda_device;
pub mod decode;
pub mod digest;
pub mod fetch;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod llama_f32;
pub mod openai;
pub mod qwen3_vl;
pub mod replay;
pub mod spec;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::case::Message;

/// A model file that could not be read or parsed: `ModelError::Corrupt` naming it.
pub(crate) fn corrupt(path: &std::path::Path, reason: impl ToString) -> ModelError {
    ModelError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Errors from loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {path} not found{hint}")]
    Missing { path: PathBuf, hint: String },
    #[error("failed to read model file {path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("failed to fetch the default model: {0}")]
    Fetch(String),
    #[error("unknown model spec `{0}`: expected a .gguf file, a checkpoint folder, `replay:<file.jsonl>` or `smollm2`")]
    UnknownSpec(String),
    #[error("failed to read replay file {path}, line {line}: {reason}")]
    Replay {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("no recorded answer for case {0} in the replay file")]
    NoRecordedAnswer(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error(
        "this model cannot read images (case {0} has one); use a vision model or drop the image"
    )]
    ImagesUnsupported(String),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error(transparent)]
    Lora(#[from] crate::lora::LoraError),
    #[error("{0}")]
    Other(String),
}

/// One request: the conversation, plus the case name for backends that key on it (replay).
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub name: String,
    pub messages: &'a [Message],
}

/// Decoding settings. Evaluation decodes greedily; the settings are part of the cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GenerationOptions {
    pub max_new_tokens: usize,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self { max_new_tokens: 64 }
    }
}

/// What the model said, with the counts a benchmark needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Wall time spent producing this answer (zero when it came from a cache or a replay).
    #[serde(with = "duration_secs")]
    pub elapsed: Duration,
}

/// The trait every backend implements.
pub trait Model: Send {
    /// Identifies the weights, adapter and settings that decide the answers: the answer cache's key.
    fn fingerprint(&self) -> String;

    /// A short, stable label for reports and snapshot names (`smollm2-135m-q8_0`).
    fn label(&self) -> String;

    /// Answers a batch of requests. One result per request, in order; a failed request does not
    /// fail the others.
    fn generate(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
    ) -> Vec<Result<Answer, ModelError>>;

    /// Answers a batch, handing each result to `sink` (with the request's index) the moment it
    /// exists, so the caller can keep it before the next one arrives. The default hands over
    /// `generate`'s results in order; a model whose answers finish apart (an HTTP endpoint)
    /// overrides it, so a killed run loses only the answers still in flight.
    fn generate_each(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
        sink: &mut dyn FnMut(usize, Result<Answer, ModelError>),
    ) {
        for (i, r) in self.generate(requests, options).into_iter().enumerate() {
            sink(i, r);
        }
    }
}

mod duration_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Ok(Duration::try_from_secs_f64(secs).unwrap_or_default())
    }
}
