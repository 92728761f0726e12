//! Qwen3-VL for LoRA training: a differentiable text forward over the checkpoint's own weights,
//! with the frozen vision tower and DeepStack features of the inference model.
//!
//! The prompt is prepared by the inference processor itself (`model::qwen3_vl::Processor`: the
//! chat template, the image placeholders, the pixels), and positions come from the same
//! `rope_index`, so training and testing see the same tokens and positions. The text
//! forward uses only ops with a backward pass: `crate::ops`' RMSNorm, causal softmax, rotary
//! embedding and SiLU gate (candle's fused `rms_norm`, `softmax_last_dim` and `rope` have none). The vision tower runs without gradient; its features are cached per image
//! (the tower is frozen, so they never change). Evaluation answers with the inference model
//! itself (`Qwen3VlModel::load_with_lora`, the adapter merged), so the trainer's answers are the
//! answers `vlmtest --model CKPT --adapter ADAPTER` gives.
//!
//! LoRA layers carry Hugging Face module names (`model.language_model.layers.N.self_attn.q_proj`),
//! which with PEFT's `base_model.model.` prefix are the keys PEFT writes for
//! `Qwen3VLForConditionalGeneration`.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use tokenizers::Tokenizer;

use super::batch::Batch;
use super::data::{check_case, data_error, fit, target_text, Example};
use super::model::TrainableModel;
use super::TrainError;
use crate::case::Case;
use crate::image::{Pixels, PreprocessorConfig};
use crate::lora::frozen::frozen_matmul;
use crate::lora::{AdapterConfig, LoraAdapter, LoraLinear, LoraRng, LoraWeights};
use crate::model::checkpoint::CheckpointFiles;
use crate::model::qwen3_vl::config::TextConfig;
use crate::model::qwen3_vl::linear::AdapterSet;
use crate::model::qwen3_vl::text::MropeTable;
use crate::model::qwen3_vl::vision::VisionModel;
use crate::model::qwen3_vl::{prompt, Config, Processor, ProcessorError, Qwen3VlModel};
use crate::model::{Model, ModelError};
use crate::ops;

/// The seven linear layers of a decoder layer, by their HF suffix.
pub const LINEARS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

const TEXT_PREFIX: &str = "model.language_model";

struct Layer {
    input_norm: Tensor,
    post_norm: Tensor,
    q_norm: Tensor,
    k_norm: Tensor,
    /// In `LINEARS` order.
    linears: Vec<LoraLinear>,
}

/// One image's vision-tower output: its placeholder rows and one tensor per DeepStack layer.
struct Features {
    embeds: Tensor,
    deepstack: Vec<Tensor>,
}

/// The flat `(b·t)` indices of a batch's image rows and the DeepStack features to add there.
type Visual = (Tensor, Vec<Tensor>);

/// A Qwen3-VL checkpoint folder set up for LoRA training.
pub struct QwenTrain {
    dir: PathBuf,
    files: CheckpointFiles,
    pub cfg: Config,
    /// The inference processor: training prompts are prepared exactly as test prompts.
    processor: Processor,
    vision: VisionModel,
    /// f32.
    embed: Tensor,
    layers: Vec<Layer>,
    /// f32.
    norm: Tensor,
    /// `(vocab, hidden)` in the weight dtype (the embedding when tied).
    head: Tensor,
    rope: MropeTable,
    device: Device,
    /// The dtype of the frozen linear weights (f32, or bf16 on a GPU); norms, embeddings, the
    /// residual stream and the LoRA pairs stay f32.
    wdtype: DType,
    end_of_turn: u32,
    pad: u32,
    label: String,
    adapter_cfg: Option<AdapterConfig>,
    /// Reuse vision features across steps (off in the benchmark, which times the tower too).
    pub cache_vision: bool,
    cache: Mutex<HashMap<u64, Arc<Features>>>,
}

fn base_err(path: &Path, reason: impl ToString) -> TrainError {
    TrainError::Base {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The `model_type` of a checkpoint folder's `config.json` (`qwen3_vl` for Qwen3-VL).
pub fn model_type(dir: &Path) -> Result<Option<String>, TrainError> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(TrainError::io(&path))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| base_err(&path, format!("not JSON: {e}")))?;
    Ok(v.get("model_type")
        .and_then(|m| m.as_str())
        .map(str::to_owned))
}

