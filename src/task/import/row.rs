//! Cases as validation rows (`cases/*.jsonl`): `{"id", "image", "conversations", "metadata",
//! "expect"}` with image paths relative to the JSONL file's folder and the reference answer as the
//! last assistant turn.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::case::{Case, ImageSource, Role};
use crate::task::TaskError;

/// Lexically normalised absolute form of `p` (no file-system access, `..` folded).
fn absolute(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// `path` relative to the folder `base`, using `..` where needed.
pub fn relative_to(path: &Path, base: &Path) -> PathBuf {
    let (p, b) = (absolute(path), absolute(base));
    let pc: Vec<Component> = p.components().collect();
    let bc: Vec<Component> = b.components().collect();
    let common = pc.iter().zip(&bc).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..bc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c);
    }
    out
}

/// One case as a JSONL row object.
pub fn case_to_row(case: &Case, jsonl_dir: &Path) -> Value {
    let mut images = Vec::new();
    let mut conversations = Vec::new();
    for m in &case.messages {
        for img in m.images() {
            if let ImageSource::Path(p) = img {
                images.push(Value::String(
                    relative_to(p, jsonl_dir)
                        .to_string_lossy()
                        .replace('\\', "/"),
                ));
            }
        }
        conversations.push(json!({ "role": m.role.as_str(), "content": m.joined_text() }));
    }
    if let Some(r) = &case.reference {
        conversations.push(json!({ "role": Role::Assistant.as_str(), "content": r }));
    }
    let mut row = Map::new();
    row.insert("id".into(), Value::String(case.id.id.clone()));
    match images.len() {
        0 => {}
        1 => {
            row.insert("image".into(), images.remove(0));
        }
        _ => {
            row.insert("image".into(), Value::Array(images));
        }
    }
    row.insert("conversations".into(), Value::Array(conversations));
    row.insert(
        "metadata".into(),
        serde_json::to_value(&case.metadata).unwrap_or(Value::Null),
    );
    row.insert(
        "expect".into(),
        serde_json::to_value(&case.expect).unwrap_or(Value::Null),
    );
    Value::Object(row)
}

/// Writes the cases as JSONL at `out` (creating its folder).
pub fn write_jsonl(cases: &[Case], out: &Path) -> Result<(), TaskError> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let werr = |source| TaskError::Write {
        path: out.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(werr)?;
    let mut buf = Vec::new();
    for c in cases {
        let line = serde_json::to_string(&case_to_row(c, dir))
            .map_err(|e| werr(std::io::Error::other(e)))?;
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    std::fs::File::create(out)
        .and_then(|mut f| f.write_all(&buf))
        .map_err(werr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/a/b/c.png"), Path::new("/a/d")),
            PathBuf::from("../b/c.png")
        );
        assert_eq!(
            relative_to(Path::new("/a/d/x/c.png"), Path::new("/a/d")),
            PathBuf::from("x/c.png")
        );
    }

    proptest! {
        #[test]
        fn relative_resolves_back(p in prop::collection::vec("[a-c]{1,2}", 1..5), b in prop::collection::vec("[a-c]{1,2}", 0..4)) {
            let path = PathBuf::from("/").join(p.join("/"));
            let base = PathBuf::from("/").join(b.join("/"));
            let rel = relative_to(&path, &base);
            prop_assert_eq!(absolute(&base.join(rel)), absolute(&path));
        }
    }
}
