//! The automaton, the schema compiler and the picker against JSON texts that do and do not match.

use std::sync::Arc;

use super::*;
use serde_json::json;

fn run(schema: &Schema, text: &str) -> Result<bool, usize> {
    let mut c = JsonConstraint::new(Arc::new(schema.clone()));
    for (i, b) in text.bytes().enumerate() {
        c.feed(b).map_err(|_| i)?;
    }
    Ok(c.is_complete())
}

fn judge_schema() -> Schema {
    Schema::compile(&json!({
        "type": "object",
        "properties": {"reason": {"type": "string"}, "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}},
        "required": ["reason", "score"],
    }))
    .unwrap()
}

#[test]
fn accepts_matching_texts_and_rejects_others() {
    let s = judge_schema();
    assert_eq!(
        run(&s, r#"{"reason": "fine \"x\" \u00e9 é", "score": 4}"#),
        Ok(true)
    );
    assert_eq!(run(&s, "{\n  \"reason\":\"\",\"score\":5}"), Ok(true));
    assert_eq!(run(&s, r#"{"reason": "fine", "score": 4"#), Ok(false));
    assert!(
        run(&s, r#"{"score": 4, "reason": ""}"#).is_err(),
        "order follows `required`"
    );
    assert!(run(&s, r#"{"reason": "x", "score": 7}"#).is_err());
    assert!(
        run(&s, r#"{"reason": "x", "score": 4} "#).is_err(),
        "nothing after the end"
    );
    assert!(run(&s, "The answer").is_err());
    assert!(
        run(&s, "{\"reason\": \"a\nb\"").is_err(),
        "raw control characters"
    );
    assert!(
        run(&s, "{      \"reason\"").is_err(),
        "whitespace runs are capped"
    );
}

#[test]
fn any_object_and_nested_values() {
    let s = Schema::any_object();
    assert_eq!(
        run(
            &s,
            r#"{"a": [1, -2.5e3, true, null, {"b": "c"}], "d": false}"#
        ),
        Ok(true)
    );
    assert_eq!(run(&s, "{}"), Ok(true));
    assert!(run(&s, "[1]").is_err());
    assert!(run(&s, r#"{"a": 01}"#).is_err());
    assert!(run(&s, r#"{"a": tru}"#).is_err());
}

#[test]
fn arrays_strings_and_enums_respect_caps() {
    let s = Schema::compile(
        &json!({"type": "array", "items": {"type": "string", "maxLength": 2}, "maxItems": 2}),
    )
    .unwrap();
    assert_eq!(run(&s, r#"["ab", "c"]"#), Ok(true));
    assert!(run(&s, r#"["abc"]"#).is_err());
    assert!(run(&s, r#"["a", "b", "c"]"#).is_err());
    let e = Schema::compile(&json!({"enum": [1, 10, "x"]})).unwrap();
    assert_eq!(run(&e, "10"), Ok(true));
    assert_eq!(run(&e, "1"), Ok(true));
    assert!(run(&e, "2").is_err());
    let r = Schema::compile(&json!({"type": "integer", "minimum": 0, "maximum": 10})).unwrap();
    assert_eq!(run(&r, "10"), Ok(true));
    assert!(run(&r, "11").is_err());
}

#[test]
fn tighten_forces_the_shortest_close() {
    let s = Schema::compile(&json!({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string"}}, "score": {"enum": [1, 2]}},
        "required": ["items", "score"],
    }))
    .unwrap();
    let mut c = JsonConstraint::new(Arc::new(s));
    c.advance(br#"{"items": ["abc"#).unwrap();
    c.tighten();
    assert!(!c.accepts(b"d"));
    assert!(!c.accepts(b" "));
    assert!(c.accepts(b"\""));
    c.advance(b"\"").unwrap();
    assert!(!c.accepts(b","), "no more items");
    assert!(!c.accepts(b"] "), "no whitespace once tight");
    c.advance(br#"],"score":2}"#).unwrap();
    assert!(c.is_complete());
}

#[test]
fn tightening_right_after_a_comma_leaves_one_more_item() {
    let s = Schema::compile(&json!({
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"enum": ["yes", "no"]}}},
        "required": ["items"],
    }))
    .unwrap();
    let mut c = JsonConstraint::new(Arc::new(s));
    c.advance(br#"{"items": ["yes","#).unwrap();
    c.tighten();
    assert!(!c.accepts(b"]"), "a trailing comma is not JSON");
    c.advance(br#""no"]}"#).unwrap();
    assert!(c.is_complete());
    let mut c = JsonConstraint::new(Arc::new(Schema::any_object()));
    c.advance(br#"{"a": 1,"#).unwrap();
    c.tighten();
    assert!(c.accepts(b"\"\""), "one more key is due");
    c.advance(br#""":""}"#).unwrap();
    assert!(c.is_complete());
}

#[test]
fn rejects_what_it_cannot_honour() {
    assert!(Schema::compile(
        &json!({"type": "object", "properties": {"a": {}}, "required": ["b"]})
    )
    .is_err());
    assert!(Schema::compile(&json!({"type": "tuple"})).is_err());
}

/// A toy vocabulary: single bytes, a few JSON-ish multi-byte tokens, prose words, specials.
fn toy_vocab() -> Vec<Option<Vec<u8>>> {
    let mut v: Vec<Option<Vec<u8>>> = (0x20u8..0x7F).map(|b| Some(vec![b])).collect();
    for t in [
        "{\"", "\":", " \"", "\",", "\"}", "reason", "score", " the", " answer", "Hello", "4}",
        "}\n", "é", "\\u00",
    ] {
        v.push(Some(t.as_bytes().to_vec()));
    }
    v.push(None); // an end-of-sequence special token
    v
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn greedy_decoding_under_any_logits_yields_schema_valid_json(seed in proptest::prelude::any::<u64>()) {
        let vocab = toy_vocab();
        let eos = (vocab.len() - 1) as u32;
        let schema = Arc::new(judge_schema());
        let mut c = JsonConstraint::new(schema);
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(seed);
        for _ in 0..2000 {
            let logits: Vec<f32> = (0..vocab.len()).map(|_| rng.f32() * 10.0).collect();
            let id = pick(&c, &logits, &vocab, &[eos]).expect("a viable token always exists");
            if id == eos {
                break;
            }
            let bytes = vocab[id as usize].clone().unwrap();
            c.advance(&bytes).unwrap();
            out.extend_from_slice(&bytes);
        }
        proptest::prop_assert!(c.is_complete(), "did not finish: {}", String::from_utf8_lossy(&out));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        proptest::prop_assert!(v["reason"].is_string());
        proptest::prop_assert!((1..=5).contains(&v["score"].as_i64().unwrap()));
    }

    #[test]
    fn tightening_at_any_step_still_closes_the_json(seed in proptest::prelude::any::<u64>(), at in 0usize..120, any in proptest::prelude::any::<bool>()) {
        let vocab = toy_vocab();
        let eos = (vocab.len() - 1) as u32;
        let schema = if any {
            Schema::any_object()
        } else {
            Schema::compile(&json!({
                "type": "object",
                "properties": {
                    "statements": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"statement": {"type": "string"}, "relevant": {"enum": ["yes", "no", "idk"]}},
                        "required": ["statement", "relevant"],
                    }},
                    "reason": {"type": "string"},
                },
                "required": ["statements", "reason"],
            }))
            .unwrap()
        };
        let mut c = JsonConstraint::new(Arc::new(schema));
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut finished = false;
        for step in 0..(at + 600) {
            if step >= at {
                c.tighten();
            }
            // Favour structure-opening bytes so arrays and objects are open when tightening.
            let logits: Vec<f32> = (0..vocab.len())
                .map(|i| rng.f32() + if matches!(vocab[i].as_deref(), Some(b"[" | b"{" | b"," | b"\"")) { 0.8 } else { 0.0 })
                .collect();
            let id = pick(&c, &logits, &vocab, &[eos]);
            proptest::prop_assert!(id.is_some(), "dead end after {}", String::from_utf8_lossy(&out));
            let id = id.unwrap();
            if id == eos {
                finished = true;
                break;
            }
            let bytes = vocab[id as usize].clone().unwrap();
            c.advance(&bytes).unwrap();
            out.extend_from_slice(&bytes);
        }
        proptest::prop_assert!(finished, "not closed 600 steps after tightening: {}", String::from_utf8_lossy(&out));
        proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).unwrap().is_object());
    }

    #[test]
    fn the_any_object_mode_yields_parseable_json(seed in proptest::prelude::any::<u64>()) {
        let vocab = toy_vocab();
        let eos = (vocab.len() - 1) as u32;
        let mut c = JsonConstraint::new(Arc::new(Schema::any_object()));
        let mut out = Vec::new();
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut finished = false;
        for _ in 0..20_000 {
            let logits: Vec<f32> = (0..vocab.len()).map(|_| rng.f32()).collect();
            let id = pick(&c, &logits, &vocab, &[eos]).unwrap();
            if id == eos {
                finished = true;
                break;
            }
            let bytes = vocab[id as usize].clone().unwrap();
            c.advance(&bytes).unwrap();
            out.extend_from_slice(&bytes);
        }
        if finished {
            proptest::prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).unwrap().is_object());
        }
    }
}
