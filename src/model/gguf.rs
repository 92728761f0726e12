//! The default local model: a Llama-family GGUF (SmolLM2-135M-Instruct) run with candle.
//!
//! candle's Q4_1 CPU kernel is scalar and its 8-bit activation path flips answers on this small
//! model, so Q4_x weights are requantized to Q8_0 once (about a second) and the result is kept in
//! the cache beside the model; later loads read the Q8_0 file directly.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use tokenizers::Tokenizer;

use super::decode::{self, DecodeOptions, Decoder};
use super::{
    byte_vocab, chatml, fetch, gguf_tokenizer, Answer, GenerationOptions, Model, ModelError,
    Request,
};
use crate::case::Message;
use crate::lockfile::FileLock;
use crate::model::corrupt;

/// Bumped when anything in this module changes what the model answers (v2: kernels pinned to the
/// AVX2 tier, see `pin_portable_kernels`).
pub const IMPL_VERSION: &str = "gguf-q8_0-greedy-v2";

/// The variable candle 0.11 reads, once, to choose its x86 kernels for repacked Q8_0 / Q4_K weights.
const FORCE_AVX2: &str = crate::config::env::MISTRALRS_FORCE_AVX2.name;
/// Set to keep candle's fastest kernels for this CPU instead (answers may then differ by machine).
pub const NATIVE_KERNELS: &str = crate::config::env::NATIVE_KERNELS.name;

/// Pins candle's quantized CPU kernels to their AVX2 tier, unless `VLMTEST_NATIVE_KERNELS` or
/// `MISTRALRS_FORCE_AVX2` is already set. candle picks an AVX-512-VNNI, AVX-VNNI or AVX2 kernel
/// for Q8_0 weights by CPU, and they add the blocks' f32 partial sums in different orders: on
/// SmolLM2 that flipped the greedy answer of 2 of manual_qa's 38 cases between an AVX2-only AMD EPYC
/// and the machine the snapshot was accepted on, so an accepted snapshot failed on other hardware.
/// Must run before other threads start (it sets an environment variable); the CLI and the test
/// harness call it first thing.
pub fn pin_portable_kernels() {
    use crate::config::env;
    if !env::native_kernels() && !env::is_set(&env::MISTRALRS_FORCE_AVX2) {
        std::env::set_var(FORCE_AVX2, "1");
    }
}

/// A loaded GGUF model with its tokenizer and stop tokens.
pub struct GgufModel {
    weights: ModelWeights,
    tokenizer: Tokenizer,
    stop: Vec<u32>,
    fingerprint: String,
    label: String,
    device: Device,
    /// Token bytes, built on first use (only `serve`'s constraint and logprobs read them).
    vocab: OnceLock<Vec<Option<Vec<u8>>>>,
}

/// A file's content fingerprint: the sha256 of all its bytes, memoised per file version
/// (`model::digest`).
pub fn file_fingerprint(path: &Path) -> Result<String, ModelError> {
    super::digest::file_digest(path)
}

fn read_content(path: &Path) -> Result<(Content, BufReader<File>), ModelError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ModelError::Missing {
            path: path.to_path_buf(),
            hint: String::new(),
        },
        _ => corrupt(path, e),
    })?;
    let mut reader = BufReader::new(file);
    let content =
        Content::read(&mut reader).map_err(|e| corrupt(path, format!("not a GGUF file ({e})")))?;
    Ok((content, reader))
}

/// Whether a tensor should be requantized: Q4/Q5 matrices whose rows fit Q8_0 blocks.
fn needs_requant(t: &QTensor) -> bool {
    let slow = matches!(
        t.dtype(),
        GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
    );
    let rows_fit = t
        .shape()
        .dims()
        .last()
        .is_some_and(|d| d % GgmlDType::Q8_0.block_size() == 0);
    slow && rows_fit && t.shape().rank() == 2
}

