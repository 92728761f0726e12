//! PEFT-format round trip on a seeded tiny Llama: the adapter we save reloads to identical
//! outputs here, and `scripts/peft_roundtrip.py` checks that PEFT + transformers load the same
//! folder onto the same base and produce the same logits. Set `VLMTEST_PEFT_FIXTURE=DIR` to keep
//! the folder for that script.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use vlmtest::lora::{AdapterConfig, LoraAdapter, LoraRng, TargetModules};
use vlmtest::model::llama_f32::{Llama, LlamaConfig};
use vlmtest::train::checkpoint::{adapter_from_vars, named_vars, save_json, save_merged};

fn tiny() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        hidden: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        intermediate: 48,
        rope_theta: 10_000.0,
        rms_eps: 1e-5,
        vocab: 64,
    }
}

#[test]
fn saved_adapter_reloads_to_identical_logits_and_exports_for_peft() {
    let keep = std::env::var_os("VLMTEST_PEFT_FIXTURE").map(std::path::PathBuf::from);
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep.unwrap_or_else(|| tmp.path().to_owned());
    let dev = Device::Cpu;
    let c = tiny();

    let mut trained = Llama::random(c.clone(), 11, &dev).unwrap();
    save_merged(&dir.join("base"), &trained.merged_state_dict().unwrap()).unwrap();
    let hf_config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": c.hidden,
        "intermediate_size": c.intermediate, "num_hidden_layers": c.n_layers,
        "num_attention_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads, "head_dim": c.head_dim,
        "vocab_size": c.vocab, "rms_norm_eps": c.rms_eps, "rope_theta": c.rope_theta,
        "max_position_embeddings": 128, "tie_word_embeddings": true, "hidden_act": "silu",
        "attention_bias": false, "mlp_bias": false, "torch_dtype": "float32",
    });
    save_json(&dir.join("base").join("config.json"), &hf_config).unwrap();

    let mut cfg = AdapterConfig::new(
        4,
        8.0,
        0.0,
        TargetModules::List(vec![
            "q_proj".into(),
            "k_proj".into(),
            "v_proj".into(),
            "down_proj".into(),
        ]),
    );
    cfg.base_model_name_or_path = Some("base".into());
    let varmap = VarMap::new();
    let mut rng = LoraRng::new(5);
    trained.attach_trainable(&cfg, &varmap, &mut rng).unwrap();
    // Stand-in for training: B away from zero so the adapter changes the output.
    for (name, var) in named_vars(&varmap) {
        if name.ends_with("lora_B.weight") {
            let (o, r) = var.dims2().unwrap();
            var.set(&Tensor::from_vec(rng.uniform(o * r, 0.3), (o, r), &dev).unwrap())
                .unwrap();
        }
    }
    let adapter = adapter_from_vars(&cfg, &named_vars(&varmap)).unwrap();
    adapter.save(&dir.join("adapter")).unwrap();

    let ids: Vec<u32> = vec![3, 17, 42, 5, 60, 1, 9];
    let input = Tensor::new(ids.as_slice(), &dev)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let want = trained.logits(&input, &mut LoraRng::new(0)).unwrap();

    let mut reloaded = Llama::random(c.clone(), 11, &dev).unwrap();
    let base_logits = reloaded.logits(&input, &mut LoraRng::new(0)).unwrap();
    reloaded
        .attach_adapter(&LoraAdapter::load(&dir.join("adapter"), &dev).unwrap())
        .unwrap();
    let got = reloaded.logits(&input, &mut LoraRng::new(0)).unwrap();
    let max = |t: Tensor| {
        t.abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    };
    assert_eq!(
        max((&got - &want).unwrap()),
        0.0,
        "reloaded adapter changes the logits"
    );
    assert!(
        max((&base_logits - &want).unwrap()) > 1e-2,
        "the adapter must matter for this test to mean anything"
    );
    let merged = reloaded
        .merged_copy()
        .unwrap()
        .logits(&input, &mut LoraRng::new(0))
        .unwrap();
    assert!(max((&merged - &want).unwrap()) < 1e-4);

    let expected = HashMap::from([
        ("input_ids", serde_json::json!(ids)),
        (
            "logits",
            serde_json::json!(want.squeeze(0).unwrap().to_vec2::<f32>().unwrap()),
        ),
        (
            "base_logits",
            serde_json::json!(base_logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap()),
        ),
    ]);
    save_json(&dir.join("expected.json"), &expected).unwrap();
}
