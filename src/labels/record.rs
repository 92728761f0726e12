//! One line of `annotate`'s output: `{"image_id", "image_path", "rel_path", "annotation" | "error",
//! "model", "prompt_hash", "timestamp", …}`, and its reader, which also takes the seed's own lines
//! (they carry `server_path` and lack the provenance fields).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::LabelsError;

/// Why an image has an error line instead of an annotation. Each is final for that image's
/// bytes: a resumed run does not retry it. (An endpoint that cannot be reached writes no line, so
/// a resumed run does retry those.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The file could not be read (permissions, I/O error); it has no id.
    Unreadable,
    /// A zero-byte file.
    Empty,
    /// Over `--max-bytes`.
    TooLarge,
    /// The bytes are not an image format the server takes, whatever the extension says.
    NotAnImage,
    /// The server refused this request (HTTP 400, 413, 422).
    Rejected,
    /// The reply was not JSON matching the schema, before and after the repair round.
    InvalidReply,
}

/// An output line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawRecord {
    /// The content id; `None` only for a file that could not be read.
    pub image_id: Option<String>,
    pub image_path: String,
    pub rel_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<ErrorKind>,
    /// The last unusable reply (cut at 2,000 characters), for an `invalid_reply` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    pub model: String,
    pub prompt_hash: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

/// What the readers need of a line, ours or the seed's.
#[derive(Debug, Clone, PartialEq)]
pub struct RawLine {
    pub line: usize,
    pub image_id: Option<String>,
    pub rel_path: Option<String>,
    /// The annotation object, or the error message.
    pub outcome: Result<Value, String>,
    pub model: Option<String>,
    pub prompt_hash: Option<String>,
}

/// Reads one line's value; errors name the field.
pub fn parse_line(path: &Path, line: usize, v: &Value) -> Result<RawLine, LabelsError> {
    let err = |field: &str, m: &str| LabelsError::field(path, line, field, m);
    let o = v
        .as_object()
        .ok_or_else(|| err("(line)", "not a JSON object"))?;
    let image_id = match o.get("image_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(err("image_id", "not a non-empty string")),
    };
    let text = |k: &str| -> Result<Option<String>, LabelsError> {
        match o.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err(k, "not a string")),
        }
    };
    let rel_path = text("rel_path")?;
    let error = text("error")?;
    let outcome = match (o.get("annotation"), error) {
        (Some(a @ Value::Object(_)), None) => Ok(a.clone()),
        (Some(Value::Object(_)), Some(_)) => {
            return Err(err("error", "a line holds both `annotation` and `error`"))
        }
        (None | Some(Value::Null), Some(e)) => Err(e),
        (None | Some(Value::Null), None) => {
            return Err(err("annotation", "missing (and no `error` either)"))
        }
        (Some(_), _) => return Err(err("annotation", "not an object")),
    };
    if image_id.is_none() && outcome.is_ok() {
        return Err(err("image_id", "missing on an annotated line"));
    }
    if image_id.is_none() && rel_path.is_none() {
        return Err(err("rel_path", "missing on a line without an image_id"));
    }
    Ok(RawLine {
        line,
        image_id,
        rel_path,
        outcome,
        model: text("model")?,
        prompt_hash: text("prompt_hash")?,
    })
}

/// Now as RFC 3339 UTC with seconds, e.g. `2025-01-31T09:05:00Z`.
pub fn timestamp_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (the proleptic Gregorian calendar, by the
/// days-from-civil inverse of Howard Hinnant's algorithm).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_738_314_300), "2025-01-31T09:05:00Z");
    }

    #[test]
    fn seed_lines_and_ours() {
        let p = Path::new("raw.jsonl");
        let seed = json!({"image_id": "8f14e45fceea167a5a36dedd4bea2543", "server_path": "/x",
            "image_path": "/x", "rel_path": "2024/IMG.JPG", "annotation": {"scene": "product"}});
        let l = parse_line(p, 1, &seed).unwrap();
        assert_eq!(l.outcome, Ok(json!({"scene": "product"})));
        let e = parse_line(p, 2, &json!({"rel_path": "a.jpg", "error": "unreadable"})).unwrap();
        assert_eq!((e.image_id, e.outcome), (None, Err("unreadable".into())));
        let bad = parse_line(p, 3, &json!({"image_id": "a", "annotation": [1]}));
        assert_eq!(
            bad.unwrap_err().to_string(),
            "raw.jsonl:3: field `annotation`: not an object"
        );
        let both = parse_line(
            p,
            4,
            &json!({"image_id": "a", "annotation": {}, "error": "x"}),
        );
        assert!(both.is_err());
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z0-9/.]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 12, 4, |inner| {
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "image_id",
                    "rel_path",
                    "annotation",
                    "error",
                    "model",
                    "scene",
                ]),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()))
        })
    }

    proptest! {
        #[test]
        fn any_value_is_a_line_or_a_named_error(v in value()) {
            match parse_line(Path::new("r"), 7, &v) {
                Ok(l) => {
                    prop_assert!(l.image_id.is_some() || l.rel_path.is_some());
                    prop_assert!(l.outcome.is_err() || l.image_id.is_some());
                }
                Err(e) => prop_assert!(e.to_string().starts_with("r:7: field `"), "{}", e),
            }
        }

        #[test]
        fn timestamps_are_well_formed(secs in 0u64..8_000_000_000) {
            let t = rfc3339(secs);
            prop_assert_eq!(t.len(), 20);
            let month: u32 = t[5..7].parse().unwrap();
            let day: u32 = t[8..10].parse().unwrap();
            prop_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
        }
    }
}
