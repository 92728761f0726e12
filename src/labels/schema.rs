//! The annotation request's prompt and JSON schema, and a validator for the schema subset that
//! constrained decoders (vLLM's, `vlmtest serve`'s) honour: `type` (one or a list), `properties`,
//! `required`, `additionalProperties` (boolean), `items`, `minItems` / `maxItems`, `enum`,
//! `const`, `minimum` / `maximum`, `minLength` / `maxLength`. Other keywords that constrain are
//! refused when the schema is loaded, so a `--schema` file never checks less than it says;
//! annotations (`title`, `description`, `$schema`, `default`, `examples`) are ignored.
//!
//! The defaults reproduce the seed's annotation: `scene`, `has_person`, `is_document`,
//! `is_screenshot`, and `objects` of `name_free`, `coarse_type`, `is_main`, `confidence`.

use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::LabelsError;
use crate::case::hex;

/// The system turn: JSON only.
pub const SYSTEM: &str = "You annotate photos for a photo library. Reply with one JSON object \
and nothing else: no prose, no code fence.";

/// The default user prompt, sent after the image.
pub const DEFAULT_PROMPT: &str = "Annotate this photo as a JSON object with these fields:
- \"scene\": one of \"product\", \"food\", \"people\", \"selfie\", \"animals\", \"document\", \"screenshot\", \"other\";
- \"has_person\": true when a person is visible;
- \"is_document\": true for a photo or scan of a document, receipt or page of text;
- \"is_screenshot\": true for a screenshot of a screen;
- \"objects\": up to 8 visible objects, most prominent first, each {\"name_free\": a short free-text name, \"coarse_type\": one lowercase word such as keyboard, mouse, monitor, phone, laptop, tablet, food, drink, dessert, \"is_main\": true for the photo's main subject, \"confidence\": a number from 0 to 1}.";

/// The scene values of the default schema: the seed's mapping keys and `other`.
pub const SCENES: [&str; 8] = [
    "product",
    "food",
    "people",
    "selfie",
    "animals",
    "document",
    "screenshot",
    "other",
];

/// The default response schema.
pub fn default_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "scene": {"type": "string", "enum": SCENES},
            "has_person": {"type": "boolean"},
            "is_document": {"type": "boolean"},
            "is_screenshot": {"type": "boolean"},
            "objects": {
                "type": "array",
                "maxItems": 8,
                "items": {
                    "type": "object",
                    "properties": {
                        "name_free": {"type": "string", "maxLength": 64},
                        "coarse_type": {"type": "string", "maxLength": 32},
                        "is_main": {"type": "boolean"},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1}
                    },
                    "required": ["name_free", "coarse_type", "is_main", "confidence"],
                    "additionalProperties": false
                }
            }
        },
        "required": ["scene", "has_person", "is_document", "is_screenshot", "objects"],
        "additionalProperties": false
    })
}

const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
];
const IGNORED: [&str; 6] = [
    "title",
    "description",
    "$schema",
    "$id",
    "default",
    "examples",
];

/// A schema checked to use only the subset `validate` implements.
#[derive(Debug, Clone, PartialEq)]
pub struct Schema(Value);

impl Schema {
    /// Checks `v` (every nested schema too).
    pub fn new(v: Value) -> Result<Self, String> {
        check(&v, "(root)")?;
        Ok(Self(v))
    }

    /// Reads a `--schema` file.
    pub fn read(path: &Path) -> Result<Self, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|e| LabelsError::read(path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| LabelsError::file(path, format!("not JSON: {e}")))?;
        Self::new(v).map_err(|e| LabelsError::file(path, e))
    }

    pub fn value(&self) -> &Value {
        &self.0
    }

    /// `Ok` when `v` matches; else the first mismatch, with its path (`objects[2].confidence`).
    pub fn validate(&self, v: &Value) -> Result<(), String> {
        validate(&self.0, v, "")
    }
}

