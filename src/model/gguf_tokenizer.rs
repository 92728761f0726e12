//! Builds a `tokenizers::Tokenizer` from a GGUF file's metadata.
//!
//! candle's `TokenizerFromGguf` does not know `tokenizer.ggml.pre = "smollm"`: it adds a prefix
//! space and mis-encodes (`What` → `ĠWhat`). This module writes the tokenizer as Hugging Face's
//! `tokenizer.json` would describe it — BPE over the GGUF vocabulary and merges, digits split
//! one by one, byte-level pre-tokenisation without a prefix space, byte-level decoding, and the
//! control tokens (type 3) registered as special — and lets `tokenizers` parse it.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;
use tokenizers::Tokenizer;

use super::ModelError;

/// GGUF token type of control tokens (`<|im_start|>`, `<|im_end|>`, …).
const CONTROL_TOKEN: i32 = 3;

fn string_array<'a>(content: &'a Content, key: &str) -> Result<Vec<&'a str>, ModelError> {
    let value = content
        .metadata
        .get(key)
        .ok_or_else(|| ModelError::Tokenizer(format!("GGUF metadata has no `{key}`")))?;
    let items = value
        .to_vec()
        .map_err(|e| ModelError::Tokenizer(format!("`{key}`: {e}")))?;
    items
        .iter()
        .map(|v| v.to_string().map(String::as_str))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ModelError::Tokenizer(format!("`{key}`: {e}")))
}

fn token_types(content: &Content) -> Vec<i32> {
    let Some(Value::Array(items)) = content.metadata.get("tokenizer.ggml.token_type") else {
        return Vec::new();
    };
    items.iter().map(|v| v.to_i32().unwrap_or(1)).collect()
}

/// The tokenizer as `tokenizer.json` text, for inspection or to save beside the model.
pub fn tokenizer_json(content: &Content) -> Result<serde_json::Value, ModelError> {
    let tokens = string_array(content, "tokenizer.ggml.tokens")?;
    let merges = string_array(content, "tokenizer.ggml.merges")?;
    let types = token_types(content);
    let vocab: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| types.get(*i) == Some(&CONTROL_TOKEN))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Digits", "individual_digits": true},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
            ]
        },
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": vocab, "merges": merges
        }
    }))
}

/// Builds the tokenizer for a GGUF model.
pub fn from_gguf(content: &Content) -> Result<Tokenizer, ModelError> {
    let json = tokenizer_json(content)?;
    let text = serde_json::to_string(&json).map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    text.parse::<Tokenizer>()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))
}

/// Reads a GGUF file's header and builds its tokenizer and stop ids.
pub fn load(path: &std::path::Path) -> Result<(Tokenizer, Vec<u32>), ModelError> {
    let corrupt = |reason: String| ModelError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let mut f = std::fs::File::open(path).map_err(|e| corrupt(e.to_string()))?;
    let content = Content::read(&mut f).map_err(|e| corrupt(e.to_string()))?;
    let tok = from_gguf(&content)?;
    let stop = stop_tokens(&content, &tok);
    Ok((tok, stop))
}

/// Token ids that end generation: the GGUF's EOS id plus `<|im_end|>` / `<|endoftext|>` if present.
pub fn stop_tokens(content: &Content, tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids = Vec::new();
    if let Some(v) = content.metadata.get("tokenizer.ggml.eos_token_id") {
        if let Ok(id) = v.to_u32() {
            ids.push(id);
        }
    }
    for t in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>"] {
        if let Some(id) = tokenizer.token_to_id(t) {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    ids
}
