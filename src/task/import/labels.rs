//! Image-label ground truth (seed 004): a JSONL file (or a JSON list) of `{"image_id", "scene":
//! [..], "attributes": {..}, "objects": [..]}` beside images named by their content hash
//! (`<image_id>.jpg|jpeg|png|webp`). A 64-hex-digit id is checked against the image's SHA-256.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{make_case, read, CaseParts, ImportOptions, Imported};
use crate::case::hex;
use crate::task::labels::LabelTruth;
use crate::task::prompt::{LABELS_SYSTEM, LABELS_USER};
use crate::task::TaskError;

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
        let category = truth.scene[0].trim_start_matches("scene.").to_owned();
        let reference = serde_json::json!({
            "scene": truth.scene[0], "attributes": truth.attributes, "objects": truth.objects
        })
        .to_string();
        let short = &id[..id.len().min(16)];
        out.cases.push(make_case(CaseParts {
            suite,
            category: &category,
            id: short,
            system: LABELS_SYSTEM,
            user: LABELS_USER.to_owned(),
            images: vec![image],
            reference,
            task: "labels",
            spec: serde_json::to_value(&truth).unwrap_or(Value::Null),
            metadata: BTreeMap::from([("image_id".to_owned(), Value::String(id.clone()))]),
            file: path,
            line,
        }));
    }
    Ok(out)
}
