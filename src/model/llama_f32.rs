//! A Llama-family text network (SmolLM2) in f32, with weights dequantized from a GGUF and
//! LoRA-capable linear layers: the trainer fine-tunes it, and `adapted_gguf` answers with it.
//!
//! Two forwards share the weights. The training forward uses only ops with a backward pass
//! (`crate::ops`' RMSNorm, causal softmax, rotary and SiLU gate): candle's fused `rms_norm`,
//! `softmax_last_dim` and `rope` have none, and a graph through them silently yields zero LoRA
//! gradients. The generation forward uses candle's fused ops and a KV cache on merged weights.
//!
//! Weights get Hugging Face names (`model.layers.N.self_attn.q_proj`) and q/k rows are
//! un-permuted from GGUF's rotary layout, so a trained adapter applies to the HF checkpoint in PEFT.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarMap};

use super::ModelError;
use crate::lora::{AdapterConfig, LoraAdapter, LoraLinear, LoraRng};
use crate::ops;

/// The seven linear layers of a block, by their HF suffix, with their GGUF names.
pub const LINEARS: [(&str, &str); 7] = [
    ("self_attn.q_proj", "attn_q"),
    ("self_attn.k_proj", "attn_k"),
    ("self_attn.v_proj", "attn_v"),
    ("self_attn.o_proj", "attn_output"),
    ("mlp.gate_proj", "ffn_gate"),
    ("mlp.up_proj", "ffn_up"),
    ("mlp.down_proj", "ffn_down"),
];

/// Shape hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    pub n_layers: usize,
    pub hidden: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub vocab: usize,
}

impl LlamaConfig {
    /// SmolLM2-135M's shape (for benchmarks with seeded weights where the GGUF is not at hand).
    pub fn smollm2_135m() -> Self {
        Self {
            n_layers: 30,
            hidden: 576,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            intermediate: 1536,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            vocab: 49_152,
        }
    }
}

struct Block {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// In `LINEARS` order.
    linears: Vec<LoraLinear>,
}

/// SmolLM2-style Llama with LoRA-capable linear layers.
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Tensor,
    norm: Tensor,
    blocks: Vec<Block>,
    device: Device,
}

fn md_u32(c: &gguf_file::Content, key: &str, path: &Path) -> Result<usize, ModelError> {
    c.metadata
        .get(key)
        .and_then(|v| v.to_u32().ok())
        .map(|v| v as usize)
        .ok_or_else(|| ModelError::Corrupt {
            path: path.to_owned(),
            reason: format!("metadata key `{key}` missing"),
        })
}

fn md_f32(c: &gguf_file::Content, key: &str) -> Option<f32> {
    c.metadata.get(key).and_then(|v| v.to_f32().ok())
}

/// Undoes GGUF's q/k row permutation for one weight (out, in) with `n_head` heads.
pub fn unpermute_qk(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let hd = out / n_head;
    w.reshape((n_head, hd / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))
}