fn content_key(p: &Pixels) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.grid_thw.hash(&mut h);
    p.cols.hash(&mut h);
    for x in &p.data {
        x.to_bits().hash(&mut h);
    }
    h.finish()
}

impl QwenTrain {
    /// Loads a checkpoint folder onto `device`; `wdtype` is the dtype of the frozen linear
    /// weights (f32 on the CPU).
    pub fn load(dir: &Path, device: &Device, wdtype: DType) -> Result<Self, TrainError> {
        let files = CheckpointFiles::locate(dir)?;
        let cfg =
            Config::from_json(&files.read_config()?).map_err(|e| base_err(&files.config, e))?;
        let processor = Processor::load(&files, &cfg)?;
        let tokenizer = processor.tokenizer();
        let id = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| base_err(&files.tokenizer, format!("has no `{t}` token")))
        };
        let end_of_turn = id(prompt::IM_END)?;
        let pad = id("<|endoftext|>").unwrap_or(end_of_turn);
        crate::model::checkpoint::check_safetensors(&files.weights)?;
        // SAFETY: the weight files are mapped read-only while the tensors are copied out.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files.weights, wdtype, device) }
            .map_err(|e| base_err(&files.weights[0], e))?;
        let wrap = |e: candle_core::Error| {
            base_err(&files.dir, format!("weights do not match config.json: {e}"))
        };
        let vision = VisionModel::new(&cfg.vision, vb.pp("model.visual"), &AdapterSet::default())
            .map_err(wrap)?;
        let t = &cfg.text;
        let tv = vb.pp(TEXT_PREFIX);
        let f32v = tv.clone().set_dtype(DType::F32);
        let (h, hd, inter) = (t.hidden_size, t.head_dim, t.intermediate_size);
        let embed = f32v
            .get((t.vocab_size, h), "embed_tokens.weight")
            .map_err(wrap)?;
        let mut layers = Vec::with_capacity(t.num_hidden_layers);
        for i in 0..t.num_hidden_layers {
            let lv = tv.pp(format!("layers.{i}"));
            let lf = f32v.pp(format!("layers.{i}"));
            let shapes = [
                (t.num_attention_heads * hd, h),
                (t.num_key_value_heads * hd, h),
                (t.num_key_value_heads * hd, h),
                (h, t.num_attention_heads * hd),
                (inter, h),
                (inter, h),
                (h, inter),
            ];
            let mut linears = Vec::with_capacity(LINEARS.len());
            for (name, shape) in LINEARS.iter().zip(shapes) {
                let w = lv.get(shape, &format!("{name}.weight")).map_err(wrap)?;
                let bias = if t.attention_bias && name.starts_with("self_attn") {
                    Some(
                        lf.get(shape.0, &format!("{name}.bias"))
                            .map_err(wrap)?
                            .to_dtype(wdtype)?,
                    )
                } else {
                    None
                };
                linears.push(LoraLinear::frozen(Linear::new(w, bias)));
            }
            layers.push(Layer {
                input_norm: lf.get(h, "input_layernorm.weight").map_err(wrap)?,
                post_norm: lf.get(h, "post_attention_layernorm.weight").map_err(wrap)?,
                q_norm: lf.get(hd, "self_attn.q_norm.weight").map_err(wrap)?,
                k_norm: lf.get(hd, "self_attn.k_norm.weight").map_err(wrap)?,
                linears,
            });
        }
        let norm = f32v.get(h, "norm.weight").map_err(wrap)?;
        let head = if vb.contains_tensor("lm_head.weight") {
            vb.get((t.vocab_size, h), "lm_head.weight").map_err(wrap)?
        } else if cfg.tie_word_embeddings {
            embed.to_dtype(wdtype)?
        } else {
            return Err(base_err(
                &files.dir,
                "lm_head.weight is missing and tie_word_embeddings is false",
            ));
        };
        let label = format!(
            "qwen3-vl-{}",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        Ok(Self {
            dir: dir.to_owned(),
            files,
            rope: MropeTable::new(t),
            cfg,
            processor,
            vision,
            embed,
            layers,
            norm,
            head,
            device: device.clone(),
            wdtype,
            end_of_turn,
            pad,
            label,
            adapter_cfg: None,
            cache_vision: true,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn text_cfg(&self) -> &TextConfig {
        &self.cfg.text
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.processor.tokenizer()
    }

    pub fn processor(&self) -> &PreprocessorConfig {
        self.processor.image_config()
    }

    fn for_each_linear(
        &mut self,
        mut f: impl FnMut(&str, &mut LoraLinear) -> Result<(), TrainError>,
    ) -> Result<(), TrainError> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            for (name, l) in LINEARS.iter().zip(layer.linears.iter_mut()) {
                f(&format!("{TEXT_PREFIX}.layers.{i}.{name}"), l)?;
            }
        }
        Ok(())
    }

    /// The current LoRA pairs as an adapter (the configuration given to `attach_trainable`).
    pub fn current_adapter(&self) -> Result<LoraAdapter, TrainError> {
        let config = self.adapter_cfg.clone().ok_or(TrainError::Config {
            field: "target_modules",
            reason: "no LoRA layers are attached".into(),
        })?;
        let mut modules = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, l) in LINEARS.iter().zip(&layer.linears) {
                if let Some((a, b)) = l.lora_tensors() {
                    modules.insert(
                        format!("{TEXT_PREFIX}.layers.{i}.{name}"),
                        LoraWeights {
                            a: a.detach().copy()?,
                            b: b.detach().copy()?,
                        },
                    );
                }
            }
        }
        Ok(LoraAdapter {
            config,
            modules,
            saved_params: BTreeMap::new(),
        })
    }

    /// A linear layer of the training forward on `x` (f32) and the same rows already cast to the
    /// weight dtype (`xw`, shared by the layers reading one input): the frozen base (no weight
    /// gradient) plus the f32 LoRA branch with dropout, as one op (`lora::fused_linear`).
    fn linear(
        &self,
        l: &LoraLinear,
        x: &Tensor,
        xw: &Tensor,
        rng: &mut LoraRng,
    ) -> Result<Tensor, TrainError> {
        Ok(l.forward_train_cast(x, Some(xw), rng)?)
    }

    /// Vision features of one image, from the cache or the (frozen) tower.
    fn features(&self, p: &Pixels) -> Result<Arc<Features>, TrainError> {
        let key = if self.cache_vision {
            let key = content_key(p);
            if let Some(f) = self.cached(key) {
                return Ok(f);
            }
            Some(key)
        } else {
            None
        };
        let pixels = Tensor::from_vec(p.data.clone(), (p.rows, p.cols), &self.device)?;
        let out = self.vision.forward(&pixels, &[p.grid_thw])?;
        let f = Arc::new(Features {
            embeds: out.embeds.to_dtype(DType::F32)?.detach(),
            deepstack: out
                .deepstack
                .iter()
                .map(|t| Ok(t.to_dtype(DType::F32)?.detach()))
                .collect::<Result<_, candle_core::Error>>()?,
        });
        if let Some(key) = key {
            // A poisoned lock only means another step panicked; the map itself is intact.
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.insert(key, f.clone());
        }
        Ok(f)
    }

    fn cached(&self, key: u64) -> Option<Arc<Features>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&key).cloned()
    }

    /// Input embeddings `(b, t, hidden)` with image rows in place of the placeholders, the flat
    /// indices of those rows, and the DeepStack features to add there.
    fn inputs(&self, batch: &Batch) -> Result<(Tensor, Option<Visual>), TrainError> {
        let (b, t) = batch.ids.dims2()?;
        let h = self.text_cfg().hidden_size;
        let text = self.embed.index_select(&batch.ids.flatten_all()?, 0)?;
        let images: Vec<&Arc<Pixels>> = batch.images.iter().flatten().collect();
        if images.is_empty() {
            return Ok((text.reshape((b, t, h))?, None));
        }
        let feats = images
            .iter()
            .map(|p| self.features(p))
            .collect::<Result<Vec<_>, _>>()?;
        let vis = Tensor::cat(&feats.iter().map(|f| &f.embeds).collect::<Vec<_>>(), 0)?;
        let n_ds = feats.iter().map(|f| f.deepstack.len()).min().unwrap_or(0);
        let deepstack = (0..n_ds)
            .map(|k| {
                Tensor::cat(
                    &feats.iter().map(|f| &f.deepstack[k]).collect::<Vec<_>>(),
                    0,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n_img = vis.dim(0)?;
        let image_token = self.cfg.image_token_id;
        let mut gather = Vec::with_capacity(b * t);
        let mut positions = Vec::with_capacity(n_img);
        for (r, row) in batch.row_ids.iter().enumerate() {
            for j in 0..t {
                let flat = (r * t + j) as u32;
                if row.get(j) == Some(&image_token) {
                    gather.push(positions.len() as u32);
                    positions.push(flat);
                } else {
                    gather.push(n_img as u32 + flat);
                }
            }
        }
        if positions.len() != n_img {
            return Err(TrainError::Model(ModelError::Other(format!(
                "image features and image tokens do not match: {} tokens, {n_img} features",
                positions.len()
            ))));
        }
        let all = Tensor::cat(&[&vis, &text], 0)?;
        let gather = Tensor::from_vec(gather, b * t, &self.device)?;
        let embeds = all.index_select(&gather, 0)?.reshape((b, t, h))?;
        let idx = Tensor::from_vec(positions, n_img, &self.device)?;
        Ok((embeds, Some((idx, deepstack))))
    }

    /// Multimodal rotary `(cos, sin)`, each `(b, 1, t, head_dim / 2)`, for the batch's rows;
    /// padding positions continue after each row's last.
    fn rotary(&self, batch: &Batch, t: usize) -> Result<(Tensor, Tensor), TrainError> {
        let mut pos: [Vec<Vec<i64>>; 3] = Default::default();
        for (row, imgs) in batch.row_ids.iter().zip(&batch.images) {
            let grids: Vec<[usize; 3]> = imgs.iter().map(|p| p.grid_thw).collect();
            let (rp, _) = prompt::rope_index(
                row,
                &grids,
                self.cfg.vision.spatial_merge_size,
                self.cfg.image_token_id,
            )
            .map_err(|e| TrainError::Model(ModelError::Other(e)))?;
            let next = rp[0]
                .iter()
                .chain(&rp[1])
                .chain(&rp[2])
                .max()
                .map_or(0, |m| m + 1);
            for (axis, r) in rp.into_iter().enumerate() {
                let mut full = r;
                let have = full.len();
                full.extend((0..t - have).map(|k| next + k as i64));
                pos[axis].push(full);
            }
        }
        let (cos, sin) = self.rope.cos_sin(&pos, &self.device)?;
        Ok((cos.unsqueeze(1)?, sin.unsqueeze(1)?))
    }

    /// The differentiable forward: final-normed hidden states `(b, t, hidden)` f32.
    pub fn forward_train(&self, batch: &Batch, rng: &mut LoraRng) -> Result<Tensor, TrainError> {
        let (b, t) = batch.ids.dims2()?;
        let c = self.text_cfg();
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let eps = c.rms_norm_eps as f32;
        let (mut x, visual) = self.inputs(batch)?;
        let (cos, sin) = self.rotary(batch, t)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for (i, layer) in self.layers.iter().enumerate() {
            let l = &layer.linears;
            let hn = ops::rms_norm(&x, &layer.input_norm, eps)?;
            let hw = hn.detach().to_dtype(self.wdtype)?;
            let q = self.linear(&l[0], &hn, &hw, rng)?.reshape((b, t, nh, hd))?;
            let k = self
                .linear(&l[1], &hn, &hw, rng)?
                .reshape((b, t, nkv, hd))?;
            let v = self
                .linear(&l[2], &hn, &hw, rng)?
                .reshape((b, t, nkv, hd))?;
            let q = ops::rms_norm(&q, &layer.q_norm, eps)?
                .transpose(1, 2)?
                .contiguous()?;
            let k = ops::rms_norm(&k, &layer.k_norm, eps)?
                .transpose(1, 2)?
                .contiguous()?;
            let v = v.transpose(1, 2)?.contiguous()?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let y = ops::causal_attention(&q, &k, &v, scale)?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?;
            x = (x + self.linear(&l[3], &y, &y.detach().to_dtype(self.wdtype)?, rng)?)?;
            let hn = ops::rms_norm(&x, &layer.post_norm, eps)?;
            let hw = hn.detach().to_dtype(self.wdtype)?;
            let g = self.linear(&l[4], &hn, &hw, rng)?;
            let u = self.linear(&l[5], &hn, &hw, rng)?;
            let gu = ops::silu_mul(&g, &u)?;
            x = (x + self.linear(&l[6], &gu, &gu.detach().to_dtype(self.wdtype)?, rng)?)?;
            if let Some((idx, ds)) = &visual {
                if let Some(feat) = ds.get(i) {
                    x = x
                        .reshape((b * t, h))?
                        .index_add(idx, feat, 0)?
                        .reshape((b, t, h))?;
                }
            }
        }
        Ok(ops::rms_norm(&x, &self.norm, eps)?)
    }

    /// Logits `(b, t, vocab)` f32 of every position through the training forward.
    pub fn logits(&self, batch: &Batch, rng: &mut LoraRng) -> Result<Tensor, TrainError> {
        let hidden = self.forward_train(batch, rng)?;
        let y = frozen_matmul(&hidden.to_dtype(self.wdtype)?, &self.head)?;
        Ok(y.to_dtype(DType::F32)?)
    }

    /// The inference dtype `Qwen3VlModel::load` picks for this device.
    fn inference_dtype(&self) -> DType {
        if self.device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        }
    }

    /// The inference model with the current LoRA weights merged, as `vlmtest` loads a checkpoint
    /// with an adapter folder.
    pub fn inference_model(&self) -> Result<Qwen3VlModel, TrainError> {
        let dtype = self.inference_dtype();
        Ok(match &self.adapter_cfg {
            Some(_) => Qwen3VlModel::load_with_lora(
                &self.dir,
                &self.current_adapter()?,
                "training",
                &self.device,
                dtype,
                true,
            )?,
            None => Qwen3VlModel::load_with_dtype(&self.dir, None, &self.device, dtype, true)?,
        })
    }
}

fn encode_text(tok: &Tokenizer, text: &str) -> Result<Vec<u32>, TrainError> {
    let enc = tok
        .encode(text, false)
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

impl TrainableModel for QwenTrain {
    fn label(&self) -> String {
        self.label.clone()
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn encode(&self, case: &Case, max_seq_len: usize) -> Result<Example, TrainError> {
        check_case(case)?;
        // The prompt exactly as `Qwen3VlModel` prepares it for inference.
        let prepared = self
            .processor
            .prepare(&case.messages)
            .map_err(|e| match e {
                ProcessorError::Template(e) => data_error(case, format!("chat template: {e}")),
                ProcessorError::Image(e) => data_error(case, format!("image: {e}")),
                ProcessorError::Placeholders(e) => data_error(case, e),
                ProcessorError::Tokenizer(e) => ModelError::Tokenizer(e).into(),
            })?;
        let images = prepared.images.into_iter().map(Arc::new).collect();
        let mut target = encode_text(self.tokenizer(), target_text(case)?)?;
        target.push(self.end_of_turn);
        fit(
            Example {
                name: case.id.test_name(),
                prompt: prepared.ids,
                target,
                images,
            },
            max_seq_len,
            case,
        )
    }

    fn pad_id(&self) -> u32 {
        self.pad
    }

    fn linear_shapes(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, l) in LINEARS.iter().zip(&layer.linears) {
                if let Ok(s) = l.base().weight().dims2() {
                    out.insert(format!("{TEXT_PREFIX}.layers.{i}.{name}"), s);
                }
            }
        }
        out
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
                reason: "training full modules is not supported for Qwen3-VL; use LoRA targets"
                    .into(),
            });
        }
        let shapes = self.linear_shapes();
        // Only the language model is adapted; the vision tower stays frozen.
        let picked = cfg.select_modules(shapes.keys().map(String::as_str), None)?;
        self.for_each_linear(|name, l| {
            if picked.iter().any(|p| p == name) {
                *l = LoraLinear::trainable_from(cfg, l.base().clone(), name, varmap, rng)?;
            }
            Ok(())
        })?;
        self.adapter_cfg = Some(cfg.clone());
        Ok(picked)
    }

    fn loss_sum(&self, batch: &Batch, rng: &mut LoraRng) -> Result<Tensor, TrainError> {
        let hidden = self.forward_train(batch, rng)?;
        let (b, t, h) = hidden.dims3()?;
        let picked = hidden
            .reshape((b * t, h))?
            .index_select(&batch.positions, 0)?;
        // Only answer positions go through the output head.
        let logits =
            frozen_matmul(&picked.to_dtype(self.wdtype)?, &self.head)?.to_dtype(DType::F32)?;
        Ok(ops::nll(&logits, &batch.targets)?.sum_all()?)
    }

    fn snapshot(&self) -> Result<Box<dyn Model + '_>, TrainError> {
        Ok(Box::new(self.inference_model()?))
    }

    fn merged_state_dict(&self) -> Result<BTreeMap<String, Tensor>, TrainError> {
        // SAFETY: read-only mapping while the tensors are copied out.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&self.files.weights) }
            .map_err(|e| base_err(&self.files.weights[0], e))?;
        let mut merged = BTreeMap::new();
        for (i, layer) in self.layers.iter().enumerate() {
            for (name, l) in LINEARS.iter().zip(&layer.linears) {
                if let Some((a, b)) = l.lora_tensors() {
                    let w = l.base().weight().to_dtype(DType::F32)?;
                    let delta = (b.matmul(a)? * l.scale().unwrap_or(1.0))?;
                    merged.insert(
                        format!("{TEXT_PREFIX}.layers.{i}.{name}.weight"),
                        (w + delta)?.detach(),
                    );
                }
            }
        }
        let mut out = BTreeMap::new();
        for (name, _) in st.tensors() {
            let t = st.load(&name, &Device::Cpu)?;
            let t = match merged.remove(&name) {
                Some(m) => m.to_dtype(t.dtype())?.to_device(&Device::Cpu)?,
                None => t,
            };
            out.insert(name, t);
        }
        Ok(out)
    }

    fn merged_files(&self) -> Vec<PathBuf> {
        [
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "preprocessor_config.json",
            "generation_config.json",
            "chat_template.json",
        ]
        .iter()
        .map(|f| self.files.dir.join(f))
        .filter(|p| p.is_file())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap as Map;

    use super::*;
    use crate::case::{CaseId, ImageSource, Message, Origin, Part, Role};
    use crate::lora::TargetModules;
    use crate::model::qwen3_vl::fixture::{self, Spec};
    use crate::test_support::max_abs_diff;
    use crate::train::batch::plan;

    fn checkpoint(dir: &Path) -> PathBuf {
        let ckpt = dir.join("tiny");
        fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
        ckpt
    }

    fn image_case(dir: &Path, w: u32, h: u32, question: &str, answer: &str) -> Case {
        let path = dir.join(format!("img_{w}x{h}.png"));
        fixture::write_image(&path, w, h, u64::from(w * 1000 + h)).unwrap();
        Case {
            id: CaseId::new("s", "c", &format!("{w}x{h}")),
            tags: vec![],
            messages: vec![Message {
                role: Role::User,
                parts: vec![
                    Part::Image {
                        image: ImageSource::Path(path),
                    },
                    Part::Text {
                        text: question.into(),
                    },
                ],
            }],
            reference: Some(answer.into()),
            context: None,
            expect: vec![],
            metadata: Map::new(),
            ignored: false,
            origin: Origin {
                file: PathBuf::from("rows.jsonl"),
                line: Some(1),
            },
        }
    }

    #[test]
    fn training_forward_equals_the_inference_forward() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(dir.path());
        let m = QwenTrain::load(&ckpt, &Device::Cpu, DType::F32).unwrap();
        let case = image_case(dir.path(), 64, 96, "What colour?", "red");
        let ex = m.encode(&case, 512).unwrap();
        // The inference model's own preparation gives the same prompt ids and pixels.
        let mut inf = Qwen3VlModel::load(&ckpt, None, &Device::Cpu).unwrap();
        let p = inf.prepare(&case.messages).unwrap();
        assert_eq!(ex.prompt, p.ids);
        assert_eq!(*ex.images[0], p.images[0]);
        // Feed exactly the prompt: the target's last token is never an input.
        let only_prompt = Example {
            target: vec![m.end_of_turn],
            ..ex
        };
        let batch = plan(&[&only_prompt], m.pad_id())
            .to_batch(&Device::Cpu)
            .unwrap();
        let ours = m
            .logits(&batch, &mut LoraRng::new(0))
            .unwrap()
            .squeeze(0)
            .unwrap();
        let theirs = inf.network().prompt_logits(&p).unwrap();
        let d = max_abs_diff(&ours, &theirs);
        assert!(d < 1e-4, "max abs difference {d}");
    }

    #[test]
    fn every_lora_tensor_gets_a_nonzero_gradient() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = QwenTrain::load(&checkpoint(dir.path()), &Device::Cpu, DType::F32).unwrap();
        let varmap = VarMap::new();
        let mut rng = LoraRng::new(2);
        let targets = TargetModules::List(
            LINEARS
                .iter()
                .map(|l| l.rsplit('.').next().unwrap().to_owned())
                .collect(),
        );
        let cfg = AdapterConfig::new(2, 4.0, 0.1, targets);
        let picked = m.attach_trainable(&cfg, &varmap, &mut rng).unwrap();
        assert_eq!(picked.len(), 2 * 7);
        // B starts at zero, which zeroes A's gradient; give B a value so both must be reached.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("lora_B.weight") {
                let (o, r) = var.as_tensor().dims2().unwrap();
                var.set(&Tensor::from_vec(rng.uniform(o * r, 0.1), (o, r), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let a = m
            .encode(&image_case(dir.path(), 64, 96, "What is it?", "a cat"), 512)
            .unwrap();
        let b = m
            .encode(&image_case(dir.path(), 33, 33, "Colour?", "blue"), 512)
            .unwrap();
        let batch = plan(&[&a, &b], m.pad_id()).to_batch(&Device::Cpu).unwrap();
        let loss = m.loss_sum(&batch, &mut rng).unwrap();
        let grads = loss.backward().unwrap();
        crate::lora::assert_every_variable_has_a_gradient(&varmap, &grads, 2 * 7 * 2);
    }

    #[test]
    fn bf16_weights_give_the_f32_loss_and_f32_lora_gradients() {
        // The mixed-precision path a GPU run takes (bf16 base matmuls, f32 LoRA, norms and
        // residual stream), exercised on the CPU.
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(dir.path());
        let case = image_case(dir.path(), 64, 96, "What is it?", "a cat");
        let mut losses = Vec::new();
        for dtype in [DType::F32, DType::BF16] {
            let mut m = QwenTrain::load(&ckpt, &Device::Cpu, dtype).unwrap();
            let varmap = VarMap::new();
            let mut rng = LoraRng::new(4);
            let cfg = AdapterConfig::new(2, 4.0, 0.0, TargetModules::Pattern("all-linear".into()));
            assert_eq!(
                m.attach_trainable(&cfg, &varmap, &mut rng).unwrap().len(),
                14
            );
            let ex = m.encode(&case, 512).unwrap();
            let batch = plan(&[&ex], m.pad_id()).to_batch(&Device::Cpu).unwrap();
            let loss = m.loss_sum(&batch, &mut rng).unwrap();
            let grads = loss.backward().unwrap();
            for (name, var) in varmap.data().lock().unwrap().iter() {
                // B starts at zero, so on the first step only B's gradient is non-zero.
                if name.ends_with("lora_B.weight") {
                    let g = grads.get(var.as_tensor()).unwrap();
                    assert_eq!(g.dtype(), DType::F32);
                    let n = g
                        .abs()
                        .unwrap()
                        .sum_all()
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(n > 0.0, "{dtype:?} {name}");
                }
            }
            losses.push(loss.to_scalar::<f32>().unwrap() / batch.n_targets as f32);
        }
        assert!(
            (losses[0] - losses[1]).abs() < 0.05 * losses[0],
            "{losses:?}"
        );
    }

    #[test]
    fn unknown_targets_and_vision_targets_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = QwenTrain::load(&checkpoint(dir.path()), &Device::Cpu, DType::F32).unwrap();
        for bad in ["qkv_proj", "qkv"] {
            let cfg = AdapterConfig::new(
                2,
                4.0,
                0.0,
                TargetModules::List(vec!["q_proj".into(), bad.into()]),
            );
            let err = m
                .attach_trainable(&cfg, &VarMap::new(), &mut LoraRng::new(1))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(bad) && err.contains("q_proj, up_proj, v_proj"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_data_uri_image_trains_like_the_same_file() {
        use base64::Engine;
        let dir = tempfile::tempdir().unwrap();
        let m = QwenTrain::load(&checkpoint(dir.path()), &Device::Cpu, DType::F32).unwrap();
        let from_file = image_case(dir.path(), 50, 77, "Colour?", "blue");
        let mut from_uri = from_file.clone();
        let bytes = std::fs::read(dir.path().join("img_50x77.png")).unwrap();
        let uri = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        from_uri.messages[0].parts[0] = Part::Image {
            image: ImageSource::DataUri(uri),
        };
        assert_eq!(
            m.encode(&from_file, 512).unwrap(),
            m.encode(&from_uri, 512).unwrap()
        );
    }

    #[test]
    fn a_prompt_with_images_too_long_for_max_seq_len_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let m = QwenTrain::load(&checkpoint(dir.path()), &Device::Cpu, DType::F32).unwrap();
        let err = m
            .encode(&image_case(dir.path(), 64, 96, "What is it?", "a cat"), 12)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rows.jsonl:1") && err.contains("max_seq_len 12"),
            "{err}"
        );
    }

    /// Three optimizer steps with dropout on the GPU follow the same steps on the CPU: the fused
    /// kernels, the fused LoRA layer, the device-made dropout masks and the in-place AdamW
    /// together (built with `--features cuda`; needs a GPU).
    #[cfg(feature = "cuda")]
    #[test]
    fn training_steps_on_cuda_follow_the_cpu() {
        use crate::train::checkpoint::named_vars;
        use crate::train::optim::{AdamW, AdamWParams, GradAccumulator};

        let gpu = Device::new_cuda(0).expect("the cuda feature's tests need a GPU");
        let dir = tempfile::tempdir().unwrap();
        let ckpt = checkpoint(dir.path());
        let cases = [
            image_case(dir.path(), 64, 96, "What is it?", "a cat"),
            image_case(dir.path(), 33, 33, "Colour?", "blue"),
        ];
        let run = |dev: &Device| {
            let mut m = QwenTrain::load(&ckpt, dev, DType::F32).unwrap();
            let varmap = VarMap::new();
            let mut rng = LoraRng::new(4);
            let cfg = AdapterConfig::new(2, 4.0, 0.1, TargetModules::Pattern("all-linear".into()));
            m.attach_trainable(&cfg, &varmap, &mut rng).unwrap();
            let vars = named_vars(&varmap);
            let mut opt = AdamW::new(vars.clone(), AdamWParams::new(1e-2, 0.01)).unwrap();
            let ex: Vec<_> = cases.iter().map(|c| m.encode(c, 512).unwrap()).collect();
            let batch = plan(&ex.iter().collect::<Vec<_>>(), m.pad_id())
                .to_batch(dev)
                .unwrap();
            let mut losses = vec![];
            for _ in 0..3 {
                let loss = m.loss_sum(&batch, &mut rng).unwrap();
                losses.push(loss.to_scalar::<f32>().unwrap());
                let mut acc = GradAccumulator::default();
                acc.add(&vars, &loss.backward().unwrap()).unwrap();
                acc.clip(1.0).unwrap();
                opt.step(&acc).unwrap();
            }
            let weights: Vec<Tensor> = vars
                .values()
                .map(|v| v.as_tensor().to_device(&Device::Cpu).unwrap())
                .collect();
            (losses, weights)
        };
        let (cpu_losses, cpu_w) = run(&Device::Cpu);
        let (gpu_losses, gpu_w) = run(&gpu);
        for (c, g) in cpu_losses.iter().zip(&gpu_losses) {
            assert!(
                (c - g).abs() < 1e-3 * c.abs().max(1.0),
                "{cpu_losses:?} vs {gpu_losses:?}"
            );
        }
        let d = cpu_w
            .iter()
            .zip(&gpu_w)
            .map(|(a, b)| max_abs_diff(a, b))
            .fold(0f32, f32::max);
        assert!(d < 1e-3, "LoRA weights differ by {d}");
        assert!(cpu_losses[2] < cpu_losses[0], "{cpu_losses:?}");
    }
}