fn check(s: &Value, at: &str) -> Result<(), String> {
    let o = s
        .as_object()
        .ok_or_else(|| format!("schema at {at} is not an object"))?;
    for (k, v) in o {
        if IGNORED.contains(&k.as_str()) {
            continue;
        }
        if !CHECKED.contains(&k.as_str()) {
            return Err(format!(
                "schema at {at}: keyword `{k}` is not supported (supported: {})",
                CHECKED.join(", ")
            ));
        }
        match k.as_str() {
            "type" => {
                let names: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                for n in names {
                    let ok = n.as_str().is_some_and(|n| {
                        [
                            "object", "array", "string", "number", "integer", "boolean", "null",
                        ]
                        .contains(&n)
                    });
                    if !ok {
                        return Err(format!("schema at {at}: unknown type {n}"));
                    }
                }
            }
            "properties" => {
                let props = v
                    .as_object()
                    .ok_or_else(|| format!("schema at {at}: `properties` is not an object"))?;
                for (name, sub) in props {
                    check(sub, &join(at, name))?;
                }
            }
            "items" => check(v, &format!("{at}[]"))?,
            "required" if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) => {
                return Err(format!("schema at {at}: `required` is not a list of names"));
            }
            "additionalProperties" if !v.is_boolean() => {
                return Err(format!(
                    "schema at {at}: only a boolean `additionalProperties` is supported"
                ))
            }
            "enum" if !v.is_array() => return Err(format!("schema at {at}: `enum` is not a list")),
            "minimum" | "maximum" if !v.is_number() => {
                return Err(format!("schema at {at}: `{k}` is not a number"))
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" if !v.is_u64() => {
                return Err(format!("schema at {at}: `{k}` is not a count"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn join(at: &str, name: &str) -> String {
    if at.is_empty() || at == "(root)" {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "integer" => v.as_i64().is_some() || v.as_u64().is_some(),
        other => type_name(v) == other,
    }
}

fn validate(s: &Value, v: &Value, at: &str) -> Result<(), String> {
    let place = if at.is_empty() { "the reply" } else { at };
    let fail = |m: String| Err(format!("{place}: {m}"));
    if let Some(t) = s.get("type") {
        let types: Vec<&str> = match t {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            one => one.as_str().into_iter().collect(),
        };
        if !types.iter().any(|t| has_type(v, t)) {
            return fail(format!(
                "expected {}, got {}",
                types.join(" or "),
                type_name(v)
            ));
        }
    }
    if let Some(Value::Array(options)) = s.get("enum") {
        if !options.contains(v) {
            return fail(format!(
                "{v} is not one of {}",
                Value::Array(options.clone())
            ));
        }
    }
    if let Some(c) = s.get("const") {
        if c != v {
            return fail(format!("{v} is not {c}"));
        }
    }
    if let Some(x) = v.as_f64() {
        if let Some(min) = s.get("minimum").and_then(Value::as_f64) {
            if x < min {
                return fail(format!("{x} is below the minimum {min}"));
            }
        }
        if let Some(max) = s.get("maximum").and_then(Value::as_f64) {
            if x > max {
                return fail(format!("{x} is above the maximum {max}"));
            }
        }
    }
    if let Some(text) = v.as_str() {
        let n = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
            if n < min {
                return fail(format!("{n} characters, fewer than {min}"));
            }
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
            if n > max {
                return fail(format!("{n} characters, more than {max}"));
            }
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if n < min {
                return fail(format!("{n} items, fewer than {min}"));
            }
        }
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if n > max {
                return fail(format!("{n} items, more than {max}"));
            }
        }
        if let Some(item) = s.get("items") {
            for (i, x) in items.iter().enumerate() {
                validate(
                    item,
                    x,
                    &format!("{}[{i}]", if at.is_empty() { "" } else { at }),
                )?;
            }
        }
    }
    if let Some(o) = v.as_object() {
        let props = s.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(req)) = s.get("required") {
            for r in req.iter().filter_map(Value::as_str) {
                if !o.contains_key(r) {
                    return fail(format!("missing field `{r}`"));
                }
            }
        }
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(sub) => validate(sub, x, &join(at, k))?,
                None if s.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return fail(format!("unexpected field `{k}`"))
                }
                None => {}
            }
        }
    }
    Ok(())
}

