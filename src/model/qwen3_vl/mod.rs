//! A local Qwen3-VL model: checkpoint loading, the image processor, the vision tower with
//! DeepStack features, the mrope text decoder and batched greedy generation, on candle.
//!
//! candle-transformers ships a `qwen3_vl` module, but it attends both ways over the prompt, has
//! no multimodal positions and no processor (see FACTS.md), so this is vlmtest's own forward,
//! checked against transformers on seeded checkpoints (`scripts/qwen3vl_parity.py`).

pub mod adapter;
pub mod config;
pub mod fixture;
pub mod linear;
pub mod prompt;
pub mod template;
pub mod text;
pub mod vision;

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::case::Message;
use crate::image::{self, Pixels, PreprocessorConfig};
use crate::lora::LoraAdapter;
use crate::model::checkpoint::{self, CheckpointFiles};
use crate::model::{Answer, GenerationOptions, Model, ModelError, Request};

pub use config::Config;
use linear::AdapterSet;
use template::ChatTemplate;
use text::{Deepstack, TextModel};
use vision::VisionModel;

/// One request turned into model input: token ids with expanded image placeholders, and the
/// preprocessed pixels of its images in prompt order.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub ids: Vec<u32>,
    pub images: Vec<Pixels>,
}

/// The network: vision tower and language model.
pub struct Network {
    pub cfg: Config,
    vision: VisionModel,
    text: TextModel,
    device: Device,
    dtype: DType,
    /// Rotary position offset of the prompt being continued by `step_logits` (text after an
    /// image resumes at the largest position plus one, not at its index).
    step_delta: i64,
}

/// Inputs of a prefill: embeddings with the image rows in place and what DeepStack needs.
struct PrefillInputs {
    embeds: Tensor,
    visual_idx: Option<Tensor>,
    deepstack: Vec<Tensor>,
}

