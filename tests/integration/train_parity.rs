//! The training forward over the dequantized GGUF agrees with candle-transformers' Llama on the
//! same weights under Hugging Face names (so the q/k un-permutation and rotary layout are right),
//! both in its differentiable form and in its cached generation form.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as hf;
use vlmtest::case::{Message, Role};
use vlmtest::lora::LoraRng;
use vlmtest::model::adapted_gguf::AdaptedGguf;
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::model::llama_f32::KvCache;
use vlmtest::train::model::SmolLm;

#[test]
fn training_forward_matches_candle_llama_on_smollm2() {
    let base = ensure_default_model().unwrap();
    let model = SmolLm::load(&base).unwrap();
    let c = model.llama.cfg.clone();
    let weights: HashMap<String, Tensor> = model
        .llama
        .merged_state_dict()
        .unwrap()
        .into_iter()
        .collect();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let cfg = hf::Config {
        hidden_size: c.hidden,
        intermediate_size: c.intermediate,
        vocab_size: c.vocab,
        num_hidden_layers: c.n_layers,
        num_attention_heads: c.n_heads,
        num_key_value_heads: c.n_kv_heads,
        use_flash_attn: false,
        rms_norm_eps: c.rms_eps,
        rope_theta: c.rope_theta,
        bos_token_id: None,
        eos_token_id: None,
        rope_scaling: None,
        max_position_embeddings: 512,
        tie_word_embeddings: true,
    };
    let reference = hf::Llama::load(vb, &cfg).unwrap();
    let ids: Vec<u32> = model
        .tokenizer()
        .encode("The capital of France is the city of", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let t = ids.len();
    let input = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = hf::Cache::new(false, DType::F32, &cfg, &Device::Cpu).unwrap();
    let want = reference
        .forward(&input, 0, &mut cache)
        .unwrap()
        .squeeze(0)
        .unwrap();
    let want_logp = candle_nn::ops::log_softmax(&want, D::Minus1).unwrap();

    // Cached generation forward: same last-position logits.
    let got = model
        .llama
        .forward_cached(&ids, &mut KvCache::default())
        .unwrap();
    let diff = (&got - &want)
        .unwrap()
        .abs()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-3, "cached forward differs by {diff}");

    // Differentiable forward: the loss at the last position equals -log p(target).
    let target = 2u32;
    let pos = Tensor::new(&[(t - 1) as u32], &Device::Cpu).unwrap();
    let tgt = Tensor::new(&[target], &Device::Cpu).unwrap();
    let loss = model
        .llama
        .loss_sum(&input, &pos, &tgt, &mut LoraRng::new(0))
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let expect = -want_logp
        .get(target as usize)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (loss - expect).abs() < 1e-3,
        "training loss {loss} vs reference {expect}"
    );
}

#[test]
fn f32_base_without_adapter_answers_a_plain_question() {
    let base = ensure_default_model().unwrap();
    let m = AdaptedGguf::load(&base, None).unwrap();
    let a = m
        .answer(
            &[Message::text(Role::User, "What is the capital of France?")],
            12,
        )
        .unwrap();
    assert!(a.text.contains("Paris"), "{a:?}");
}
