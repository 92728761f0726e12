//! Price rows (seed 003): a JSONL file, one object per line, with a numeric target (field
//! `price` unless `--target` says otherwise), an optional `id` / `sample_id`, an optional
//! `image` (a path relative to the file) and `category`; every other field is an input shown to
//! the model as `name: value`.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::{make_case, read, CaseParts, ImportOptions, Imported};
use crate::task::extract::json_number;
use crate::task::price::PriceSpec;
use crate::task::prompt::PRICE_SYSTEM;
use crate::task::TaskError;

const RESERVED: [&str; 4] = ["id", "sample_id", "image", "category"];

pub fn import(path: &Path, suite: &str, o: &ImportOptions) -> Result<Imported, TaskError> {
    let text = read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Imported::default();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match row(path, dir, line, raw, suite, o) {
            Ok(c) => out.cases.push(c),
            Err(e) => out.rejected.push(e),
        }
    }
    Ok(out)
}

fn row(
    path: &Path,
    dir: &Path,
    line: usize,
    raw: &str,
    suite: &str,
    o: &ImportOptions,
) -> Result<crate::case::Case, TaskError> {
    let v: Value =
        serde_json::from_str(raw).map_err(|e| TaskError::row(path, line, "json", e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| TaskError::row(path, line, "(row)", "not a JSON object"))?;
    let target = obj
        .get(&o.target)
        .ok_or_else(|| TaskError::row(path, line, &o.target, "missing"))?;
    let target = json_number(target)
        .filter(|t| t.is_finite())
        .ok_or_else(|| {
            TaskError::row(path, line, &o.target, format!("`{target}` is not a number"))
        })?;
    let id = match obj.get("id").or_else(|| obj.get("sample_id")) {
        None => format!("row{line}"),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(TaskError::row(
                path,
                line,
                "id",
                format!("`{other}` is not a string or number"),
            ))
        }
    };
    let category = match obj.get("category") {
        None => "price".to_owned(),
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(other) => {
            return Err(TaskError::row(
                path,
                line,
                "category",
                format!("`{other}` is not a string"),
            ))
        }
    };
    let image = match obj.get("image") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let p = dir.join(s);
            if !p.is_file() {
                return Err(TaskError::row(
                    path,
                    line,
                    "image",
                    format!("no file {}", p.display()),
                ));
            }
            Some(p)
        }
        Some(other) => {
            return Err(TaskError::row(
                path,
                line,
                "image",
                format!("`{other}` is not a path"),
            ))
        }
    };
    let mut inputs = Vec::new();
    for (k, v) in obj
        .iter()
        .filter(|(k, _)| !RESERVED.contains(&k.as_str()) && **k != o.target)
    {
        let shown = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        inputs.push(format!("{k}: {shown}"));
    }
    if inputs.is_empty() && image.is_none() {
        return Err(TaskError::row(
            path,
            line,
            "(inputs)",
            "no input fields and no image",
        ));
    }
    let user = format!(
        "What is the price of this product?\n\n{}",
        inputs.join("\n")
    );
    let spec = PriceSpec {
        target,
        max_smape: 20.0,
    };
    let metadata = BTreeMap::from([("target".to_owned(), json!(target))]);
    Ok(make_case(CaseParts {
        suite,
        category: &category,
        id: &id,
        system: PRICE_SYSTEM,
        user,
        images: image.into_iter().collect(),
        reference: json!({ "price": target }).to_string(),
        task: "price",
        spec: serde_json::to_value(&spec).unwrap_or(Value::Null),
        metadata,
        file: path,
        line,
    }))
}
