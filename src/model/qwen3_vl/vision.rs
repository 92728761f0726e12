//! The Qwen3-VL vision tower: patch embedding, interpolated learned position embeddings, 2-D
//! rotary attention within each image, the 2×2 patch merger, and the DeepStack mergers whose
//! outputs are added to the first decoder layers.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use super::config::VisionConfig;
use super::linear::{AdapterSet, Proj};

struct Block {
    norm1: LayerNorm,
    norm2: LayerNorm,
    qkv: Proj,
    proj: Proj,
    fc1: Proj,
    fc2: Proj,
}

struct Merger {
    norm: LayerNorm,
    fc1: Proj,
    fc2: Proj,
    postshuffle: bool,
    merged_dim: usize,
}

impl Merger {
    fn new(cfg: &VisionConfig, postshuffle: bool, vb: VarBuilder, ad: &AdapterSet) -> Result<Self> {
        let merged_dim = cfg.hidden_size * cfg.spatial_merge_size * cfg.spatial_merge_size;
        let norm_dim = if postshuffle {
            merged_dim
        } else {
            cfg.hidden_size
        };
        Ok(Self {
            norm: candle_nn::layer_norm(norm_dim, 1e-6, vb.pp("norm"))?,
            fc1: Proj::load(merged_dim, merged_dim, true, vb.pp("linear_fc1"), ad)?,
            fc2: Proj::load(
                merged_dim,
                cfg.out_hidden_size,
                true,
                vb.pp("linear_fc2"),
                ad,
            )?,
            postshuffle,
            merged_dim,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.postshuffle {
            self.norm.forward(&x.reshape(((), self.merged_dim))?)?
        } else {
            self.norm.forward(x)?.reshape(((), self.merged_dim))?
        };
        self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)
    }
}

/// Output of the vision tower for a list of images.
pub struct VisionOutput {
    /// `(Σ tokens, out_hidden)`: one row per image placeholder token, images in order.
    pub embeds: Tensor,
    /// One `(Σ tokens, out_hidden)` tensor per DeepStack layer.
    pub deepstack: Vec<Tensor>,
}

pub struct VisionModel {
    patch_embed: Proj,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    merger: Merger,
    deepstack: Vec<Merger>,
    cfg: VisionConfig,
}

impl VisionModel {
    /// Loads from `model.visual.*`.
    pub fn new(cfg: &VisionConfig, vb: VarBuilder, ad: &AdapterSet) -> Result<Self> {
        let (c, t, p, d) = (
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.hidden_size,
        );
        let pvb = vb.pp("patch_embed").pp("proj");
        // The Conv3d has stride equal to its kernel, so it is a linear map of each flattened patch.
        let w = pvb
            .get((d, c, t, p, p), "weight")?
            .reshape((d, c * t * p * p))?;
        let patch_embed = Proj::from_weight(w, Some(pvb.get(d, "bias")?));
        let pos_embed = vb
            .pp("pos_embed")
            .get((cfg.num_position_embeddings, d), "weight")?;
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let b = vb.pp(format!("blocks.{i}"));
            blocks.push(Block {
                norm1: candle_nn::layer_norm(d, 1e-6, b.pp("norm1"))?,
                norm2: candle_nn::layer_norm(d, 1e-6, b.pp("norm2"))?,
                qkv: Proj::load(d, 3 * d, true, b.pp("attn").pp("qkv"), ad)?,
                proj: Proj::load(d, d, true, b.pp("attn").pp("proj"), ad)?,
                fc1: Proj::load(
                    d,
                    cfg.intermediate_size,
                    true,
                    b.pp("mlp").pp("linear_fc1"),
                    ad,
                )?,
                fc2: Proj::load(
                    cfg.intermediate_size,
                    d,
                    true,
                    b.pp("mlp").pp("linear_fc2"),
                    ad,
                )?,
            });
        }
        let merger = Merger::new(cfg, false, vb.pp("merger"), ad)?;
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|i| Merger::new(cfg, true, vb.pp(format!("deepstack_merger_list.{i}")), ad))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            pos_embed,
            blocks,
            merger,
            deepstack,
            cfg: cfg.clone(),
        })
    }

    /// Bilinear interpolation of the learned position grid to each image's patch grid, rows in
    /// merge-window order (the reference's `fast_pos_embed_interpolate`).
    fn position_embeddings(&self, grids: &[[usize; 3]]) -> Result<Tensor> {
        let n = (self.cfg.num_position_embeddings as f64).sqrt() as usize;
        let m = self.cfg.spatial_merge_size;
        let mut idx: [Vec<u32>; 4] = Default::default();
        let mut wts: [Vec<f32>; 4] = Default::default();
        for &[t, h, w] in grids {
            let hs = linspace(n, h);
            let ws = linspace(n, w);
            let mut corner_idx: [Vec<u32>; 4] = Default::default();
            let mut corner_w: [Vec<f32>; 4] = Default::default();
            for &hv in &hs {
                let hf = hv as usize;
                let hc = (hf + 1).min(n - 1);
                let dh = hv - hf as f32;
                for &wv in &ws {
                    let wf = wv as usize;
                    let wc = (wf + 1).min(n - 1);
                    let dw = wv - wf as f32;
                    let corners = [
                        (hf * n + wf, (1.0 - dh) * (1.0 - dw)),
                        (hf * n + wc, (1.0 - dh) * dw),
                        (hc * n + wf, dh * (1.0 - dw)),
                        (hc * n + wc, dh * dw),
                    ];
                    for (k, (i, wt)) in corners.into_iter().enumerate() {
                        corner_idx[k].push(i as u32);
                        corner_w[k].push(wt);
                    }
                }
            }
            // Reorder (h, w) rows into merge windows, repeated for each frame.
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for mh in 0..m {
                            for mw in 0..m {
                                let r = (bh * m + mh) * w + bw * m + mw;
                                for k in 0..4 {
                                    idx[k].push(corner_idx[k][r]);
                                    wts[k].push(corner_w[k][r]);
                                }
                            }
                        }
                    }
                }
            }
        }
        let dev = self.pos_embed.device();
        let dtype = self.pos_embed.dtype();
        let mut acc: Option<Tensor> = None;
        for k in 0..4 {
            let rows = idx[k].len();
            let i = Tensor::from_vec(std::mem::take(&mut idx[k]), rows, dev)?;
            let w =
                Tensor::from_vec(std::mem::take(&mut wts[k]), (rows, 1), dev)?.to_dtype(dtype)?;
            let term = self.pos_embed.index_select(&i, 0)?.broadcast_mul(&w)?;
            acc = Some(match acc {
                None => term,
                Some(a) => (a + term)?,
            });
        }
        acc.ok_or_else(|| candle_core::Error::Msg("no images".into()))
    }

    /// `(cos, sin)` `(Σ patches, head_dim / 2)` f32 for the 2-D rotary embedding: the first
    /// quarter of the head follows the patch row, the second the patch column.
    fn rotary(&self, grids: &[[usize; 3]], device: &Device) -> Result<(Tensor, Tensor)> {
        let head_dim = self.cfg.hidden_size / self.cfg.num_heads;
        let dim = head_dim / 2;
        let inv: Vec<f32> = (0..dim / 2)
            .map(|i| 1.0 / 10000f32.powf((2 * i) as f32 / dim as f32))
            .collect();
        let m = self.cfg.spatial_merge_size;
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for &[t, h, w] in grids {
            for _ in 0..t {
                for bh in 0..h / m {
                    for bw in 0..w / m {
                        for mh in 0..m {
                            for mw in 0..m {
                                let (row, col) = ((bh * m + mh) as f32, (bw * m + mw) as f32);
                                for pos in [row, col] {
                                    for f in &inv {
                                        let a = pos * f;
                                        cos.push(a.cos());
                                        sin.push(a.sin());
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let rows = cos.len() / dim;
        Ok((
            Tensor::from_vec(cos, (rows, dim), device)?,
            Tensor::from_vec(sin, (rows, dim), device)?,
        ))
    }

    /// Runs the tower on patch rows `(Σ t·h·w, C·T·P·P)` of images with the given grids.
    pub fn forward(&self, pixels: &Tensor, grids: &[[usize; 3]]) -> Result<VisionOutput> {
        let dtype = self.pos_embed.dtype();
        let dev = pixels.device().clone();
        let x = self.patch_embed.forward(&pixels.to_dtype(dtype)?)?;
        let mut x = (x + self.position_embeddings(grids)?)?;
        let (cos, sin) = self.rotary(grids, &dev)?;
        let heads = self.cfg.num_heads;
        let d = self.cfg.hidden_size;
        let hd = d / heads;
        let lens: Vec<usize> = grids
            .iter()
            .flat_map(|&[t, h, w]| std::iter::repeat_n(h * w, t))
            .collect();
        let mut ds_out = Vec::with_capacity(self.deepstack.len());
        for (li, blk) in self.blocks.iter().enumerate() {
            let n = x.dim(0)?;
            let qkv = blk
                .qkv
                .forward(&blk.norm1.forward(&x)?)?
                .reshape((n, 3, heads, hd))?;
            let mut outs = Vec::with_capacity(lens.len());
            let mut start = 0;
            let mut i = 0;
            // Attention stays within each image; consecutive images with the same patch count
            // go through it together as one batch (same arithmetic, one set of kernels).
            while i < lens.len() {
                let len = lens[i];
                let n = lens[i..].iter().take_while(|&&l| l == len).count();
                let rows = n * len;
                let part = qkv
                    .narrow(0, start, rows)?
                    .reshape((n, len, 3, heads, hd))?;
                let c = cos.narrow(0, start, rows)?.reshape((n, len, ()))?;
                let s = sin.narrow(0, start, rows)?.reshape((n, len, ()))?;
                // (n, len, 3, heads, hd) -> three (n, heads, len, hd)
                let get = |k: usize| -> Result<Tensor> {
                    part.narrow(2, k, 1)?
                        .squeeze(2)?
                        .transpose(1, 2)?
                        .contiguous()
                };
                let q = candle_nn::rotary_emb::rope(&get(0)?.to_dtype(DType::F32)?, &c, &s)?;
                let k = candle_nn::rotary_emb::rope(&get(1)?.to_dtype(DType::F32)?, &c, &s)?;
                let v = get(2)?;
                let scale = 1.0 / (hd as f64).sqrt();
                let q = q.to_dtype(dtype)?;
                let k = k.to_dtype(dtype)?;
                // In the model's dtype like the reference; the softmax accumulates in f32.
                let scores = (q.matmul(&k.t()?)? * scale)?;
                let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                let o = probs.matmul(&v)?; // (n, heads, len, hd)
                outs.push(o.transpose(1, 2)?.reshape((rows, d))?);
                start += rows;
                i += n;
            }
            let attn = blk.proj.forward(&Tensor::cat(&outs, 0)?)?;
            let x1 = (x + attn)?;
            let mlp = blk
                .fc2
                .forward(&blk.fc1.forward(&blk.norm2.forward(&x1)?)?.gelu()?)?;
            x = (x1 + mlp)?;
            if let Some(pos) = self
                .cfg
                .deepstack_visual_indexes
                .iter()
                .position(|&i| i == li)
            {
                ds_out.push(self.deepstack[pos].forward(&x)?);
            }
        }
        Ok(VisionOutput {
            embeds: self.merger.forward(&x)?,
            deepstack: ds_out,
        })
    }
}

/// `torch.linspace(0, n - 1, steps)` in f32 (the reference's interpolation points): the first
/// half counts up from the start, the second half down from the end.
fn linspace(n: usize, steps: usize) -> Vec<f32> {
    let (start, end) = (0f32, (n - 1) as f32);
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|i| {
            if i < halfway {
                start + step * i as f32
            } else {
                end - step * (steps - i - 1) as f32
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::linspace;

    #[test]
    fn linspace_hits_both_ends() {
        let v = linspace(48, 7);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[6], 47.0);
        assert!((v[3] - 23.5).abs() < 1e-6);
        assert_eq!(linspace(4, 1), vec![0.0]);
    }
}