/// The provenance hash of a request template: SHA-256 over the system turn, the prompt and the
/// schema's compact JSON, first 16 hex digits.
pub fn prompt_hash(system: &str, prompt: &str, schema: &Schema) -> String {
    let mut h = Sha256::new();
    for part in [system, prompt, &schema.value().to_string()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    hex(&h.finalize())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good() -> Value {
        json!({"scene": "product", "has_person": false, "is_document": false, "is_screenshot": false,
               "objects": [{"name_free": "mechanical keyboard", "coarse_type": "keyboard", "is_main": true, "confidence": 0.92}]})
    }

    #[test]
    fn the_seed_annotation_validates_and_mistakes_are_named() {
        let s = Schema::new(default_schema()).unwrap();
        assert_eq!(s.validate(&good()), Ok(()));
        let mut v = good();
        v["objects"][0]["confidence"] = json!(1.5);
        assert_eq!(
            s.validate(&v).unwrap_err(),
            "objects[0].confidence: 1.5 is above the maximum 1"
        );
        let mut v = good();
        v["scene"] = json!("landscape");
        assert!(s
            .validate(&v)
            .unwrap_err()
            .starts_with("scene: \"landscape\" is not one of"));
        let mut v = good();
        v.as_object_mut().unwrap().remove("has_person");
        assert_eq!(
            s.validate(&v).unwrap_err(),
            "the reply: missing field `has_person`"
        );
        let mut v = good();
        v["extra"] = json!(1);
        assert_eq!(
            s.validate(&v).unwrap_err(),
            "the reply: unexpected field `extra`"
        );
        assert_eq!(
            s.validate(&json!([1])).unwrap_err(),
            "the reply: expected object, got array"
        );
    }

    #[test]
    fn unsupported_keywords_are_refused() {
        let e = Schema::new(json!({"type": "object", "properties": {"a": {"anyOf": []}}}));
        assert!(e.unwrap_err().contains("keyword `anyOf` is not supported"));
        assert!(Schema::new(json!({"type": "thing"})).is_err());
        assert!(Schema::new(json!({"type": "object", "description": "ok"})).is_ok());
        let a = Schema::new(default_schema()).unwrap();
        let b = Schema::new(json!({"type": "object"})).unwrap();
        assert_ne!(
            prompt_hash(SYSTEM, DEFAULT_PROMPT, &a),
            prompt_hash(SYSTEM, DEFAULT_PROMPT, &b)
        );
        assert_eq!(prompt_hash(SYSTEM, DEFAULT_PROMPT, &a).len(), 16);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-3.0f64..3.0).prop_map(|x| json!(x)),
            prop::sample::select(SCENES.to_vec()).prop_map(|s| json!(s)),
            "[a-z ]{0,70}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec![
                        "scene",
                        "has_person",
                        "is_document",
                        "is_screenshot",
                        "objects",
                        "name_free",
                        "coarse_type",
                        "is_main",
                        "confidence",
                        "x"
                    ]),
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// The validator never panics, and what it accepts has the default schema's shape.
        #[test]
        fn accepted_values_have_the_shape(v in json_value()) {
            let s = Schema::new(default_schema()).unwrap();
            if s.validate(&v).is_ok() {
                prop_assert!(SCENES.contains(&v["scene"].as_str().unwrap()));
                let objs = v["objects"].as_array().unwrap();
                prop_assert!(objs.len() <= 8);
                for o in objs {
                    let c = o["confidence"].as_f64().unwrap();
                    prop_assert!((0.0..=1.0).contains(&c));
                }
            }
        }
    }
}
