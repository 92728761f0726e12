//! Writes tiny Qwen3-VL checkpoints with seeded random weights, a matching byte-level BPE
//! tokenizer and processor settings, plus PEFT LoRA adapters for them, so tests run the real
//! loading, preprocessing and generation paths in milliseconds.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;

/// Errors while writing a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Other(String),
}

/// Shape of a generated checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub mrope_section: [usize; 3],
    pub rope_theta: f64,
    pub vision_depth: usize,
    pub vision_hidden: usize,
    pub vision_heads: usize,
    pub vision_intermediate: usize,
    pub num_position_embeddings: usize,
    pub deepstack: Vec<usize>,
    pub patch_size: usize,
    /// First special token id; `<|image_pad|>` is `special_base + 12` as in Qwen's vocabulary.
    pub special_base: u32,
    pub vocab_size: usize,
    pub tie_word_embeddings: bool,
    pub min_pixels: usize,
    pub max_pixels: usize,
}

impl Spec {
    /// Hidden 64, 2 text layers, a 3-block vision tower with 2 DeepStack layers, 288 tokens.
    pub fn tiny() -> Self {
        Self {
            hidden: 64,
            intermediate: 128,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            mrope_section: [4, 2, 2],
            rope_theta: 10_000.0,
            vision_depth: 3,
            vision_hidden: 32,
            vision_heads: 2,
            vision_intermediate: 64,
            num_position_embeddings: 64,
            deepstack: vec![0, 1],
            patch_size: 16,
            special_base: 272,
            vocab_size: 288,
            tie_word_embeddings: false,
            min_pixels: 32 * 32,
            max_pixels: 128 * 128,
        }
    }

    /// The shape of Qwen/Qwen3-VL-2B-Instruct (for benchmarks; weights come from elsewhere).
    pub fn qwen3_vl_2b() -> Self {
        Self {
            hidden: 2048,
            intermediate: 6144,
            layers: 28,
            heads: 16,
            kv_heads: 8,
            head_dim: 128,
            mrope_section: [24, 20, 20],
            rope_theta: 5_000_000.0,
            vision_depth: 24,
            vision_hidden: 1024,
            vision_heads: 16,
            vision_intermediate: 4096,
            num_position_embeddings: 2304,
            deepstack: vec![5, 11, 17],
            patch_size: 16,
            special_base: 151_643,
            vocab_size: 151_936,
            tie_word_embeddings: true,
            min_pixels: 65_536,
            max_pixels: 16_777_216,
        }
    }

    pub fn image_token_id(&self) -> u32 {
        self.special_base + 12
    }
}

/// Qwen's special tokens and their offsets from `special_base`.
const SPECIALS: [(&str, u32); 7] = [
    ("<|endoftext|>", 0),
    ("<|im_start|>", 1),
    ("<|im_end|>", 2),
    ("<|vision_start|>", 9),
    ("<|vision_end|>", 10),
    ("<|image_pad|>", 12),
    ("<|video_pad|>", 13),
];

/// A few merges so the tokenizer is a real BPE, not only bytes.
const MERGES: [(&str, &str); 10] = [
    ("Ġ", "t"),
    ("h", "e"),
    ("Ġt", "he"),
    ("i", "n"),
    ("Ġ", "a"),
    ("e", "r"),
    ("o", "n"),
    ("Ġ", "w"),
    ("a", "t"),
    ("i", "s"),
];

/// Deterministic normal samples (SplitMix64 + Box–Muller), the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }

    pub fn normals(&mut self, n: usize, mean: f64, std: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (mean + std * self.normal()) as f32)
            .collect()
    }
}

/// GPT-2's byte-to-character map used by byte-level BPE.
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = ('!' as u32..='~' as u32).collect();
    printable.extend('¡' as u32..='¬' as u32);
    printable.extend('®' as u32..='ÿ' as u32);
    let mut map = vec!['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        map[b as usize] = char::from_u32(c).unwrap_or('?');
    }
    map
}

