//! `config.json` of a Qwen3-VL checkpoint, as transformers 4.57+ and 5.x write it.

use serde::Deserialize;

/// The language model's hyper-parameters (`text_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Frequencies given to (t, h, w) positions; sums to `head_dim / 2`.
    pub mrope_section: [usize; 3],
    pub attention_bias: bool,
}

/// The vision tower's hyper-parameters (`vision_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub depth: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_heads: usize,
    pub in_channels: usize,
    pub patch_size: usize,
    pub spatial_merge_size: usize,
    pub temporal_patch_size: usize,
    pub out_hidden_size: usize,
    pub num_position_embeddings: usize,
    pub deepstack_visual_indexes: Vec<usize>,
}

/// The whole model's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub image_token_id: u32,
    pub video_token_id: u32,
    pub vision_start_token_id: u32,
    pub vision_end_token_id: u32,
    pub tie_word_embeddings: bool,
    /// `eos_token_id` of the text config (a number or a list), if given.
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct RawRope {
    rope_theta: Option<f64>,
    mrope_section: Option<Vec<usize>>,
    rope_type: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Deserialize)]
struct RawText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<RawRope>,
    rope_parameters: Option<RawRope>,
    attention_bias: Option<bool>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    eos_token_id: Option<OneOrMany>,
}

#[derive(Deserialize)]
struct RawVision {
    depth: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_heads: usize,
    in_channels: Option<usize>,
    patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    out_hidden_size: usize,
    num_position_embeddings: usize,
    deepstack_visual_indexes: Option<Vec<usize>>,
    hidden_act: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    text_config: RawText,
    vision_config: RawVision,
    image_token_id: Option<u32>,
    video_token_id: Option<u32>,
    vision_start_token_id: Option<u32>,
    vision_end_token_id: Option<u32>,
    tie_word_embeddings: Option<bool>,
}