impl Network {
    /// Loads the weights under `vb` (the checkpoint root) with optional LoRA pairs.
    pub fn new(cfg: &Config, vb: VarBuilder, adapters: &AdapterSet) -> candle_core::Result<Self> {
        let m = vb.pp("model");
        let vision = VisionModel::new(&cfg.vision, m.pp("visual"), adapters)?;
        let head = if vb.contains_tensor("lm_head.weight") {
            Some(vb.pp("lm_head"))
        } else if cfg.tie_word_embeddings {
            None
        } else {
            return Err(candle_core::Error::Msg(
                "lm_head.weight is missing and tie_word_embeddings is false".into(),
            ));
        };
        let text = TextModel::new(&cfg.text, m.pp("language_model"), head, adapters)?;
        Ok(Self {
            cfg: cfg.clone(),
            vision,
            text,
            device: vb.device().clone(),
            dtype: vb.dtype(),
            step_delta: 0,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Clears the KV cache.
    pub fn reset(&mut self) {
        self.text.reset_cache();
    }

    /// Runs the vision tower over all images of the batch, in order.
    pub fn encode_images(
        &self,
        images: &[&Pixels],
    ) -> candle_core::Result<Option<vision::VisionOutput>> {
        if images.is_empty() {
            return Ok(None);
        }
        let cols = images[0].cols;
        let mut data = Vec::with_capacity(images.iter().map(|p| p.data.len()).sum());
        for p in images {
            if p.cols != cols {
                candle_core::bail!("images with different patch widths in one batch");
            }
            data.extend_from_slice(&p.data);
        }
        let rows = data.len() / cols;
        let pixels = Tensor::from_vec(data, (rows, cols), &self.device)?;
        let grids: Vec<[usize; 3]> = images.iter().map(|p| p.grid_thw).collect();
        self.vision.forward(&pixels, &grids).map(Some)
    }

    /// Builds the left-padded prefill inputs for a batch.
    fn prefill_inputs(
        &self,
        batch: &[&Prepared],
        len: usize,
        pad: u32,
    ) -> candle_core::Result<PrefillInputs> {
        let b = batch.len();
        let mut ids = Vec::with_capacity(b * len);
        for p in batch {
            ids.extend(std::iter::repeat_n(pad, len - p.ids.len()));
            ids.extend_from_slice(&p.ids);
        }
        let image_token = self.cfg.image_token_id;
        let idx_tensor = Tensor::from_vec(ids.clone(), (b, len), &self.device)?;
        let text_embeds = self.text.embed(&idx_tensor)?;
        let images: Vec<&Pixels> = batch.iter().flat_map(|p| p.images.iter()).collect();
        let Some(vis) = self.encode_images(&images)? else {
            return Ok(PrefillInputs {
                embeds: text_embeds,
                visual_idx: None,
                deepstack: Vec::new(),
            });
        };
        let n_img = vis.embeds.dim(0)?;
        let positions: Vec<u32> = ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == image_token)
            .map(|(i, _)| i as u32)
            .collect();
        if positions.len() != n_img {
            candle_core::bail!(
                "image features and image tokens do not match: {} tokens, {n_img} features",
                positions.len()
            );
        }
        // Gather from [image rows; text rows] so image rows replace the placeholders exactly.
        let mut gather = Vec::with_capacity(b * len);
        let mut k = 0u32;
        for (i, &t) in ids.iter().enumerate() {
            if t == image_token {
                gather.push(k);
                k += 1;
            } else {
                gather.push(n_img as u32 + i as u32);
            }
        }
        let hidden = self.cfg.text.hidden_size;
        let flat = text_embeds.reshape((b * len, hidden))?;
        let all = Tensor::cat(&[&vis.embeds.to_dtype(flat.dtype())?, &flat], 0)?;
        let gather = Tensor::from_vec(gather, b * len, &self.device)?;
        let embeds = all.index_select(&gather, 0)?.reshape((b, len, hidden))?;
        let visual_idx = Tensor::from_vec(positions, n_img, &self.device)?;
        Ok(PrefillInputs {
            embeds,
            visual_idx: Some(visual_idx),
            deepstack: vis.deepstack,
        })
    }

    /// Logits `(len, vocab)` f32 for every position of one prepared prompt (cache reset first).
    pub fn prompt_logits(&mut self, p: &Prepared) -> Result<Tensor, ModelError> {
        let (h, _) = self.prefill_one(p)?;
        Ok(self.text.logits(&h.squeeze(0)?)?)
    }

    /// Prefills one prompt (cache reset) and returns the next-token logits after its last
    /// position; `step_logits` then continues it a token at a time (a server's decoding loop).
    pub fn start_logits(&mut self, p: &Prepared) -> Result<Vec<f32>, ModelError> {
        let len = p.ids.len();
        if len == 0 {
            return Err(ModelError::Other("empty prompt".into()));
        }
        let (hidden, delta) = self.prefill_one(p)?;
        let last = hidden.narrow(1, len - 1, 1)?.squeeze(1)?.contiguous()?;
        self.step_delta = delta;
        Ok(self.text.logits(&last)?.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// Feeds one token after what the cache holds (see `start_logits`); its next-token logits.
    pub fn step_logits(&mut self, token: u32) -> Result<Vec<f32>, ModelError> {
        let past = self.text.cached_len();
        if past == 0 {
            return Err(ModelError::Other("step_logits before start_logits".into()));
        }
        let logits = self.decode_step(vec![token], vec![past as i64 + self.step_delta], None)?;
        Ok(logits.squeeze(0)?.to_vec1::<f32>()?)
    }

    /// The prefill of one unpadded prompt (cache reset): final hidden states `(1, len, hidden)`
    /// and the rotary offset its continuation needs.
    fn prefill_one(&mut self, p: &Prepared) -> Result<(Tensor, i64), ModelError> {
        let ([t, h, w], delta) = self.positions(p)?;
        let valid = [vec![true; p.ids.len()]];
        let hidden = self.prefill(&[p], &[vec![t], vec![h], vec![w]], &valid, 0)?;
        Ok((hidden, delta))
    }

    /// Resets the cache and runs the decoder over a batch of prompts left-padded to one length
    /// (`pad` fills the ids, `valid` marks the real tokens), images and DeepStack included;
    /// returns the final hidden states `(b, len, hidden)`.
    fn prefill(
        &mut self,
        batch: &[&Prepared],
        pos: &[Vec<Vec<i64>>; 3],
        valid: &[Vec<bool>],
        pad: u32,
    ) -> Result<Tensor, ModelError> {
        self.reset();
        let len = valid.first().map_or(0, Vec::len);
        let inputs = self.prefill_inputs(batch, len, pad)?;
        let cos_sin = self.text.rope.cos_sin(pos, &self.device)?;
        let mask = text::attention_mask(valid, 0, len, &self.device)?;
        let ds = inputs.visual_idx.as_ref().map(|idx| Deepstack {
            indices: idx,
            features: &inputs.deepstack,
        });
        Ok(self
            .text
            .forward_hidden(&inputs.embeds, &cos_sin, Some(&mask), ds.as_ref())?)
    }

    /// One decode step: each row's token at its rotary position (the same on all three mrope
    /// axes, as for any text after the prompt), after what the cache holds; logits `(b, vocab)`.
    fn decode_step(
        &mut self,
        tokens: Vec<u32>,
        positions: Vec<i64>,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, ModelError> {
        let b = tokens.len();
        let ids = Tensor::from_vec(tokens, (b, 1), &self.device)?;
        let e = self.text.embed(&ids)?;
        let p: Vec<Vec<i64>> = positions.into_iter().map(|x| vec![x]).collect();
        let cos_sin = self
            .text
            .rope
            .cos_sin(&[p.clone(), p.clone(), p], &self.device)?;
        let h = self.text.forward_hidden(&e, &cos_sin, mask, None)?;
        Ok(self.text.logits(&h.squeeze(1)?)?)
    }

    /// Logits for every position, computed by prefilling the first `split` tokens and then
    /// feeding the rest one token at a time through the KV cache (the causal-mask check).
    pub fn incremental_logits(&mut self, p: &Prepared, split: usize) -> Result<Tensor, ModelError> {
        let image_token = self.cfg.image_token_id;
        if p.ids[split..].contains(&image_token) || split == 0 {
            return Err(ModelError::Other(
                "split must be after the last image token".into(),
            ));
        }
        self.reset();
        let pos = self.positions(p)?.0;
        let head = Prepared {
            ids: p.ids[..split].to_vec(),
            images: p.images.clone(),
        };
        let inputs = self.prefill_inputs(&[&head], split, 0)?;
        let rows = |a: usize, b: usize| -> [Vec<Vec<i64>>; 3] {
            [
                vec![pos[0][a..b].to_vec()],
                vec![pos[1][a..b].to_vec()],
                vec![pos[2][a..b].to_vec()],
            ]
        };
        let cos_sin = self.text.rope.cos_sin(&rows(0, split), &self.device)?;
        let mask = text::attention_mask(&[vec![true; split]], 0, split, &self.device)?;
        let ds = inputs.visual_idx.as_ref().map(|idx| Deepstack {
            indices: idx,
            features: &inputs.deepstack,
        });
        let h = self
            .text
            .forward_hidden(&inputs.embeds, &cos_sin, Some(&mask), ds.as_ref())?;
        let mut out = vec![self.text.logits(&h.squeeze(0)?)?];
        for i in split..p.ids.len() {
            let ids = Tensor::from_vec(vec![p.ids[i]], (1, 1), &self.device)?;
            let e = self.text.embed(&ids)?;
            let cos_sin = self.text.rope.cos_sin(&rows(i, i + 1), &self.device)?;
            let h = self.text.forward_hidden(&e, &cos_sin, None, None)?;
            out.push(self.text.logits(&h.squeeze(0)?)?);
        }
        Ok(Tensor::cat(&out, 0)?)
    }

    fn positions(&self, p: &Prepared) -> Result<([Vec<i64>; 3], i64), ModelError> {
        let grids: Vec<[usize; 3]> = p.images.iter().map(|i| i.grid_thw).collect();
        prompt::rope_index(
            &p.ids,
            &grids,
            self.cfg.vision.spatial_merge_size,
            self.cfg.image_token_id,
        )
        .map_err(ModelError::Other)
    }

    /// Greedy generation for a batch of prompts (left-padded together). Returns the generated
    /// ids of each row, stop token excluded.
    pub fn generate(
        &mut self,
        batch: &[&Prepared],
        max_new_tokens: usize,
        stop: &[u32],
        pad: u32,
    ) -> Result<Vec<Vec<u32>>, ModelError> {
        self.reset();
        let b = batch.len();
        if b == 0 || max_new_tokens == 0 {
            return Ok(vec![Vec::new(); b]);
        }
        let len = batch.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let mut valid: Vec<Vec<bool>> = Vec::with_capacity(b);
        let mut pos: [Vec<Vec<i64>>; 3] = Default::default();
        let mut deltas = Vec::with_capacity(b);
        for p in batch {
            let padn = len - p.ids.len();
            let (rp, _) = self.positions(p)?;
            let mut row = vec![false; padn];
            row.extend(std::iter::repeat_n(true, p.ids.len()));
            valid.push(row);
            let mut max = 0;
            for (axis, r) in rp.iter().enumerate() {
                let mut full = vec![1i64; padn];
                full.extend_from_slice(r);
                max = max.max(r.iter().copied().max().unwrap_or(0));
                pos[axis].push(full);
            }
            deltas.push(max + 1 - len as i64);
        }
        let h = self.prefill(batch, &pos, &valid, pad)?;
        // Contiguous: cuBLAS takes no row-strided left operand (the CPU backend does).
        let last = h.narrow(1, len - 1, 1)?.squeeze(1)?.contiguous()?;
        let mut next = text::argmax_rows(&self.text.logits(&last)?)?;
        let mut out: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let padded = valid.iter().any(|r| r.iter().any(|v| !v));
        for step in 0..max_new_tokens {
            for i in 0..b {
                if !done[i] {
                    if stop.contains(&next[i]) {
                        done[i] = true;
                    } else {
                        out[i].push(next[i]);
                    }
                }
            }
            if step + 1 == max_new_tokens || done.iter().all(|&d| d) {
                break;
            }
            let past = len + step;
            let positions: Vec<i64> = deltas.iter().map(|d| past as i64 + d).collect();
            let mask = if padded {
                for row in &mut valid {
                    row.push(true);
                }
                Some(text::attention_mask(&valid, past, 1, &self.device)?)
            } else {
                None
            };
            next = text::argmax_rows(&self.decode_step(next, positions, mask.as_ref())?)?;
        }
        Ok(out)
    }
}

/// A Qwen3-VL checkpoint (with an optional LoRA adapter) ready to answer requests.
pub struct Qwen3VlModel {
    net: Network,
    tokenizer: tokenizers::Tokenizer,
    processor: PreprocessorConfig,
    /// The checkpoint's own chat template; `None` renders Qwen3-VL's format (`prompt::render`).
    template: Option<ChatTemplate>,
    stop: Vec<u32>,
    pad: u32,
    fingerprint: String,
    label: String,
}

fn corrupt(path: &Path, reason: impl ToString) -> ModelError {
    ModelError::Corrupt {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
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
        let processor = match &files.preprocessor {
            Some(p) => PreprocessorConfig::from_file(p).map_err(|e| corrupt(p, e))?,
            None => {
                return Err(ModelError::Missing {
                    path: files.dir.join("preprocessor_config.json"),
                    hint: " (Qwen3-VL needs the image processor settings)".into(),
                })
            }
        };
        if processor.patch_size != cfg.vision.patch_size
            || processor.merge_size != cfg.vision.spatial_merge_size
            || processor.temporal_patch_size != cfg.vision.temporal_patch_size
        {
            return Err(corrupt(
                files.preprocessor.as_deref().unwrap_or(checkpoint),
                "patch_size/merge_size/temporal_patch_size differ from config.json's vision_config",
            ));
        }
        let tokenizer = tokenizers::Tokenizer::from_file(&files.tokenizer)
            .map_err(|e| corrupt(&files.tokenizer, e))?;
        for special in [
            prompt::IMAGE_PAD,
            prompt::VISION_START,
            prompt::VISION_END,
            prompt::IM_START,
            prompt::IM_END,
        ] {
            if tokenizer.token_to_id(special).is_none() {
                return Err(corrupt(
                    &files.tokenizer,
                    format!("has no `{special}` token"),
                ));
            }
        }
        if tokenizer.token_to_id(prompt::IMAGE_PAD) != Some(cfg.image_token_id) {
            return Err(corrupt(
                &files.tokenizer,
                format!(
                    "`<|image_pad|>` is not config.json's image_token_id {}",
                    cfg.image_token_id
                ),
            ));
        }
        let template = ChatTemplate::from_dir(&files.dir).map_err(ModelError::Other)?;
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
            tokenizer,
            processor,
            template,
            stop,
            pad,
            fingerprint: format!("qwen3_vl:{fingerprint}:{dtype:?}"),
            label,
        })
    }

    pub fn network(&mut self) -> &mut Network {
        &mut self.net
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }

    pub fn processor(&self) -> &PreprocessorConfig {
        &self.processor
    }

    pub fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    /// Renders, tokenizes and preprocesses one conversation.
    pub fn prepare(&self, messages: &[Message]) -> Result<Prepared, ModelError> {
        let (text, sources) = self.render(messages)?;
        let mut images = Vec::with_capacity(sources.len());
        for s in sources {
            let img = image::load(s).map_err(|e| ModelError::Other(e.to_string()))?;
            images.push(
                image::preprocess(&img, &self.processor)
                    .map_err(|e| ModelError::Other(e.to_string()))?,
            );
        }
        self.prepare_pixels(&text, images)
    }

    /// The prompt text of a conversation (with the generation prompt) and its images in order:
    /// the checkpoint's chat template when it has one, else Qwen3-VL's format.
    pub fn render<'m>(
        &self,
        messages: &'m [Message],
    ) -> Result<(String, Vec<&'m crate::case::ImageSource>), ModelError> {
        match &self.template {
            Some(t) => t.render(messages).map_err(ModelError::Other),
            None => Ok(prompt::render(messages)),
        }
    }

    /// Tokenizes a rendered prompt and expands its image placeholders for `images`.
    pub fn prepare_pixels(&self, text: &str, images: Vec<Pixels>) -> Result<Prepared, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        let counts: Vec<usize> = images
            .iter()
            .map(|p| p.tokens(self.processor.merge_size))
            .collect();
        let ids = prompt::expand_image_tokens(enc.get_ids(), self.net.cfg.image_token_id, &counts)
            .map_err(ModelError::Other)?;
        Ok(Prepared { ids, images })
    }

    /// Decodes generated ids to text, special tokens dropped.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
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
