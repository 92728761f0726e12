//! The Qwen3-VL language model: a Qwen3 decoder (q/k RMS norms, grouped-query attention) with
//! interleaved multimodal rotary positions, a causal mask that also hides left padding, a KV cache
//! that can be reset, and the DeepStack additions of visual features after the first layers.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::{Embedding, RmsNorm, VarBuilder};

use super::config::TextConfig;
use super::linear::Proj;

/// Multimodal rotary embedding: which of the (t, h, w) position rows drives each frequency.
///
/// Qwen3-VL interleaves the sections: frequency `j` follows `h` when `j % 3 == 1` and
/// `j < 3 * section[1]`, `w` when `j % 3 == 2` and `j < 3 * section[2]`, else `t`.
#[derive(Debug, Clone)]
pub struct MropeTable {
    inv_freq: Vec<f32>,
    axis: Vec<usize>,
}

impl MropeTable {
    pub fn new(cfg: &TextConfig) -> Self {
        let half = cfg.head_dim / 2;
        let base = cfg.rope_theta as f32;
        // Computed in f32 like the reference: 1 / base^(2i / dim).
        let inv_freq = (0..half)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / cfg.head_dim as f32))
            .collect();
        let axis = (0..half)
            .map(|j| {
                if j % 3 == 1 && j < 3 * cfg.mrope_section[1] {
                    1
                } else if j % 3 == 2 && j < 3 * cfg.mrope_section[2] {
                    2
                } else {
                    0
                }
            })
            .collect();
        Self { inv_freq, axis }
    }

    /// `(cos, sin)`, each `(batch, seq, head_dim / 2)` f32, for positions `[axis][batch][seq]`.
    pub fn cos_sin(&self, pos: &[Vec<Vec<i64>>; 3], device: &Device) -> Result<(Tensor, Tensor)> {
        let (b, l) = (pos[0].len(), pos[0].first().map_or(0, Vec::len));
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(b * l * half);
        let mut sin = Vec::with_capacity(b * l * half);
        for (rt, (rh, rw)) in pos[0].iter().zip(pos[1].iter().zip(&pos[2])) {
            for ((&t, &h), &w) in rt.iter().zip(rh).zip(rw) {
                let p = [t, h, w];
                for (j, f) in self.inv_freq.iter().enumerate() {
                    let angle = p[self.axis[j]] as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (b, l, half), device)?,
            Tensor::from_vec(sin, (b, l, half), device)?,
        ))
    }
}

struct Attention {
    q: Proj,
    k: Proj,
    v: Proj,
    o: Proj,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    cache: Option<KvCache>,
}

/// Keys and values of the past positions `(b, kv_heads, capacity, head_dim)`, in buffers that
/// grow by doubling: a decode step writes its one position in place instead of copying the
/// whole cache (as concatenation would, at every step and layer).
struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
}

impl KvCache {
    /// Appends `k`, `v` `(b, kv_heads, l, head_dim)` (contiguous) and returns views of all the
    /// keys and values held, the new ones included.
    fn append(slot: &mut Option<KvCache>, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, kvh, l, hd) = k.dims4()?;
        let held = slot.as_ref().map_or(0, |c| c.len);
        let cap = slot.as_ref().map_or(0, |c| c.k.dim(2).unwrap_or(0));
        if held + l > cap {
            let new_cap = (held + l).next_power_of_two().max(64);
            let grow = |old: Option<&Tensor>| -> Result<Tensor> {
                let t = Tensor::zeros((b, kvh, new_cap, hd), k.dtype(), k.device())?;
                if let Some(old) = old {
                    t.slice_set(old, 2, 0)?;
                }
                Ok(t)
            };
            let (nk, nv) = (
                grow(slot.as_ref().map(|c| &c.k))?,
                grow(slot.as_ref().map(|c| &c.v))?,
            );
            *slot = Some(KvCache {
                k: nk,
                v: nv,
                len: held,
            });
        }
        let c = slot
            .as_mut()
            .ok_or_else(|| candle_core::Error::Msg("KV cache missing after growth".into()))?;
        c.k.slice_set(k, 2, c.len)?;
        c.v.slice_set(v, 2, c.len)?;
        c.len += l;
        Ok((c.k.narrow(2, 0, c.len)?, c.v.narrow(2, 0, c.len)?))
    }
}

