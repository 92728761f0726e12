//! The deal folders of seed 000: `<root>/<store>_annotated/NNNN.json` (a list of deals, each with
//! `name`, `price`, optional `unit` and `bbox`, extra fields ignored) beside the page image
//! `<root>/<store>/NNNN.jpg` (or `.jpeg` / `.png`). A page with a bad deal or no image is
//! rejected whole, since a partial ground truth would skew every metric.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{make_case, read, CaseParts, Imported};
use crate::task::deals::{parse_deal, Deal, DealsSpec};
use crate::task::prompt::{DEALS_SYSTEM, DEALS_USER};
use crate::task::TaskError;

const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPG"];

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, TaskError> {
    let rd = std::fs::read_dir(dir).map_err(|source| TaskError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut v: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    v.sort();
    Ok(v)
}

/// Reads one annotation file's deals; errors name the file and the deal's field.
pub fn read_page(file: &Path) -> Result<Vec<Deal>, TaskError> {
    let text = read(file)?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| TaskError::row(file, e.line(), "json", e.to_string()))?;
    let list = v
        .as_array()
        .ok_or_else(|| TaskError::row(file, 1, "(top level)", "expected a list of deals"))?;
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            parse_deal(d).map_err(|e| {
                // The line of the deal in the file is not kept by serde_json; name the index.
                let field = e.split('`').nth(1).unwrap_or("deal");
                TaskError::row(file, 1, &format!("[{i}].{field}"), e)
            })
        })
        .collect()
}

fn image_for(root: &Path, store: &str, stem: &str) -> Option<PathBuf> {
    IMAGE_EXTENSIONS
        .iter()
        .map(|e| root.join(store).join(format!("{stem}.{e}")))
        .find(|p| p.is_file())
}

pub fn import(root: &Path, suite: &str) -> Result<Imported, TaskError> {
    let mut out = Imported::default();
    let folders: Vec<PathBuf> = sorted_entries(root)?
        .into_iter()
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with("_annotated"))
        })
        .collect();
    if folders.is_empty() {
        return Err(TaskError::Layout {
            path: root.to_owned(),
            message: "no `*_annotated` folder".into(),
        });
    }
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let store = name.trim_end_matches("_annotated").to_owned();
        for file in sorted_entries(&folder)?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let stem = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let deals = match read_page(&file) {
                Ok(d) => d,
                Err(e) => {
                    out.rejected.push(e);
                    continue;
                }
            };
            let Some(image) = image_for(root, &store, &stem) else {
                out.rejected.push(TaskError::row(
                    &file,
                    1,
                    "image",
                    format!("no {store}/{stem}.jpg beside the annotations"),
                ));
                continue;
            };
            let reference = serde_json::to_string(&deals).unwrap_or_default();
            let spec = DealsSpec {
                deals,
                matching: Default::default(),
                price_tolerance: 0.005,
                threshold: 0.5,
            };
            let metadata = BTreeMap::from([
                ("store".to_owned(), Value::String(store.clone())),
                ("page".to_owned(), Value::String(stem.clone())),
                ("deals".to_owned(), json!(spec.deals.len())),
            ]);
            out.cases.push(make_case(CaseParts {
                suite,
                category: &store,
                id: &stem,
                system: DEALS_SYSTEM,
                user: DEALS_USER.to_owned(),
                images: vec![image],
                reference,
                task: "deals",
                spec: serde_json::to_value(&spec).unwrap_or(Value::Null),
                metadata,
                file: &file,
                line: 1,
            }));
        }
    }
    Ok(out)
}
