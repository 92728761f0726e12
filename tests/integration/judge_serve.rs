//! `vlmtest serve` on the default model (SmolLM2-135M): constrained decoding makes its replies
//! parseable JSON under `response_format`, the judge runs end to end over loopback, and the
//! `openai:` model spec answers through the same server.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vlmtest::case::{Case, CaseId, Message, Origin, Role};
use vlmtest::judge::{JudgeItem, JudgeRunner, JudgeSettings};
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::model::gguf::GgufModel;
use vlmtest::model::openai::OpenAiModel;
use vlmtest::model::{GenerationOptions, Model, Request};
use vlmtest::score::ScoreStatus;
use vlmtest::serve::http::{spawn, ServerConfig, ServerHandle};

fn server() -> ServerHandle {
    let path = ensure_default_model().expect("default model");
    let model = GgufModel::load(&path).expect("load");
    let config = ServerConfig {
        name: "smollm2".into(),
        max_tokens_cap: 256,
    };
    spawn(Box::new(model), &config, "127.0.0.1:0".parse().unwrap()).expect("listen")
}

fn post(url: &str, body: &Value) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let r = reqwest::Client::new()
            .post(format!("{url}/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_slice(&r.bytes().await.unwrap()).unwrap(),
        )
    })
}

const GRADE: &str =
    "Grade the answer. Question: What is the capital of France? Reference: Paris. Answer: Berlin.";

#[test]
fn smollm2_replies_parseable_json_under_response_format_with_logprobs() {
    let s = server();
    let schema = json!({
        "type": "object",
        "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
        "required": ["reason", "score"],
        "additionalProperties": false,
    });
    let body = json!({
        "model": "smollm2",
        "messages": [
            {"role": "system", "content": "You are a judge. Reply with JSON: {\"reason\": ..., \"score\": 1-5}."},
            {"role": "user", "content": GRADE},
        ],
        "max_tokens": 96,
        "response_format": {"type": "json_schema", "json_schema": {"name": "grade", "strict": true, "schema": schema}},
        "logprobs": true,
        "top_logprobs": 5,
    });
    let (status, reply) = post(&s.url(), &body);
    assert_eq!(status, 200, "{reply}");
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(v["reason"].is_string(), "{content}");
    assert!((1..=5).contains(&v["score"].as_i64().unwrap()), "{content}");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    let tokens = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    let joined: String = tokens
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(joined, content);
    assert_eq!(
        reply["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        tokens.len()
    );

    // json_object mode: any object.
    let mut obj = body.clone();
    obj["response_format"] = json!({"type": "json_object"});
    obj["logprobs"] = json!(false);
    let (_, reply) = post(&s.url(), &obj);
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(v.is_object());

    // Free-form, the same prompt is not JSON (FACTS.md: a 135M model answers the question instead).
    let mut free = body.clone();
    free.as_object_mut().unwrap().remove("response_format");
    let (_, reply) = post(&s.url(), &free);
    let content = reply["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(content).is_err(),
        "unexpectedly JSON: {content}"
    );
}

#[test]
fn bad_requests_get_400_with_a_reason() {
    let s = server();
    let img = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]}]});
    let (status, reply) = post(&s.url(), &img);
    assert_eq!(status, 400);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot read images"),
        "{reply}"
    );
    let (status, reply) = post(&s.url(), &json!({"messages": "hi"}));
    assert_eq!(status, 400);
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("messages"),
        "{reply}"
    );
}

#[test]
fn the_judge_runs_live_against_served_smollm2_and_the_openai_spec_answers() {
    let s = server();
    let dir = tempfile::tempdir().unwrap();
    let settings = JudgeSettings {
        url: s.url(),
        model: "smollm2".into(),
        concurrency: 2,
        timeout_s: 300.0,
        max_tokens: 160,
        ..JudgeSettings::default()
    };
    let judges = Path::new(env!("CARGO_MANIFEST_DIR")).join("judges");
    let runner = JudgeRunner::new(settings, &judges, dir.path()).unwrap();
    let case = Case {
        id: CaseId::new("judge", "live", "france"),
        tags: vec![],
        messages: vec![Message::text(Role::User, "What is the capital of France?")],
        reference: Some("Paris".into()),
        context: Some("Paris is the capital of France.".into()),
        expect: vec![],
        metadata: BTreeMap::new(),
        ignored: false,
        origin: Origin {
            file: PathBuf::from("probes/judge.toml"),
            line: None,
        },
    };
    let items = [
        JudgeItem {
            case: &case,
            answer: "The capital of France is Paris.",
            rubric: "correctness",
            threshold: None,
        },
        JudgeItem {
            case: &case,
            answer: "The capital of France is Paris.",
            rubric: "faithfulness",
            threshold: None,
        },
    ];
    let scores = runner.score(&items);
    for sc in &scores {
        // SmolLM2's grades are not meaningful (FACTS.md); that every reply parses is the point.
        assert_eq!(sc.status, ScoreStatus::Scored, "{sc:?}");
        assert_eq!(sc.data["repaired"], false, "{sc:?}");
    }
    assert_eq!(runner.stats().errors, 0);

    let mut m = OpenAiModel::from_spec(&format!("openai:{}#smollm2", s.url())).unwrap();
    let msgs = vec![Message::text(Role::User, "What is the capital of France?")];
    let a = m.generate(
        &[Request {
            name: "x".into(),
            messages: &msgs,
        }],
        &GenerationOptions { max_new_tokens: 16 },
    );
    let a = a.into_iter().next().unwrap().unwrap();
    assert!(
        !a.text.is_empty() && a.generated_tokens <= 16 && a.prompt_tokens > 0,
        "{a:?}"
    );
}