impl Attention {
    fn new(cfg: &TextConfig, vb: VarBuilder, adapters: &super::linear::AdapterSet) -> Result<Self> {
        let (h, kvh, hd) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
        );
        let bias = cfg.attention_bias;
        Ok(Self {
            q: Proj::load(cfg.hidden_size, h * hd, bias, vb.pp("q_proj"), adapters)?,
            k: Proj::load(cfg.hidden_size, kvh * hd, bias, vb.pp("k_proj"), adapters)?,
            v: Proj::load(cfg.hidden_size, kvh * hd, bias, vb.pp("v_proj"), adapters)?,
            o: Proj::load(h * hd, cfg.hidden_size, bias, vb.pp("o_proj"), adapters)?,
            q_norm: candle_nn::rms_norm(hd, cfg.rms_norm_eps, vb.pp("q_norm"))?,
            k_norm: candle_nn::rms_norm(hd, cfg.rms_norm_eps, vb.pp("k_norm"))?,
            heads: h,
            kv_heads: kvh,
            head_dim: hd,
            cache: None,
        })
    }

    fn forward(
        &mut self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let hd = self.head_dim;
        let q = self.q.forward(x)?.reshape((b, l, self.heads, hd))?;
        let k = self.k.forward(x)?.reshape((b, l, self.kv_heads, hd))?;
        let v = self.v.forward(x)?.reshape((b, l, self.kv_heads, hd))?;
        let q = self.q_norm.forward(&q)?.transpose(1, 2)?.contiguous()?;
        let k = self.k_norm.forward(&k)?.transpose(1, 2)?.contiguous()?;
        let v = v.transpose(1, 2)?.contiguous()?;
        // Rotary embedding in the model's dtype with cos/sin cast to it, as the reference does
        // (`cos.to(x.dtype)`); the tables themselves are computed in f32.
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        let (k, v) = KvCache::append(&mut self.cache, &k, &v)?;
        let t = k.dim(2)?;
        let rep = self.heads / self.kv_heads;
        // Group the query heads that share a KV head so no key/value copy is needed.
        let qg = q.reshape((b, self.kv_heads, rep * l, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        // Scores, scale and mask in the model's dtype, as the reference's eager attention
        // computes them; the softmax kernel accumulates in f32 for bf16/f16 and rounds its
        // output to the model's dtype, as the reference's `softmax(.., dtype=float32).to(dtype)`.
        let scores = (qg.matmul(&k.t()?)? * scale)?;
        let scores = scores.reshape((b, self.heads, l, t))?;
        let scores = match mask {
            Some(m) => scores.broadcast_add(m)?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs.reshape((b, self.kv_heads, rep * l, t))?.matmul(&v)?;
        let out = out
            .reshape((b, self.heads, l, hd))?
            .transpose(1, 2)?
            .reshape((b, l, self.heads * hd))?;
        self.o.forward(&out)
    }
}

struct Mlp {
    gate: Proj,
    up: Proj,
    down: Proj,
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let g = candle_nn::ops::silu(&self.gate.forward(x)?)?;
        self.down.forward(&(g * self.up.forward(x)?)?)
    }
}

struct Layer {
    attn: Attention,
    mlp: Mlp,
    input_norm: RmsNorm,
    post_norm: RmsNorm,
}

/// The decoder stack with embeddings and the LM head.
pub struct TextModel {
    embed: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    lm_head: Proj,
    pub rope: MropeTable,
    pub cfg: TextConfig,
}

/// Visual rows to add after the first decoder layers: flat `(batch·seq)` indices and one
/// `(n, hidden)` tensor per DeepStack layer.
pub struct Deepstack<'a> {
    pub indices: &'a Tensor,
    pub features: &'a [Tensor],
}