impl Config {
    /// Parses and validates `config.json`; the error names the offending field.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let raw: RawConfig = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if let Some(mt) = &raw.model_type {
            if mt != "qwen3_vl" {
                return Err(format!("model_type is `{mt}`, expected `qwen3_vl`"));
            }
        }
        let t = raw.text_config;
        let v = raw.vision_config;
        if let Some(act) = &t.hidden_act {
            if act != "silu" {
                return Err(format!(
                    "text_config.hidden_act `{act}` is not supported (silu)"
                ));
            }
        }
        if let Some(act) = &v.hidden_act {
            if act != "gelu_pytorch_tanh" {
                return Err(format!(
                    "vision_config.hidden_act `{act}` is not supported (gelu_pytorch_tanh)"
                ));
            }
        }
        let rope = t.rope_parameters.as_ref().or(t.rope_scaling.as_ref());
        if let Some(r) = rope {
            let kind = r
                .rope_type
                .as_deref()
                .or(r.kind.as_deref())
                .unwrap_or("default");
            if kind != "default" && kind != "mrope" {
                return Err(format!("text_config rope type `{kind}` is not supported"));
            }
        }
        let rope_theta = rope
            .and_then(|r| r.rope_theta)
            .or(t.rope_theta)
            .ok_or("text_config.rope_theta is missing")?;
        let section = rope
            .and_then(|r| r.mrope_section.clone())
            .unwrap_or_else(|| vec![24, 20, 20]);
        let mrope_section: [usize; 3] = section.try_into().map_err(|s: Vec<usize>| {
            format!("mrope_section has {} entries, expected 3", s.len())
        })?;
        let head_dim = t
            .head_dim
            .unwrap_or(t.hidden_size / t.num_attention_heads.max(1));
        let text = TextConfig {
            vocab_size: t.vocab_size,
            hidden_size: t.hidden_size,
            intermediate_size: t.intermediate_size,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            num_key_value_heads: t.num_key_value_heads.unwrap_or(t.num_attention_heads),
            head_dim,
            rms_norm_eps: t.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            mrope_section,
            attention_bias: t.attention_bias.unwrap_or(false),
        };
        if text.num_attention_heads == 0
            || text.num_key_value_heads == 0
            || !text
                .num_attention_heads
                .is_multiple_of(text.num_key_value_heads)
        {
            return Err(format!(
                "text_config: num_attention_heads {} is not a multiple of num_key_value_heads {}",
                text.num_attention_heads, text.num_key_value_heads
            ));
        }
        if mrope_section.iter().sum::<usize>() * 2 != head_dim {
            return Err(format!(
                "mrope_section {mrope_section:?} must sum to head_dim / 2 = {}",
                head_dim / 2
            ));
        }
        let vision = VisionConfig {
            depth: v.depth,
            hidden_size: v.hidden_size,
            intermediate_size: v.intermediate_size,
            num_heads: v.num_heads,
            in_channels: v.in_channels.unwrap_or(3),
            patch_size: v.patch_size.unwrap_or(16),
            spatial_merge_size: v.spatial_merge_size.unwrap_or(2),
            temporal_patch_size: v.temporal_patch_size.unwrap_or(2),
            out_hidden_size: v.out_hidden_size,
            num_position_embeddings: v.num_position_embeddings,
            deepstack_visual_indexes: v.deepstack_visual_indexes.unwrap_or_default(),
        };
        if vision.num_heads == 0 || !vision.hidden_size.is_multiple_of(vision.num_heads) {
            return Err("vision_config.hidden_size is not a multiple of num_heads".into());
        }
        let side = (vision.num_position_embeddings as f64).sqrt() as usize;
        if side * side != vision.num_position_embeddings {
            return Err("vision_config.num_position_embeddings is not a square".into());
        }
        if vision.out_hidden_size != text.hidden_size {
            return Err(format!(
                "vision_config.out_hidden_size {} differs from text hidden_size {}",
                vision.out_hidden_size, text.hidden_size
            ));
        }
        if let Some(&bad) = vision
            .deepstack_visual_indexes
            .iter()
            .find(|&&i| i >= vision.depth)
        {
            return Err(format!(
                "deepstack_visual_indexes has {bad}, beyond depth {}",
                vision.depth
            ));
        }
        if vision.deepstack_visual_indexes.len() > text.num_hidden_layers {
            return Err("more deepstack layers than text layers".into());
        }
        let eos_token_ids = match t.eos_token_id {
            Some(OneOrMany::One(id)) => vec![id],
            Some(OneOrMany::Many(ids)) => ids,
            None => Vec::new(),
        };
        Ok(Self {
            text,
            vision,
            image_token_id: raw.image_token_id.unwrap_or(151_655),
            video_token_id: raw.video_token_id.unwrap_or(151_656),
            vision_start_token_id: raw.vision_start_token_id.unwrap_or(151_652),
            vision_end_token_id: raw.vision_end_token_id.unwrap_or(151_653),
            tie_word_embeddings: raw
                .tie_word_embeddings
                .or(t.tie_word_embeddings)
                .unwrap_or(false),
            eos_token_ids,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The shape of Qwen/Qwen3-VL-2B-Instruct's config.json (values copied from the hub file).
    pub(crate) const QWEN3_VL_2B: &str = r#"{
      "architectures": ["Qwen3VLForConditionalGeneration"],
      "image_token_id": 151655, "model_type": "qwen3_vl",
      "text_config": {
        "attention_bias": false, "attention_dropout": 0.0, "bos_token_id": 151643,
        "dtype": "bfloat16", "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu",
        "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
        "max_position_embeddings": 262144, "model_type": "qwen3_vl_text",
        "num_attention_heads": 16, "num_hidden_layers": 28, "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000, "tie_word_embeddings": true, "use_cache": true, "vocab_size": 151936
      },
      "tie_word_embeddings": true,
      "video_token_id": 151656,
      "vision_config": {
        "deepstack_visual_indexes": [5, 11, 17], "depth": 24, "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1024, "in_channels": 3, "initializer_range": 0.02, "intermediate_size": 4096,
        "model_type": "qwen3_vl", "num_heads": 16, "num_position_embeddings": 2304,
        "out_hidden_size": 2048, "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2
      },
      "vision_end_token_id": 151653, "vision_start_token_id": 151652
    }"#;

    #[test]
    fn parses_the_2b_config() {
        let c = Config::from_json(QWEN3_VL_2B).unwrap();
        assert_eq!(c.text.head_dim, 128);
        assert_eq!(c.text.mrope_section, [24, 20, 20]);
        assert_eq!(c.text.rope_theta, 5e6);
        assert_eq!(c.vision.deepstack_visual_indexes, vec![5, 11, 17]);
        assert!(c.tie_word_embeddings);
        assert_eq!(c.eos_token_ids, vec![151645]);
    }

    #[test]
    fn reads_rope_parameters_of_transformers_5() {
        let text = QWEN3_VL_2B.replace(
            r#""rope_scaling": {"mrope_interleaved": true, "mrope_section": [24, 20, 20], "rope_type": "default"},
        "rope_theta": 5000000,"#,
            r#""rope_parameters": {"rope_theta": 1000.0, "mrope_section": [24, 20, 20], "rope_type": "default"},"#,
        );
        assert_eq!(Config::from_json(&text).unwrap().text.rope_theta, 1000.0);
    }

    #[test]
    fn inconsistent_configs_name_the_field() {
        let bad = QWEN3_VL_2B.replace("[24, 20, 20]", "[24, 20, 21]");
        assert!(Config::from_json(&bad)
            .unwrap_err()
            .contains("mrope_section"));
        let bad = QWEN3_VL_2B.replace(r#""model_type": "qwen3_vl","#, r#""model_type": "llama","#);
        assert!(Config::from_json(&bad).unwrap_err().contains("model_type"));
        let bad = QWEN3_VL_2B.replace("[5, 11, 17]", "[5, 11, 40]");
        assert!(Config::from_json(&bad).unwrap_err().contains("deepstack"));
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = Config::from_json(&s);
        }
    }
}
