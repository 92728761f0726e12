//! Loading a PEFT LoRA adapter for a Qwen3-VL checkpoint: read with `crate::lora`, checked
//! against the base's linear layers (an adapter for another base is a clear error), tensors
//! moved to the model's device and dtype, `modules_to_save` copies overlaid on the base weights.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::config::Config;
use super::linear::AdapterSet;
use crate::lora::LoraAdapter;
use crate::model::ModelError;

/// Every linear layer of the network: full module name → (out, in).
pub fn linear_shapes(cfg: &Config) -> BTreeMap<String, (usize, usize)> {
    let mut m = BTreeMap::new();
    let t = &cfg.text;
    let (h, hd, i) = (t.hidden_size, t.head_dim, t.intermediate_size);
    for l in 0..t.num_hidden_layers {
        let p = format!("model.language_model.layers.{l}");
        m.insert(
            format!("{p}.self_attn.q_proj"),
            (t.num_attention_heads * hd, h),
        );
        m.insert(
            format!("{p}.self_attn.k_proj"),
            (t.num_key_value_heads * hd, h),
        );
        m.insert(
            format!("{p}.self_attn.v_proj"),
            (t.num_key_value_heads * hd, h),
        );
        m.insert(
            format!("{p}.self_attn.o_proj"),
            (h, t.num_attention_heads * hd),
        );
        m.insert(format!("{p}.mlp.gate_proj"), (i, h));
        m.insert(format!("{p}.mlp.up_proj"), (i, h));
        m.insert(format!("{p}.mlp.down_proj"), (h, i));
    }
    m.insert("lm_head".into(), (t.vocab_size, h));
    let v = &cfg.vision;
    let (d, vi) = (v.hidden_size, v.intermediate_size);
    for b in 0..v.depth {
        let p = format!("model.visual.blocks.{b}");
        m.insert(format!("{p}.attn.qkv"), (3 * d, d));
        m.insert(format!("{p}.attn.proj"), (d, d));
        m.insert(format!("{p}.mlp.linear_fc1"), (vi, d));
        m.insert(format!("{p}.mlp.linear_fc2"), (d, vi));
    }
    let merged = d * v.spatial_merge_size * v.spatial_merge_size;
    let mut mergers = vec!["model.visual.merger".to_owned()];
    mergers.extend(
        (0..v.deepstack_visual_indexes.len())
            .map(|k| format!("model.visual.deepstack_merger_list.{k}")),
    );
    for p in mergers {
        m.insert(format!("{p}.linear_fc1"), (merged, merged));
        m.insert(format!("{p}.linear_fc2"), (v.out_hidden_size, merged));
    }
    m
}

/// Reads the adapter in `dir` for a model with `cfg`; returns it ready to apply and a hash of
/// its files for the model fingerprint.
pub fn load(
    dir: &Path,
    cfg: &Config,
    device: &Device,
    dtype: DType,
    merged: bool,
) -> Result<(AdapterSet, String), ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt {
        path: dir.to_owned(),
        reason,
    };
    let mut adapter =
        LoraAdapter::load(dir, &Device::Cpu).map_err(|e| corrupt(format!("adapter: {e}")))?;
    adapter
        .check_against(&linear_shapes(cfg))
        .map_err(|e| corrupt(format!("adapter does not fit this base model: {e}")))?;
    for w in adapter.modules.values_mut() {
        w.a = w.a.to_device(device)?.to_dtype(dtype)?;
        w.b = w.b.to_device(device)?.to_dtype(dtype)?;
    }
    for t in adapter.saved_params.values_mut() {
        *t = t.to_device(device)?.to_dtype(dtype)?;
    }
    let mut h = sha2::Sha256::default();
    for f in [
        crate::lora::ADAPTER_CONFIG_FILE,
        crate::lora::ADAPTER_WEIGHTS_FILE,
    ] {
        crate::model::checkpoint::sample_file(&dir.join(f), &mut h)?;
    }
    use sha2::Digest;
    let fp = format!("{:x}", h.finalize())[..16].to_owned();
    Ok((
        AdapterSet {
            adapter: Some(adapter),
            merged,
        },
        fp,
    ))
}

/// Checks an adapter already in memory against a model with `cfg` and moves it to the model's
/// device and dtype, as `load` does for one read from a folder; `origin` names it in errors.
pub fn prepare(
    mut adapter: LoraAdapter,
    cfg: &Config,
    device: &Device,
    dtype: DType,
    merged: bool,
    origin: &Path,
) -> Result<AdapterSet, ModelError> {
    adapter
        .check_against(&linear_shapes(cfg))
        .map_err(|e| ModelError::Corrupt {
            path: origin.to_owned(),
            reason: format!("adapter does not fit this base model: {e}"),
        })?;
    for w in adapter.modules.values_mut() {
        w.a = w.a.to_device(device)?.to_dtype(dtype)?;
        w.b = w.b.to_device(device)?.to_dtype(dtype)?;
    }
    for t in adapter.saved_params.values_mut() {
        *t = t.to_device(device)?.to_dtype(dtype)?;
    }
    Ok(AdapterSet {
        adapter: Some(adapter),
        merged,
    })
}

/// A weight source that serves `modules_to_save` replacements before the base checkpoint.
pub struct Overlay {
    pub base: Box<dyn SimpleBackend>,
    pub replace: HashMap<String, Tensor>,
}

impl SimpleBackend for Overlay {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        match self.replace.get(name) {
            Some(t) => {
                if t.shape() != &s {
                    candle_core::bail!(
                        "modules_to_save tensor {name} has shape {:?}, the base expects {s:?}",
                        t.shape()
                    );
                }
                t.to_device(dev)?.to_dtype(dtype)
            }
            None => self.base.get(s, name, h, dtype, dev),
        }
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        match self.replace.get(name) {
            Some(t) => t.to_device(dev)?.to_dtype(dtype),
            None => self.base.get_unchecked(name, dtype, dev),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.replace.contains_key(name) || self.base.contains_tensor(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_cover_text_vision_and_head() {
        let cfg = Config::from_json(
            &serde_json::to_string(&super::super::fixture::config_json(
                &super::super::fixture::Spec::tiny(),
            ))
            .unwrap(),
        )
        .unwrap();
        let s = linear_shapes(&cfg);
        assert_eq!(
            s["model.language_model.layers.1.self_attn.k_proj"],
            (32, 64)
        );
        assert_eq!(
            s["model.visual.deepstack_merger_list.1.linear_fc2"],
            (64, 128)
        );
        assert_eq!(s["lm_head"], (288, 64));
    }
}