/// The tokenizer.json: byte-level BPE over 256 byte tokens and `MERGES`, reserved filler
/// tokens up to `special_base`, then Qwen's special tokens.
pub fn tokenizer_json(spec: &Spec) -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, c) in byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let mut next = 256u32;
    for (a, b) in MERGES {
        vocab.insert(format!("{a}{b}"), json!(next));
        next += 1;
    }
    while next < spec.special_base {
        vocab.insert(format!("<|reserved_{next}|>"), json!(next));
        next += 1;
    }
    let added: Vec<serde_json::Value> = (0..16u32)
        .map(|k| {
            let content = SPECIALS
                .iter()
                .find(|(_, o)| *o == k)
                .map(|(s, _)| (*s).to_owned())
                .unwrap_or_else(|| format!("<|special_{k}|>"));
            json!({"id": spec.special_base + k, "content": content, "single_word": false,
                   "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let merges: Vec<String> = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
    json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges}
    })
}

/// The config.json, in the layout of the released Qwen3-VL checkpoints.
pub fn config_json(spec: &Spec) -> serde_json::Value {
    let b = spec.special_base;
    json!({
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": b + 12, "video_token_id": b + 13,
        "vision_start_token_id": b + 9, "vision_end_token_id": b + 10,
        "tie_word_embeddings": spec.tie_word_embeddings,
        "text_config": {
            "model_type": "qwen3_vl_text", "attention_bias": false, "attention_dropout": 0.0,
            "bos_token_id": b, "eos_token_id": b + 2, "head_dim": spec.head_dim, "hidden_act": "silu",
            "hidden_size": spec.hidden, "initializer_range": 0.02, "intermediate_size": spec.intermediate,
            "max_position_embeddings": 4096, "num_attention_heads": spec.heads,
            "num_hidden_layers": spec.layers, "num_key_value_heads": spec.kv_heads, "rms_norm_eps": 1e-6,
            "rope_scaling": {"mrope_interleaved": true, "mrope_section": spec.mrope_section, "rope_type": "default"},
            "rope_theta": spec.rope_theta, "tie_word_embeddings": spec.tie_word_embeddings,
            "use_cache": true, "vocab_size": spec.vocab_size, "dtype": "float32"
        },
        "vision_config": {
            "model_type": "qwen3_vl", "deepstack_visual_indexes": spec.deepstack, "depth": spec.vision_depth,
            "hidden_act": "gelu_pytorch_tanh", "hidden_size": spec.vision_hidden, "in_channels": 3,
            "initializer_range": 0.02, "intermediate_size": spec.vision_intermediate,
            "num_heads": spec.vision_heads, "num_position_embeddings": spec.num_position_embeddings,
            "out_hidden_size": spec.hidden, "patch_size": spec.patch_size, "spatial_merge_size": 2,
            "temporal_patch_size": 2
        }
    })
}

