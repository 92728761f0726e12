//! The default local model: fetch, tokenizer, greedy answers, clear errors.

use vlmtest::case::{Message, Role};
use vlmtest::model::fetch::ensure_default_model;
use vlmtest::model::gguf::GgufModel;
use vlmtest::model::{GenerationOptions, Model, ModelError, Request};

#[test]
fn tokenizer_round_trips_text_digits_and_chatml_tags() {
    let path = ensure_default_model().expect("default model");
    let model = GgufModel::load(&path).expect("load");
    let text = "<|im_start|>user\nWhat is 1,250 ml in litres? Crème brûlée ✓<|im_end|>\n";
    let ids = model.encode(text).expect("encode");
    let tok = model.tokenizer();
    // Control tokens are single ids, digits are split one by one, and no prefix space is added.
    assert_eq!(ids[0], tok.token_to_id("<|im_start|>").expect("im_start"));
    assert_eq!(tok.id_to_token(ids[1]).as_deref(), Some("user"));
    let digits: Vec<String> = ids
        .iter()
        .filter_map(|i| tok.id_to_token(*i))
        .filter(|t| t.chars().all(|c| c.is_ascii_digit()))
        .collect();
    assert_eq!(digits, ["1", "2", "5", "0"]);
    assert_eq!(tok.decode(&ids, false).expect("decode"), text);
}

#[test]
fn answers_a_simple_question_greedily_and_deterministically() {
    let path = ensure_default_model().expect("default model");
    let mut model = GgufModel::load(&path).expect("load");
    let msgs = vec![Message::text(Role::User, "What is the capital of France?")];
    let req = [Request {
        name: "t::t::france".into(),
        messages: &msgs,
    }];
    let opts = GenerationOptions { max_new_tokens: 24 };
    let a = model.generate(&req, &opts).remove(0).expect("answer");
    let b = model.generate(&req, &opts).remove(0).expect("answer");
    assert!(a.text.contains("Paris"), "{}", a.text);
    assert_eq!(a.text, b.text);
    assert!(a.generated_tokens <= 24);
}

#[test]
fn missing_and_corrupt_model_files_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.gguf");
    let err = GgufModel::load(&missing).err().expect("error");
    assert!(matches!(err, ModelError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("nope.gguf"));
    let bad = dir.path().join("bad.gguf");
    std::fs::write(
        &bad,
        b"this is not a gguf file at all, just some text padding it out",
    )
    .expect("write");
    let err = GgufModel::load(&bad).err().expect("error");
    assert!(
        err.to_string().contains("bad.gguf") && err.to_string().contains("not a GGUF"),
        "{err}"
    );
}