/// Writes a Q8_0 copy of `src` to `dst` (via a temporary file, renamed when complete).
fn requantize(src: &Path, dst: &Path) -> Result<(), ModelError> {
    let (content, mut reader) = read_content(src)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let t = content
            .tensor(&mut reader, name, &Device::Cpu)
            .map_err(|e| corrupt(src, format!("tensor {name}: {e}")))?;
        let t = if needs_requant(&t) {
            let f = t.dequantize(&Device::Cpu)?;
            QTensor::quantize(&f, GgmlDType::Q8_0)?
        } else {
            t
        };
        tensors.push((name.as_str(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    if let Some(dir) = dst.parent() {
        std::fs::create_dir_all(dir).map_err(|e| corrupt(dst, e))?;
    }
    let tmp = dst.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut w = std::io::BufWriter::new(File::create(&tmp).map_err(|e| corrupt(&tmp, e))?);
        gguf_file::write(&mut w, &metadata, &tensor_refs)?;
        std::io::Write::flush(&mut w).map_err(|e| corrupt(&tmp, e))?;
    }
    std::fs::rename(&tmp, dst).map_err(|e| corrupt(dst, e))
}

impl GgufModel {
    /// Loads a GGUF file. Q4/Q5 weights are requantized to Q8_0 (cached under the cache root).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::Missing {
                path: path.to_path_buf(),
                hint: "; pass an existing .gguf file, or `smollm2` for the default model".into(),
            });
        }
        let source_fp = file_fingerprint(path)?;
        let (content, _) = read_content(path)?;
        let any_slow = content.tensor_infos.values().any(|ti| {
            matches!(
                ti.ggml_dtype,
                GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1
            )
        });
        let run_path: PathBuf = if any_slow {
            let derived = fetch::cache_root()
                .join("derived")
                .join(format!("{}.q8_0.gguf", &source_fp[..16]));
            if !derived.is_file() {
                let _lock = FileLock::acquire(&derived.with_extension("lock"))
                    .map_err(|e| corrupt(&derived, e))?;
                if !derived.is_file() {
                    requantize(path, &derived)?;
                }
            }
            derived
        } else {
            path.to_path_buf()
        };
        let (content, mut reader) = read_content(&run_path)?;
        let tokenizer = gguf_tokenizer::from_gguf(&content)?;
        let stop = gguf_tokenizer::stop_tokens(&content, &tokenizer);
        let device = Device::Cpu;
        let weights =
            ModelWeights::from_gguf(content, &mut reader, &device).map_err(|e| corrupt(path, e))?;
        let label = label_of(path);
        let fingerprint = format!("{IMPL_VERSION}:{source_fp}");
        Ok(Self {
            weights,
            tokenizer,
            stop,
            fingerprint,
            label,
            device,
            vocab: OnceLock::new(),
        })
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn eos_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// ChatML with the assistant turn opened.
    pub fn render_chat(&self, messages: &[Message]) -> String {
        chatml::render(messages)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    /// Feeds `tokens` at position `pos` (the number already in the KV cache; 0 clears it) and
    /// returns the logits of the last position.
    pub fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        if pos == 0 {
            self.weights.clear_kv_cache();
        }
        let input = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let logits = self.weights.forward(&input, pos)?;
        Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// Greedy decoding of one conversation, through the one generation loop.
    pub fn generate_one(
        &mut self,
        messages: &[Message],
        max_new_tokens: usize,
    ) -> Result<Answer, ModelError> {
        let start = Instant::now();
        let (prompt_tokens, out) =
            decode::generate(self, messages, &DecodeOptions::greedy(max_new_tokens))?;
        Ok(Answer {
            text: self.decode(&out.ids)?.trim().to_string(),
            prompt_tokens,
            generated_tokens: out.ids.len(),
            elapsed: start.elapsed(),
        })
    }
}

impl Decoder for GgufModel {
    fn prompt(&mut self, messages: &[Message]) -> Result<Vec<u32>, ModelError> {
        self.encode(&self.render_chat(messages))
    }

    fn forward_logits(&mut self, tokens: &[u32], pos: usize) -> Result<Vec<f32>, ModelError> {
        GgufModel::forward_logits(self, tokens, pos)
    }

    fn eos_tokens(&self) -> &[u32] {
        &self.stop
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        self.vocab
            .get_or_init(|| byte_vocab::byte_level_vocab(&self.tokenizer))
    }
}

/// `SmolLM2-135M-Instruct.Q4_1.gguf` → `smollm2-135m-instruct-q8_0`.
pub fn label_of(path: &Path) -> String {
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("gguf");
    format!(
        "{}-q8_0",
        sanitize_label(stem.split('.').next().unwrap_or(stem))
    )
}

fn sanitize_label(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

impl Model for GgufModel {
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    fn label(&self) -> String {
        self.label.clone()
    }

    /// Requests run one after another: the quantized Llama has no padding mask for ragged
    /// batches, and on a 2-core CPU a batch would not decode faster anyway.
    fn generate(
        &mut self,
        requests: &[Request<'_>],
        options: &GenerationOptions,
    ) -> Vec<Result<Answer, ModelError>> {
        requests
            .iter()
            .map(|r| {
                if r.messages.iter().any(|m| m.images().next().is_some()) {
                    return Err(ModelError::ImagesUnsupported(r.name.clone()));
                }
                self.generate_one(r.messages, options.max_new_tokens)
            })
            .collect()
    }
}
