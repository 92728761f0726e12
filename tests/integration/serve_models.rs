//! `vlmtest serve` over the local models besides a plain GGUF: a Qwen3-VL checkpoint with a
//! PEFT adapter answers image requests (data URIs) over HTTP exactly as the in-process model
//! does, and honours `response_format`; models that are not local are refused by name.

use std::path::Path;

use super::qwen_model::image_message;
use candle_core::{DType, Device};
use serde_json::{json, Value};
use vlmtest::case::{Message, Role};
use vlmtest::model::openai::OpenAiModel;
use vlmtest::model::qwen3_vl::fixture::{self, AdapterSpec, Spec};
use vlmtest::model::qwen3_vl::Qwen3VlModel;
use vlmtest::model::{GenerationOptions, Model, Request};
use vlmtest::serve::http::{spawn, ServerConfig, ServerHandle};
use vlmtest::serve::load_decoder;

fn tiny_with_adapter(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ckpt = dir.join("tiny");
    fixture::write_checkpoint(&ckpt, &Spec::tiny(), 7, DType::F32).unwrap();
    let adapter = dir.join("adapter");
    let spec = AdapterSpec {
        rank: 4,
        alpha: 8.0,
        targets: vec!["q_proj".into(), "v_proj".into()],
        seed: 11,
    };
    fixture::write_adapter(&adapter, &Spec::tiny(), &spec, "tiny").unwrap();
    (ckpt, adapter)
}

fn serve(spec: &Path, adapter: &Path) -> ServerHandle {
    let (model, _) = load_decoder(spec.to_str().unwrap(), Some(adapter)).expect("load");
    let config = ServerConfig {
        name: "tiny".into(),
        max_tokens_cap: 64,
    };
    spawn(model, &config, "127.0.0.1:0".parse().unwrap()).expect("listen")
}

#[test]
fn a_qwen3_vl_checkpoint_with_an_adapter_answers_image_requests_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, adapter) = tiny_with_adapter(dir.path());
    let server = serve(&ckpt, &adapter);
    let convs = [
        vec![image_message(dir.path(), 64, 96, "What is in the image?")],
        vec![Message::text(Role::User, "the weather is")],
        vec![
            Message::text(Role::System, "Answer briefly."),
            image_message(dir.path(), 120, 90, "Compare it."),
        ],
    ];
    let requests: Vec<Request<'_>> = convs
        .iter()
        .enumerate()
        .map(|(i, m)| Request {
            name: format!("r{i}"),
            messages: m,
        })
        .collect();
    let opts = GenerationOptions { max_new_tokens: 12 };
    let mut local = Qwen3VlModel::load(&ckpt, Some(&adapter), &Device::Cpu).unwrap();
    let want = local.generate(&requests, &opts);
    // The `openai:` model spec sends the images as data URIs.
    let mut remote = OpenAiModel::from_spec(&format!("openai:{}#tiny", server.url())).unwrap();
    let got = remote.generate(&requests, &opts);
    for ((w, g), r) in want.iter().zip(&got).zip(&requests) {
        let (w, g) = (w.as_ref().unwrap(), g.as_ref().unwrap());
        assert!(!w.text.is_empty(), "{}", r.name);
        assert_eq!(g.text.trim(), w.text.trim(), "{}", r.name);
        assert_eq!(g.prompt_tokens, w.prompt_tokens, "{}", r.name);
    }
}

#[test]
fn a_served_qwen3_vl_checkpoint_replies_json_under_a_schema() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, adapter) = tiny_with_adapter(dir.path());
    let server = serve(&ckpt, &adapter);
    let png = std::fs::read({
        let p = dir.path().join("x.png");
        fixture::write_image(&p, 64, 64, 3).unwrap();
        p
    })
    .unwrap();
    let uri = format!(
        "data:image/png;base64,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png)
    );
    let body = json!({
        "model": "tiny",
        "max_tokens": 48,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": uri}},
            {"type": "text", "text": "Is it spam?"}]}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "v", "schema": {
            "type": "object", "properties": {"is_spam": {"type": "boolean"}},
            "required": ["is_spam"], "additionalProperties": false}}},
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply: Value = rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("{}/chat/completions", server.url()))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
    });
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(content).expect("the reply is JSON");
    assert!(parsed["is_spam"].is_boolean(), "{content}");
    assert!(
        reply["usage"]["prompt_tokens"].as_u64().unwrap() > 16,
        "{reply}"
    );
}

#[test]
fn only_local_models_are_served() {
    let e = load_decoder("replay:answers.jsonl", None)
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("serves a local model"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = tiny_with_adapter(dir.path());
    let e = load_decoder(ckpt.to_str().unwrap(), Some(&dir.path().join("none")))
        .err()
        .expect("missing adapter")
        .to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}
