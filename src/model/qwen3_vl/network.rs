//! The Qwen3-VL network: the vision tower with DeepStack features and the mrope text decoder,
//! with the prefill and decode steps the generation loop (`model::decode`) drives, one prompt at a
//! time (`start_logits`, `step_logits`) or a left-padded batch in lockstep (`BatchDecode`).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::Config;
use super::linear::AdapterSet;
use super::processor::Prepared;
use super::prompt;
use super::text::{self, Deepstack, TextModel};
use super::vision::{self, VisionModel};
use crate::image::Pixels;
use crate::model::decode::{self, DecodeOptions, StepLogits};
use crate::model::ModelError;

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

    /// Greedy generation for a batch of prompts (left-padded together), through the one
    /// generation loop. Returns the generated ids of each row, stop token excluded.
    pub fn generate(
        &mut self,
        batch: &[&Prepared],
        max_new_tokens: usize,
        stop: &[u32],
        pad: u32,
    ) -> Result<Vec<Vec<u32>>, ModelError> {
        // Greedy decoding reads no token bytes: the network has no tokenizer to give them.
        let mut rows = BatchDecode::new(self, batch, stop, pad, &[]);
        let out = decode::decode(&mut rows, &DecodeOptions::greedy(max_new_tokens))?;
        Ok(out.into_iter().map(|d| d.ids).collect())
    }
}

/// A batch of prompts decoded in lockstep: left-padded to one length, prefilled together, then
/// fed one token per row with each row's own rotary offset (and a padding mask when the prompts
/// differ in length).
pub struct BatchDecode<'a> {
    net: &'a mut Network,
    batch: &'a [&'a Prepared],
    stop: &'a [u32],
    pad: u32,
    vocab: &'a [Option<Vec<u8>>],
    /// The padded prompt length.
    len: usize,
    /// Per row, which cached positions are real tokens.
    valid: Vec<Vec<bool>>,
    /// Per row, its text rotary position minus its cache index.
    deltas: Vec<i64>,
    padded: bool,
    /// Decode steps fed so far.
    steps: usize,
}

impl<'a> BatchDecode<'a> {
    /// The rows of `batch`; `stop` ends a row, `pad` fills the left padding, `vocab` gives token
    /// bytes (only constrained decoding and logprobs read them).
    pub fn new(
        net: &'a mut Network,
        batch: &'a [&'a Prepared],
        stop: &'a [u32],
        pad: u32,
        vocab: &'a [Option<Vec<u8>>],
    ) -> Self {
        Self {
            net,
            batch,
            stop,
            pad,
            vocab,
            len: 0,
            valid: Vec::new(),
            deltas: Vec::new(),
            padded: false,
            steps: 0,
        }
    }
}

impl StepLogits for BatchDecode<'_> {
    fn rows(&self) -> usize {
        self.batch.len()
    }

    fn prefill(&mut self) -> Result<Vec<Vec<f32>>, ModelError> {
        let net = &mut *self.net;
        net.reset();
        let len = self.batch.iter().map(|p| p.ids.len()).max().unwrap_or(0);
        let mut valid: Vec<Vec<bool>> = Vec::with_capacity(self.batch.len());
        let mut pos: [Vec<Vec<i64>>; 3] = Default::default();
        let mut deltas = Vec::with_capacity(self.batch.len());
        for p in self.batch {
            let padn = len - p.ids.len();
            let (rp, _) = net.positions(p)?;
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
        let h = net.prefill(self.batch, &pos, &valid, self.pad)?;
        // Contiguous: cuBLAS takes no row-strided left operand (the CPU backend does).
        let last = h.narrow(1, len - 1, 1)?.squeeze(1)?.contiguous()?;
        let logits = net.text.logits(&last)?;
        self.padded = valid.iter().any(|r| r.iter().any(|v| !v));
        self.len = len;
        self.valid = valid;
        self.deltas = deltas;
        self.steps = 0;
        logit_rows(&logits)
    }

    fn step(&mut self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, ModelError> {
        let past = self.len + self.steps;
        let positions: Vec<i64> = self.deltas.iter().map(|d| past as i64 + d).collect();
        let mask = if self.padded {
            for row in &mut self.valid {
                row.push(true);
            }
            Some(text::attention_mask(
                &self.valid,
                past,
                1,
                &self.net.device,
            )?)
        } else {
            None
        };
        let logits = self
            .net
            .decode_step(tokens.to_vec(), positions, mask.as_ref())?;
        self.steps += 1;
        logit_rows(&logits)
    }

    fn eos_tokens(&self) -> &[u32] {
        self.stop
    }

    fn vocab_bytes(&self) -> &[Option<Vec<u8>>] {
        self.vocab
    }
}

/// Rows of `(b, vocab)` logits as one vector per row (f32).
fn logit_rows(logits: &Tensor) -> Result<Vec<Vec<f32>>, ModelError> {
    Ok(logits.to_dtype(DType::F32)?.to_vec2::<f32>()?)
}