/// Every weight's name and shape, with the std of its random init (`None`: a norm weight near 1).
fn weight_shapes(spec: &Spec) -> Vec<(String, Vec<usize>, Option<f64>)> {
    let mut w = Vec::new();
    let lin = |name: String, out: usize, inp: usize, bias: bool, w: &mut Vec<_>| {
        w.push((
            format!("{name}.weight"),
            vec![out, inp],
            Some(1.0 / (inp as f64).sqrt()),
        ));
        if bias {
            w.push((format!("{name}.bias"), vec![out], Some(0.02)));
        }
    };
    let (vd, p) = (spec.vision_hidden, spec.patch_size);
    let v = "model.visual";
    w.push((
        format!("{v}.patch_embed.proj.weight"),
        vec![vd, 3, 2, p, p],
        Some(1.0 / ((3 * 2 * p * p) as f64).sqrt()),
    ));
    w.push((format!("{v}.patch_embed.proj.bias"), vec![vd], Some(0.02)));
    w.push((
        format!("{v}.pos_embed.weight"),
        vec![spec.num_position_embeddings, vd],
        Some(0.5),
    ));
    let norm =
        |name: String, dim: usize, w: &mut Vec<(String, Vec<usize>, Option<f64>)>, bias: bool| {
            w.push((format!("{name}.weight"), vec![dim], None));
            if bias {
                w.push((format!("{name}.bias"), vec![dim], Some(0.05)));
            }
        };
    for i in 0..spec.vision_depth {
        let b = format!("{v}.blocks.{i}");
        norm(format!("{b}.norm1"), vd, &mut w, true);
        norm(format!("{b}.norm2"), vd, &mut w, true);
        lin(format!("{b}.attn.qkv"), 3 * vd, vd, true, &mut w);
        lin(format!("{b}.attn.proj"), vd, vd, true, &mut w);
        lin(
            format!("{b}.mlp.linear_fc1"),
            spec.vision_intermediate,
            vd,
            true,
            &mut w,
        );
        lin(
            format!("{b}.mlp.linear_fc2"),
            vd,
            spec.vision_intermediate,
            true,
            &mut w,
        );
    }
    let merged = vd * 4;
    norm(format!("{v}.merger.norm"), vd, &mut w, true);
    lin(
        format!("{v}.merger.linear_fc1"),
        merged,
        merged,
        true,
        &mut w,
    );
    lin(
        format!("{v}.merger.linear_fc2"),
        spec.hidden,
        merged,
        true,
        &mut w,
    );
    for i in 0..spec.deepstack.len() {
        let m = format!("{v}.deepstack_merger_list.{i}");
        norm(format!("{m}.norm"), merged, &mut w, true);
        lin(format!("{m}.linear_fc1"), merged, merged, true, &mut w);
        lin(format!("{m}.linear_fc2"), spec.hidden, merged, true, &mut w);
    }
    let t = "model.language_model";
    let (h, hd) = (spec.hidden, spec.head_dim);
    w.push((
        format!("{t}.embed_tokens.weight"),
        vec![spec.vocab_size, h],
        Some(1.0),
    ));
    for i in 0..spec.layers {
        let l = format!("{t}.layers.{i}");
        norm(format!("{l}.input_layernorm"), h, &mut w, false);
        norm(format!("{l}.post_attention_layernorm"), h, &mut w, false);
        norm(format!("{l}.self_attn.q_norm"), hd, &mut w, false);
        norm(format!("{l}.self_attn.k_norm"), hd, &mut w, false);
        lin(
            format!("{l}.self_attn.q_proj"),
            spec.heads * hd,
            h,
            false,
            &mut w,
        );
        lin(
            format!("{l}.self_attn.k_proj"),
            spec.kv_heads * hd,
            h,
            false,
            &mut w,
        );
        lin(
            format!("{l}.self_attn.v_proj"),
            spec.kv_heads * hd,
            h,
            false,
            &mut w,
        );
        lin(
            format!("{l}.self_attn.o_proj"),
            h,
            spec.heads * hd,
            false,
            &mut w,
        );
        lin(
            format!("{l}.mlp.gate_proj"),
            spec.intermediate,
            h,
            false,
            &mut w,
        );
        lin(
            format!("{l}.mlp.up_proj"),
            spec.intermediate,
            h,
            false,
            &mut w,
        );
        lin(
            format!("{l}.mlp.down_proj"),
            h,
            spec.intermediate,
            false,
            &mut w,
        );
    }
    norm(format!("{t}.norm"), h, &mut w, false);
    if !spec.tie_word_embeddings {
        // A wide head spreads the logits so greedy choices are not near-ties.
        w.push(("lm_head.weight".into(), vec![spec.vocab_size, h], Some(0.3)));
    }
    w
}

/// Writes a complete checkpoint folder for `spec` with weights drawn from `seed`.
pub fn write_checkpoint(
    dir: &Path,
    spec: &Spec,
    seed: u64,
    dtype: DType,
) -> Result<(), FixtureError> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(seed);
    let mut tensors = HashMap::new();
    for (name, shape, std) in weight_shapes(spec) {
        let n: usize = shape.iter().product();
        let data = match std {
            Some(s) => rng.normals(n, 0.0, s),
            None => rng.normals(n, 1.0, 0.1),
        };
        let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?;
        tensors.insert(name, t);
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    write_metadata(dir, spec)
}