impl Llama {
    /// Loads and dequantizes a Llama-architecture GGUF to f32.
    pub fn from_gguf(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let base_err = |reason: String| ModelError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| base_err(e.to_string()))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| base_err(e.to_string()))?;
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned();
        if arch.as_deref() != Some("llama") {
            return Err(base_err(format!(
                "architecture {arch:?} is not supported by the f32 Llama network, only \"llama\""
            )));
        }
        let n_layers = md_u32(&content, "llama.block_count", path)?;
        let hidden = md_u32(&content, "llama.embedding_length", path)?;
        let n_heads = md_u32(&content, "llama.attention.head_count", path)?;
        let n_kv_heads = md_u32(&content, "llama.attention.head_count_kv", path)?;
        let rope_theta = md_f32(&content, "llama.rope.freq_base").unwrap_or(10_000.0);
        let rms_eps =
            md_f32(&content, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f64;
        let intermediate = md_u32(&content, "llama.feed_forward_length", path)?;
        let mut get = |name: &str| -> Result<Tensor, ModelError> {
            let q = content
                .tensor(&mut file, name, device)
                .map_err(|e| base_err(format!("tensor `{name}`: {e}")))?;
            Ok(q.dequantize(device)?)
        };
        let embed = get("token_embd.weight")?;
        let norm = get("output_norm.weight")?;
        let vocab = embed.dim(0)?;
        let mut blocks = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let attn_norm = get(&format!("blk.{i}.attn_norm.weight"))?;
            let ffn_norm = get(&format!("blk.{i}.ffn_norm.weight"))?;
            let mut linears = Vec::with_capacity(LINEARS.len());
            for (hf, gg) in LINEARS {
                let mut w = get(&format!("blk.{i}.{gg}.weight"))?;
                if hf == "self_attn.q_proj" {
                    w = unpermute_qk(&w, n_heads)?;
                } else if hf == "self_attn.k_proj" {
                    w = unpermute_qk(&w, n_kv_heads)?;
                }
                linears.push(LoraLinear::frozen(Linear::new(w, None)));
            }
            blocks.push(Block {
                attn_norm,
                ffn_norm,
                linears,
            });
        }
        let cfg = LlamaConfig {
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim: hidden / n_heads,
            intermediate,
            rope_theta,
            rms_eps,
            vocab,
        };
        Ok(Self {
            cfg,
            embed,
            norm,
            blocks,
            device: device.clone(),
        })
    }

    /// A model with seeded random weights, for tests that need a real forward but not a real model.
    pub fn random(cfg: LlamaConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let mut rng = LoraRng::new(seed);
        let mut t = |shape: (usize, usize), bound: f32| -> Result<Tensor, ModelError> {
            Ok(Tensor::from_vec(
                rng.uniform(shape.0 * shape.1, bound),
                shape,
                device,
            )?)
        };
        let h = cfg.hidden;
        let kv = cfg.n_kv_heads * cfg.head_dim;
        let ff = cfg.intermediate;
        let embed = t((cfg.vocab, h), 1.0)?;
        let mut blocks = Vec::new();
        for _ in 0..cfg.n_layers {
            let shapes = [(h, h), (kv, h), (kv, h), (h, h), (ff, h), (ff, h), (h, ff)];
            let mut linears = Vec::new();
            for s in shapes {
                let bound = 1.0 / (s.1 as f32).sqrt();
                linears.push(LoraLinear::frozen(Linear::new(t(s, bound)?, None)));
            }
            let ones = Tensor::ones(h, DType::F32, device)?;
            blocks.push(Block {
                attn_norm: ones.clone(),
                ffn_norm: ones,
                linears,
            });
        }
        let norm = Tensor::ones(h, DType::F32, device)?;
        Ok(Self {
            cfg,
            embed,
            norm,
            blocks,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every linear layer's HF name and (out, in). The output head is the tied embedding and is
    /// not a separate linear layer here.
    pub fn linear_shapes(&self) -> BTreeMap<String, (usize, usize)> {
        let mut out = BTreeMap::new();
        for (i, b) in self.blocks.iter().enumerate() {
            for ((hf, _), l) in LINEARS.iter().zip(&b.linears) {
                if let Ok(s) = l.base().weight().dims2() {
                    out.insert(format!("model.layers.{i}.{hf}"), s);
                }
            }
        }
        out
    }

    fn for_each_linear(
        &mut self,
        mut f: impl FnMut(&str, &mut LoraLinear) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for ((hf, _), l) in LINEARS.iter().zip(b.linears.iter_mut()) {
                f(&format!("model.layers.{i}.{hf}"), l)?;
            }
        }
        Ok(())
    }

    /// Replaces the targeted layers with trainable LoRA layers whose A/B live in `varmap`.
    /// Returns the adapted module names.
    pub fn attach_trainable(
        &mut self,
        cfg: &AdapterConfig,
        varmap: &VarMap,
        rng: &mut LoraRng,
    ) -> Result<Vec<String>, ModelError> {
        let shapes = self.linear_shapes();
        let picked = cfg.select_modules(shapes.keys().map(String::as_str), None)?;
        self.for_each_linear(|name, l| {
            if picked.iter().any(|p| p == name) {
                *l = LoraLinear::trainable_from(cfg, l.base().clone(), name, varmap, rng)?;
            }
            Ok(())
        })?;
        Ok(picked)
    }

    /// Applies a loaded adapter (frozen), after checking it against this model's layers.
    pub fn attach_adapter(&mut self, adapter: &LoraAdapter) -> Result<(), ModelError> {
        adapter.check_against(&self.linear_shapes())?;
        self.for_each_linear(|name, l| {
            *l = adapter.apply(name, l.base().clone())?;
            Ok(())
        })
    }

    /// A frozen copy for generation: LoRA updates merged into the weights and detached from the
    /// training graph.
    pub fn merged_copy(&self) -> Result<Self, ModelError> {
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for b in &self.blocks {
            let mut linears = Vec::with_capacity(b.linears.len());
            for l in &b.linears {
                let w = l.merged_weight()?.detach();
                linears.push(LoraLinear::frozen(Linear::new(w, None)));
            }
            blocks.push(Block {
                attn_norm: b.attn_norm.clone(),
                ffn_norm: b.ffn_norm.clone(),
                linears,
            });
        }
        Ok(Self {
            cfg: self.cfg.clone(),
            embed: self.embed.clone(),
            norm: self.norm.clone(),
            blocks,
            device: self.device.clone(),
        })
    }

    /// The merged f32 weights under HF names (`model.layers.N.self_attn.q_proj.weight`, …), for a
    /// merged checkpoint.
    pub fn merged_state_dict(&self) -> Result<BTreeMap<String, Tensor>, ModelError> {
        let mut out = BTreeMap::new();
        out.insert("model.embed_tokens.weight".to_owned(), self.embed.clone());
        out.insert("model.norm.weight".to_owned(), self.norm.clone());
        for (i, b) in self.blocks.iter().enumerate() {
            out.insert(
                format!("model.layers.{i}.input_layernorm.weight"),
                b.attn_norm.clone(),
            );
            out.insert(
                format!("model.layers.{i}.post_attention_layernorm.weight"),
                b.ffn_norm.clone(),
            );
            for ((hf, _), l) in LINEARS.iter().zip(&b.linears) {
                out.insert(
                    format!("model.layers.{i}.{hf}.weight"),
                    l.merged_weight()?.detach(),
                );
            }
        }
        Ok(out)
    }

    fn rope_tables(&self, start: usize, len: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let hd = self.cfg.head_dim;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / self.cfg.rope_theta.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let inv = Tensor::from_vec(inv, (1, hd / 2), &self.device)?;
        let pos: Vec<f32> = (start..start + len).map(|p| p as f32).collect();
        let pos = Tensor::from_vec(pos, (len, 1), &self.device)?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok((freqs.cos()?, freqs.sin()?))
    }

    /// The differentiable forward: final hidden states (B, T, H) for token ids (B, T). Right
    /// padding needs no key mask: the causal mask already keeps real tokens from seeing later pads.
    pub fn forward_train(&self, ids: &Tensor, rng: &mut LoraRng) -> Result<Tensor, ModelError> {
        let (b, t) = ids.dims2()?;
        let c = &self.cfg;
        let mut x = self
            .embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, c.hidden))?;
        let (cos, sin) = self.rope_tables(0, t)?;
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for blk in &self.blocks {
            let h = ops::rms_norm(&x, &blk.attn_norm, c.rms_eps as f32)?;
            let l = &blk.linears;
            let heads = |y: Tensor, n: usize| {
                y.reshape((b, t, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(l[0].forward_train(&h, rng)?, c.n_heads)?;
            let k = heads(l[1].forward_train(&h, rng)?, c.n_kv_heads)?;
            let v = heads(l[2].forward_train(&h, rng)?, c.n_kv_heads)?;
            let q = ops::rope(&q, &cos, &sin)?;
            let k = ops::rope(&k, &cos, &sin)?;
            let y = ops::causal_attention(&q, &k, &v, scale)?
                .transpose(1, 2)?
                .reshape((b, t, c.hidden))?;
            x = (x + l[3].forward_train(&y, rng)?)?;
            let h = ops::rms_norm(&x, &blk.ffn_norm, c.rms_eps as f32)?;
            let g = l[4].forward_train(&h, rng)?;
            let u = l[5].forward_train(&h, rng)?;
            x = (x + l[6].forward_train(&ops::silu_mul(&g, &u)?, rng)?)?;
        }
        Ok(ops::rms_norm(&x, &self.norm, c.rms_eps as f32)?)
    }

    /// Summed cross-entropy over the target positions of a padded batch. `positions` index the
    /// flattened (B·T) hidden states whose next token is `targets`; only those rows go through
    /// the output head, so prompt and padding cost no vocabulary matmul.
    pub fn loss_sum(
        &self,
        ids: &Tensor,
        positions: &Tensor,
        targets: &Tensor,
        rng: &mut LoraRng,
    ) -> Result<Tensor, ModelError> {
        let hidden = self.forward_train(ids, rng)?;
        let (b, t, h) = hidden.dims3()?;
        let picked = hidden.reshape((b * t, h))?.index_select(positions, 0)?;
        let logits = crate::lora::frozen::frozen_matmul(&picked, &self.embed)?;
        Ok(ops::nll(&logits, targets)?.sum_all()?)
    }

    /// Logits (B, T, V) of every position, through the training forward (with `rng`'s dropout when
    /// the LoRA layers have any).
    pub fn logits(&self, ids: &Tensor, rng: &mut LoraRng) -> Result<Tensor, ModelError> {
        let hidden = self.forward_train(ids, rng)?;
        Ok(hidden.broadcast_matmul(&self.embed.t()?)?)
    }

    /// Next-token logits (V) of the last position, feeding `ids` after `cache` (fused ops; use on
    /// a `merged_copy`).
    pub fn forward_cached(&self, ids: &[u32], cache: &mut KvCache) -> Result<Tensor, ModelError> {
        let c = &self.cfg;
        let t = ids.len();
        let start = cache.len;
        let input = Tensor::new(ids, &self.device)?;
        let mut x = self.embed.index_select(&input, 0)?.unsqueeze(0)?;
        let (cos, sin) = self.rope_tables(start, t)?;
        let total = start + t;
        let mask = if t > 1 {
            let m: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..total).map(move |j| {
                        if j > start + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            Some(Tensor::from_vec(m, (t, total), &self.device)?)
        } else {
            None
        };
        let scale = 1.0 / (c.head_dim as f64).sqrt();
        for (li, blk) in self.blocks.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &blk.attn_norm, c.rms_eps as f32)?;
            let l = &blk.linears;
            let heads = |y: Tensor, n: usize| {
                y.reshape((1, t, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = heads(l[0].forward(&h)?, c.n_heads)?;
            let k = heads(l[1].forward(&h)?, c.n_kv_heads)?;
            let v = heads(l[2].forward(&h)?, c.n_kv_heads)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;
            let (k, v) = match cache.layers.get(li) {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            if li < cache.layers.len() {
                cache.layers[li] = (k.clone(), v.clone());
            } else {
                cache.layers.push((k.clone(), v.clone()));
            }
            let rep = c.n_heads / c.n_kv_heads;
            let k = repeat_kv(k, rep)?;
            let v = repeat_kv(v, rep)?;
            let mut att = (q.matmul(&k.t()?)? * scale)?;
            if let Some(m) = &mask {
                att = att.broadcast_add(m)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((1, t, c.hidden))?;
            x = (x + l[3].forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &blk.ffn_norm, c.rms_eps as f32)?;
            let g = l[4].forward(&h)?.silu()?;
            let u = l[5].forward(&h)?;
            x = (x + l[6].forward(&(g * u)?)?)?;
        }
        cache.len = total;
        let last = x.i((0, t - 1))?;
        let last = candle_nn::ops::rms_norm(&last.unsqueeze(0)?, &self.norm, c.rms_eps as f32)?;
        Ok(last.matmul(&self.embed.t()?)?.squeeze(0)?)
    }
}

/// Keys and values of the positions fed so far, per layer.
#[derive(Default)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: usize,
}

fn repeat_kv(x: Tensor, rep: usize) -> candle_core::Result<Tensor> {
    if rep == 1 {
        return Ok(x);
    }
    let (b, n, t, d) = x.dims4()?;
    Tensor::cat(&vec![&x; rep], 2)?.reshape((b, n * rep, t, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lora::TargetModules;

    pub fn tiny() -> Llama {
        let cfg = LlamaConfig {
            n_layers: 2,
            hidden: 16,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 4,
            intermediate: 24,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            vocab: 11,
        };
        Llama::random(cfg, 1, &Device::Cpu).unwrap()
    }

    #[test]
    fn every_lora_tensor_gets_a_nonzero_gradient() {
        let mut m = tiny();
        let varmap = VarMap::new();
        let mut rng = LoraRng::new(2);
        let cfg = AdapterConfig::new(2, 4.0, 0.0, TargetModules::Pattern("all-linear".into()));
        m.attach_trainable(&cfg, &varmap, &mut rng).unwrap();
        // B starts at zero, which zeroes A's gradient; give B a value so both must be reached.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.ends_with("lora_B.weight") {
                let (o, r) = var.as_tensor().dims2().unwrap();
                var.set(&Tensor::from_vec(rng.uniform(o * r, 0.1), (o, r), &Device::Cpu).unwrap())
                    .unwrap();
            }
        }
        let ids = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 0, 0]], &Device::Cpu).unwrap();
        let pos = Tensor::new(&[1u32, 2, 3, 5, 6], &Device::Cpu).unwrap();
        let tgt = Tensor::new(&[3u32, 4, 5, 8, 0], &Device::Cpu).unwrap();
        let loss = m.loss_sum(&ids, &pos, &tgt, &mut rng).unwrap();
        let grads = loss.backward().unwrap();
        crate::lora::assert_every_variable_has_a_gradient(&varmap, &grads, 2 * 7 * 2);
    }

    #[test]
    fn cached_generation_matches_the_training_forward() {
        let m = tiny();
        let ids = [1u32, 5, 2, 7, 3];
        let mut rng = LoraRng::new(3);
        let t = Tensor::new(&ids, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let h = m.forward_train(&t, &mut rng).unwrap();
        let full = h
            .i((0, 4))
            .unwrap()
            .unsqueeze(0)
            .unwrap()
            .matmul(&m.embed.t().unwrap())
            .unwrap();
        let mut cache = KvCache::default();
        m.forward_cached(&ids[..3], &mut cache).unwrap();
        m.forward_cached(&ids[3..4], &mut cache).unwrap();
        let step = m.forward_cached(&ids[4..], &mut cache).unwrap();
        let d = (full.squeeze(0).unwrap() - step)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4, "{d}");
    }

    #[test]
    fn unpermute_inverts_the_gguf_layout() {
        // GGUF stores, per head, the even rotary rows then the odd ones interleaved pairwise; build
        // that layout from known HF rows and check the round trip.
        let hf = Tensor::arange(0f32, 8.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let gguf = hf
            .reshape((2, 2, 2, 1))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((8, 1))
            .unwrap();
        let back = unpermute_qk(&gguf, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
