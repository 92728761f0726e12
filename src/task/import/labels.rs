//! Image-label ground truth (seed 004): a JSONL file (or a JSON list) of `{"image_id", "scene":
//! [..], "attributes": {..}, "objects": [..]}` beside images named by their content hash
//! (`<image_id>.jpg|jpeg|png|webp`). A 64-hex-digit id is checked against the image's SHA-256.
//!
//! Test names are `suite::image::<id>`: the true scene is kept in the metadata (`scene`, a slice
//! of the labels report) but never in the name, so a human who corrects a scene keeps the case's
//! name, its cached answer and its history.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{make_case, read, CaseParts, ImportOptions, Imported};
use crate::case::hex;
use crate::task::labels::LabelTruth;
use crate::task::prompt::{LABELS_SYSTEM, LABELS_USER};
use crate::task::TaskError;

/// The middle part of every labels test name.
pub const CATEGORY: &str = "image";

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "JPG"];

/// Reads one record; errors name the field.
pub fn parse_record(
    file: &Path,
    line: usize,
    v: &Value,
) -> Result<(String, LabelTruth), TaskError> {
    let err = |field: &str, msg: String| TaskError::row(file, line, field, msg);
    let o = v
        .as_object()
        .ok_or_else(|| err("(row)", "not a JSON object".into()))?;
    for k in o.keys() {
        if !["image_id", "scene", "attributes", "objects"].contains(&k.as_str()) {
            return Err(err(k, "unknown field".into()));
        }
    }
    let id = o
        .get("image_id")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err("image_id", "missing or not a non-empty string".into()))?;
    let scene = match o.get("scene") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err("scene", "holds a non-string".into()))
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(err("scene", "missing, empty, or not a string list".into())),
    };
    let attributes = match o.get("attributes") {
        None => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_bool()
                    .map(|b| (k.clone(), b))
                    .ok_or_else(|| err(&format!("attributes.{k}"), "not a boolean".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("attributes", "not an object".into())),
    };
    let objects = match o.get("objects") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| err("objects", "holds a non-string".into()))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("objects", "not a list".into())),
    };
    Ok((
        id.to_owned(),
        LabelTruth {
            scene,
            attributes,
            objects,
        },
    ))
}

fn find_image(dir: &Path, id: &str) -> Option<PathBuf> {
    EXTENSIONS
        .iter()
        .map(|e| dir.join(format!("{id}.{e}")))
        .find(|p| p.is_file())
}

pub fn import(path: &Path, suite: &str, o: &ImportOptions) -> Result<Imported, TaskError> {
    let text = read(path)?;
    let dir = o
        .images
        .clone()
        .unwrap_or_else(|| path.parent().unwrap_or(Path::new(".")).to_owned());
    // The seed's tools write either a JSON list or JSONL; a list's items are numbered from 1.
    let records: Vec<(usize, Result<Value, TaskError>)> = match serde_json::from_str::<Value>(&text)
    {
        Ok(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (i + 1, Ok(v)))
            .collect(),
        _ => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                (
                    i + 1,
                    serde_json::from_str(l)
                        .map_err(|e| TaskError::row(path, i + 1, "json", e.to_string())),
                )
            })
            .collect(),
    };
    let mut out = Imported::default();
    for (line, v) in records {
        let rec = v.and_then(|v| parse_record(path, line, &v));
        let (id, truth) = match rec {
            Ok(r) => r,
            Err(e) => {
                out.rejected.push(e);
                continue;
            }
        };
        let Some(image) = find_image(&dir, &id) else {
            out.rejected.push(TaskError::row(
                path,
                line,
                "image_id",
                format!("no image {id}.jpg/.png in {}", dir.display()),
            ));
            continue;
        };
        if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = std::fs::read(&image).map_err(|source| TaskError::Read {
                path: image.clone(),
                source,
            })?;
            let digest = hex(&Sha256::digest(&bytes));
            if !digest.eq_ignore_ascii_case(&id) {
                out.rejected.push(TaskError::row(
                    path,
                    line,
                    "image_id",
                    format!("{} has SHA-256 {digest}", image.display()),
                ));
                continue;
            }
        }
        let scene = truth.scene[0].clone();
        let reference = serde_json::json!({
            "scene": truth.scene[0], "attributes": truth.attributes, "objects": truth.objects
        })
        .to_string();
        let short = &id[..id.len().min(16)];
        out.cases.push(make_case(CaseParts {
            suite,
            category: CATEGORY,
            id: short,
            system: LABELS_SYSTEM,
            user: LABELS_USER.to_owned(),
            images: vec![image],
            reference,
            task: "labels",
            spec: serde_json::to_value(&truth).unwrap_or(Value::Null),
            metadata: BTreeMap::from([
                ("image_id".to_owned(), Value::String(id.clone())),
                ("scene".to_owned(), Value::String(scene)),
            ]),
            file: path,
            line,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn fields_are_named() {
        let f = Path::new("gt.jsonl");
        let e = parse_record(
            f,
            3,
            &json!({"image_id": "a", "scene": "scene.food", "attributes": {"attr.x": 1}}),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "gt.jsonl:3: field `attributes.attr.x`: not a boolean"
        );
        let e = parse_record(f, 4, &json!({"image_id": "a", "scene": [], "extra": 1}));
        assert_eq!(
            e.unwrap_err().to_string(),
            "gt.jsonl:4: field `extra`: unknown field"
        );
        let (id, t) = parse_record(f, 5, &json!({"image_id": "a", "scene": "scene.food"})).unwrap();
        assert_eq!((id.as_str(), t.scene), ("a", vec!["scene.food".to_owned()]));
    }

    #[test]
    fn a_corrected_scene_keeps_the_case_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("8f14e45fceea167a5a36dedd4bea2543.png"),
            b"png",
        )
        .unwrap();
        let gt = dir.path().join("gt.jsonl");
        let names = |scene: &str| {
            std::fs::write(
                &gt,
                format!("{{\"image_id\": \"8f14e45fceea167a5a36dedd4bea2543\", \"scene\": [\"{scene}\"]}}\n"),
            )
            .unwrap();
            let imported = import(&gt, "photos", &ImportOptions::default()).unwrap();
            assert!(imported.rejected.is_empty(), "{:?}", imported.rejected);
            let c = &imported.cases[0];
            (c.id.test_name(), c.metadata["scene"].clone())
        };
        let (before, s1) = names("scene.food");
        let (after, s2) = names("scene.product");
        assert_eq!(before, "photos::image::8f14e45fceea167a");
        assert_eq!(before, after);
        assert_eq!((s1, s2), (json!("scene.food"), json!("scene.product")));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            "[a-z.]{0,8}".prop_map(Value::String),
            any::<i32>().prop_map(|n| json!(n)),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["image_id", "scene", "attributes", "objects", "x"]),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_is_a_record_or_a_named_error(v in json_value()) {
            match parse_record(Path::new("g"), 1, &v) {
                Ok((id, t)) => { prop_assert!(!id.is_empty()); prop_assert!(!t.scene.is_empty()); }
                Err(e) => prop_assert!(e.to_string().starts_with("g:1: field `")),
            }
        }
    }
}