impl TextModel {
    /// Loads from `model.language_model.*` (and `lm_head`, or the tied embeddings).
    pub fn new(
        cfg: &TextConfig,
        vb: VarBuilder,
        lm_head_vb: Option<VarBuilder>,
        adapters: &super::linear::AdapterSet,
    ) -> Result<Self> {
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp("embed_tokens"))?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let lvb = vb.pp(format!("layers.{i}"));
            let mvb = lvb.pp("mlp");
            let (h, m) = (cfg.hidden_size, cfg.intermediate_size);
            layers.push(Layer {
                attn: Attention::new(cfg, lvb.pp("self_attn"), adapters)?,
                mlp: Mlp {
                    gate: Proj::load(h, m, false, mvb.pp("gate_proj"), adapters)?,
                    up: Proj::load(h, m, false, mvb.pp("up_proj"), adapters)?,
                    down: Proj::load(m, h, false, mvb.pp("down_proj"), adapters)?,
                },
                input_norm: candle_nn::rms_norm(h, cfg.rms_norm_eps, lvb.pp("input_layernorm"))?,
                post_norm: candle_nn::rms_norm(
                    h,
                    cfg.rms_norm_eps,
                    lvb.pp("post_attention_layernorm"),
                )?,
            });
        }
        let norm = candle_nn::rms_norm(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        let lm_head = match lm_head_vb {
            Some(hvb) => Proj::load(cfg.hidden_size, cfg.vocab_size, false, hvb, adapters)?,
            None => Proj::from_weight(embed.embeddings().clone(), None),
        };
        Ok(Self {
            embed,
            layers,
            norm,
            lm_head,
            rope: MropeTable::new(cfg),
            cfg: cfg.clone(),
        })
    }

    /// Token embeddings `(batch, seq, hidden)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.embed.forward(ids)
    }

    /// Clears the KV cache of every layer.
    pub fn reset_cache(&mut self) {
        for l in &mut self.layers {
            l.attn.cache = None;
        }
    }

    /// Tokens held in the KV cache.
    pub fn cached_len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.attn.cache.as_ref())
            .map_or(0, |c| c.len)
    }

    /// Runs the decoder on `embeds` `(b, l, hidden)` after what the cache holds; returns the
    /// final-normed hidden states `(b, l, hidden)`.
    pub fn forward_hidden(
        &mut self,
        embeds: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        deepstack: Option<&Deepstack<'_>>,
    ) -> Result<Tensor> {
        let (b, l, h) = embeds.dims3()?;
        let (cos, sin) = (
            cos_sin.0.to_dtype(embeds.dtype())?,
            cos_sin.1.to_dtype(embeds.dtype())?,
        );
        let mask = mask.map(|m| m.to_dtype(embeds.dtype())).transpose()?;
        let mut x = embeds.clone();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let r = x.clone();
            let a =
                layer
                    .attn
                    .forward(&layer.input_norm.forward(&x)?, &cos, &sin, mask.as_ref())?;
            let x1 = (r + a)?;
            let m = layer.mlp.forward(&layer.post_norm.forward(&x1)?)?;
            x = (x1 + m)?;
            if let Some(ds) = deepstack {
                if let Some(feat) = ds.features.get(i) {
                    let flat = x.reshape((b * l, h))?;
                    let flat = flat.index_add(ds.indices, &feat.to_dtype(flat.dtype())?, 0)?;
                    x = flat.reshape((b, l, h))?;
                }
            }
        }
        self.norm.forward(&x)
    }

    /// Logits `(b, vocab)` in f32 for hidden states `(b, hidden)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }
}

/// Additive attention mask `(b, 1, l, past + l)` in f32: query `i` of row `b` (at absolute
/// position `past + i`) sees key `j` when `j <= past + i` and key `j` is not padding. A padding
/// query sees itself so its softmax stays finite; its output is never used.
pub fn attention_mask(
    valid: &[Vec<bool>],
    past: usize,
    l: usize,
    device: &Device,
) -> Result<Tensor> {
    let b = valid.len();
    let t = past + l;
    let mut data = vec![0f32; b * l * t];
    for (bi, row) in valid.iter().enumerate() {
        for i in 0..l {
            let qpos = past + i;
            for j in 0..t {
                let visible = j <= qpos && row.get(j).copied().unwrap_or(true);
                let own = j == qpos;
                if !(visible || own) {
                    data[(bi * l + i) * t + j] = f32::NEG_INFINITY;
                }
            }
        }
    }
    Tensor::from_vec(data, (b, 1, l, t), device)
}

/// Greedy choice per row of `(b, vocab)` logits.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    logits.argmax(D::Minus1)?.to_vec1::<u32>()
}
