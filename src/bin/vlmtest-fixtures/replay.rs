//! Synthetic replay answers for the example suites: a deterministic mix of right, partly right,
//! wrong and malformed answers in the styles small models produce (code fences, prose around the
//! JSON, prices in words), so CI exercises every scoring path without a model.

use serde_json::{json, Value};
use vlmtest::case::{Case, Expectation};
use vlmtest::task::import::split::SplitMix64;

fn spec(case: &Case) -> Value {
    case.expect
        .iter()
        .find_map(|e| match e {
            Expectation::Task { spec, .. } => Some(spec.clone()),
            _ => None,
        })
        .unwrap_or(Value::Null)
}

fn fence(v: &Value) -> String {
    format!("```json\n{v}\n```")
}

fn deals(k: usize, s: &Value) -> String {
    let gt = s["deals"].as_array().cloned().unwrap_or_default();
    match k % 4 {
        0 => fence(&Value::Array(gt)),
        1 => {
            // Misses the last deal, misreads one price, leaves out boxes.
            let mut v: Vec<Value> = gt
                .iter()
                .take(gt.len().saturating_sub(1))
                .cloned()
                .collect();
            for d in &mut v {
                if let Some(o) = d.as_object_mut() {
                    o.remove("bbox");
                }
            }
            if let Some(d) = v.first_mut() {
                d["price"] = json!(d["price"].as_f64().unwrap_or(0.0) + 1.0);
            }
            format!("Here are the deals I found:\n{}", Value::Array(v))
        }
        2 => {
            let v: Vec<Value> = gt
                .iter()
                .map(|d| json!({"name": d["name"].as_str().unwrap_or("").to_lowercase(), "price": format!("${}", d["price"]), "unit": "each"}))
                .collect();
            Value::Array(v).to_string()
        }
        _ => "The flyer shows several grocery deals, for example bananas and milk at low prices."
            .into(),
    }
}

fn spam(rng: &mut SplitMix64, s: &Value) -> String {
    let truth = s["label"].as_u64() == Some(1);
    let roll = rng.below(100);
    let conf = 0.5 + rng.below(50) as f64 / 100.0;
    match roll {
        0..=9 => "This listing looks like spam because of the hashtags.".into(),
        10..=29 => json!({"is_spam": !truth, "confidence": conf, "reason": "unsure"}).to_string(),
        _ => fence(
            &json!({"is_spam": truth, "confidence": conf, "reason": if truth { "promotional text" } else { "plain product" }}),
        ),
    }
}

fn price(rng: &mut SplitMix64, s: &Value) -> String {
    let t = s["target"].as_f64().unwrap_or(0.0);
    let f = 0.8 + rng.below(40) as f64 / 100.0;
    match rng.below(10) {
        0 => "I cannot determine the price from this description.".into(),
        1 => format!("{{\"price\": {:.2}}}", t * 3.0),
        2 | 3 => format!("The price is about ${:.2}.", t * f),
        _ => format!("{{\"price\": {:.2}}}", t * f),
    }
}

fn labels(rng: &mut SplitMix64, s: &Value) -> String {
    let scene = s["scene"][0].as_str().unwrap_or("scene.other");
    let mut attrs = s["attributes"].clone();
    let objects = s["objects"].clone();
    match rng.below(10) {
        0 => "A photo of something.".into(),
        1 | 2 => {
            if let Some(o) = attrs.as_object_mut() {
                o.insert("attr.has_person".into(), json!(true));
            }
            json!({"scene": "scene.product", "attributes": attrs, "objects": ["object.food"]})
                .to_string()
        }
        _ => fence(&json!({"scene": scene, "attributes": attrs, "objects": objects})),
    }
}

/// One `{"name", "answer"}` line per case.
pub fn answers(kind: &str, cases: &[Case]) -> Vec<Value> {
    let mut rng = SplitMix64::new(7);
    cases
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let s = spec(c);
            let answer = match kind {
                "deals" => deals(k, &s),
                "spam" => spam(&mut rng, &s),
                "price" => price(&mut rng, &s),
                _ => labels(&mut rng, &s),
            };
            json!({"name": c.id.test_name(), "answer": answer})
        })
        .collect()
}