/// Writes everything of a checkpoint folder but the weights.
pub fn write_metadata(dir: &Path, spec: &Spec) -> Result<(), FixtureError> {
    std::fs::create_dir_all(dir)?;
    write_json(&dir.join("config.json"), &config_json(spec))?;
    write_json(&dir.join("tokenizer.json"), &tokenizer_json(spec))?;
    let b = spec.special_base;
    write_json(
        &dir.join("tokenizer_config.json"),
        &json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
            "model_max_length": 4096,
            "chat_template": CHAT_TEMPLATE,
        }),
    )?;
    write_json(
        &dir.join("generation_config.json"),
        &json!({"eos_token_id": [b + 2, b], "pad_token_id": b, "do_sample": false}),
    )?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &json!({
            "image_processor_type": "Qwen2VLImageProcessorFast",
            "processor_class": "Qwen3VLProcessor",
            "do_resize": true, "do_rescale": true, "do_normalize": true, "do_convert_rgb": true,
            "rescale_factor": 1.0 / 255.0,
            "size": {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels},
            "patch_size": spec.patch_size, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]
        }),
    )?;
    Ok(())
}

/// A LoRA adapter in PEFT's layout for the text attention of a `spec` checkpoint.
pub struct AdapterSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Module names (`q_proj`, `v_proj`, ...) adapted in every text layer.
    pub targets: Vec<String>,
    pub seed: u64,
}

/// Writes `adapter_config.json` and `adapter_model.safetensors` (PEFT key names, non-zero B so
/// the adapter changes the output).
pub fn write_adapter(
    dir: &Path,
    spec: &Spec,
    adapter: &AdapterSpec,
    base: &str,
) -> Result<(), FixtureError> {
    std::fs::create_dir_all(dir)?;
    let mut rng = Rng::new(adapter.seed);
    let mut tensors = HashMap::new();
    let dims = |m: &str| -> (usize, usize) {
        let (h, hd) = (spec.hidden, spec.head_dim);
        match m {
            "q_proj" => (h, spec.heads * hd),
            "k_proj" | "v_proj" => (h, spec.kv_heads * hd),
            "o_proj" => (spec.heads * hd, h),
            "gate_proj" | "up_proj" => (h, spec.intermediate),
            _ => (spec.intermediate, h),
        }
    };
    for i in 0..spec.layers {
        for m in &adapter.targets {
            let group = if m.ends_with("_proj")
                && ["gate_proj", "up_proj", "down_proj"].contains(&m.as_str())
            {
                "mlp"
            } else {
                "self_attn"
            };
            let key = format!("base_model.model.model.language_model.layers.{i}.{group}.{m}");
            let (inp, out) = dims(m);
            let a = rng.normals(adapter.rank * inp, 0.0, 1.0 / (inp as f64).sqrt());
            let b = rng.normals(out * adapter.rank, 0.0, 0.2);
            tensors.insert(
                format!("{key}.lora_A.weight"),
                Tensor::from_vec(a, (adapter.rank, inp), &Device::Cpu)?,
            );
            tensors.insert(
                format!("{key}.lora_B.weight"),
                Tensor::from_vec(b, (out, adapter.rank), &Device::Cpu)?,
            );
        }
    }
    candle_core::safetensors::save(&tensors, dir.join("adapter_model.safetensors"))?;
    write_json(
        &dir.join("adapter_config.json"),
        &json!({
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base,
            "r": adapter.rank, "lora_alpha": adapter.alpha, "lora_dropout": 0.0, "bias": "none",
            "target_modules": adapter.targets, "modules_to_save": null, "fan_in_fan_out": false,
            "use_rslora": false, "use_dora": false, "inference_mode": true
        }),
    )?;
    Ok(())
}

/// Writes a seeded RGB test image (smooth gradients plus noise) as PNG.
pub fn write_image(path: &Path, width: u32, height: u32, seed: u64) -> Result<(), FixtureError> {
    let mut rng = Rng::new(seed);
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let n = (rng.uniform() * 64.0) as u32;
        image::Rgb([
            ((x * 255 / width.max(1)) + n).min(255) as u8,
            ((y * 255 / height.max(1)) + n).min(255) as u8,
            (((x + y) * 97 + n * 3) % 256) as u8,
        ])
    });
    img.save(path)
        .map_err(|e| FixtureError::Other(e.to_string()))?;
    Ok(())
}

fn write_json(path: &Path, v: &serde_json::Value) -> Result<(), FixtureError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| FixtureError::Other(e.to_string()))?;
    std::fs::write(path, text)?;
    Ok(())
}

/// Qwen3-VL's chat template, reduced to what vlmtest renders (text and image parts).
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
