//! Validation rows: `cases/<suite>.jsonl` in the training pipeline's format (seed 002) —
//! `image`, `conversations` (user/assistant turns), `metadata` — plus optional `id`, `expect`
//! and `ignore`. The last assistant turn is the reference answer and is not sent to the model.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{build, SuiteError};
use crate::case::{
    hex, Case, CaseId, Expectation, ExpectedNumber, Message, Origin, Role, Tolerance,
};
use crate::config::{RowScorer, SuiteConfig};
use crate::score::numbers;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    role: Role,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: Option<String>,
    image: Option<OneOrMany>,
    conversations: Vec<RawTurn>,
    #[serde(default)]
    metadata: BTreeMap<String, serde_json::Value>,
    expect: Option<Vec<Expectation>>,
    #[serde(default)]
    ignore: bool,
}

/// Parses one row, naming the path of the field an error is about (`conversations[1].role`).
fn parse_row(line: &str) -> Result<RawRow, (Option<String>, String)> {
    let mut de = serde_json::Deserializer::from_str(line);
    let raw = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        (field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| (None, e.to_string()))?;
    Ok(raw)
}

/// Loads one JSONL file. Every bad line is reported with its number (a line that is not UTF-8
/// too); good lines still load. A UTF-8 byte-order mark at the start is skipped.
pub fn load(
    file: &Path,
    suite: &str,
    cfg: &SuiteConfig,
    root: &Path,
) -> (Vec<Case>, Vec<SuiteError>) {
    let bytes = match build::read_bytes(file) {
        Ok(b) => b,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = i + 1;
        let line = match std::str::from_utf8(line) {
            Ok(l) => l.strip_suffix('\r').unwrap_or(l),
            Err(e) => {
                errors.push(SuiteError::new(
                    file,
                    Some(line_no),
                    None,
                    format!("not UTF-8 text ({e})"),
                ));
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawRow = match parse_row(line) {
            Ok(r) => r,
            Err((field, msg)) => {
                errors.push(SuiteError::new(file, Some(line_no), field.as_deref(), msg));
                continue;
            }
        };
        match to_case(raw, line, file, line_no, suite, cfg, root) {
            Ok(c) => cases.push(c),
            Err(e) => errors.push(e),
        }
    }
    (cases, errors)
}

fn to_case(
    raw: RawRow,
    line_text: &str,
    file: &Path,
    line: usize,
    suite: &str,
    cfg: &SuiteConfig,
    root: &Path,
) -> Result<Case, SuiteError> {
    let err = |field: &str, msg: String| SuiteError::new(file, Some(line), Some(field), msg);
    let last_assistant = raw
        .conversations
        .iter()
        .rposition(|t| t.role == Role::Assistant);
    let (prompt_turns, reference) = match last_assistant {
        Some(i) if i + 1 == raw.conversations.len() => (
            &raw.conversations[..i],
            Some(raw.conversations[i].content.clone()),
        ),
        _ => (&raw.conversations[..], None),
    };
    if !prompt_turns.iter().any(|t| t.role == Role::User) {
        return Err(err(
            "conversations",
            "needs a user turn before the reference answer".into(),
        ));
    }
    let mut messages: Vec<Message> = prompt_turns
        .iter()
        .map(|t| Message::text(t.role, t.content.clone()))
        .collect();

    let meta_str = |k: &str| {
        raw.metadata
            .get(k)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let id = match raw.id.clone().or_else(|| meta_str("id")) {
        Some(id) => id,
        None => format!("row_{}", &hex(&Sha256::digest(line_text.as_bytes()))[..8]),
    };
    build::check_name_part(&id).map_err(|m| err("id", m))?;
    let category = meta_str("category")
        .or_else(|| meta_str("content_type"))
        .unwrap_or_else(|| "rows".into());
    let category: String = category
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();

    let context = meta_str("context");
    let mut metadata = raw.metadata;
    let images: Vec<String> = match raw.image {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    build::attach_images(
        &mut messages,
        &images,
        file,
        Some(line),
        "image",
        root,
        cfg.missing_image,
        &mut metadata,
    )?;
    build::prepend_system(&mut messages, cfg);

    let mut expect = raw.expect.unwrap_or_default();
    if let Some(reference) = &reference {
        for scorer in &cfg.row_scorers {
            match scorer {
                RowScorer::Numbers => {
                    let found: Vec<ExpectedNumber> = numbers::extract(reference)
                        .into_iter()
                        .map(|q| ExpectedNumber {
                            value: q.value,
                            unit: q.unit.map(str::to_owned),
                        })
                        .collect();
                    if !found.is_empty() {
                        let tolerance = Tolerance {
                            abs: 1e-9,
                            rel: cfg.row_tolerance,
                        };
                        expect.push(Expectation::Numbers {
                            numbers: found,
                            tolerance,
                            min_matched: None,
                            threshold: cfg.threshold("numeric", 1.0),
                        });
                    }
                }
                RowScorer::TokenF1 => expect.push(Expectation::TokenF1 {
                    reference: reference.clone(),
                    threshold: cfg.threshold("token_f1", 0.5),
                }),
                RowScorer::Exact => expect.push(Expectation::Exact {
                    text: reference.clone(),
                    normalise: true,
                }),
            }
        }
    }
    for rubric in &cfg.row_judges {
        expect.push(Expectation::Judge {
            rubric: rubric.clone(),
            threshold: cfg.thresholds.get(&format!("judge.{rubric}")).copied(),
        });
    }
    if expect.is_empty() {
        return Err(err(
            "conversations",
            "nothing to check: no reference numbers, no `expect`, and no row scorer applies".into(),
        ));
    }
    Ok(Case {
        id: CaseId::new(suite, &category, &id),
        tags: Vec::new(),
        messages,
        reference,
        context,
        expect,
        metadata,
        ignored: raw.ignore,
        origin: Origin {
            file: file.to_path_buf(),
            line: Some(line),
        },
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn load_text(text: &str) -> (Vec<Case>, Vec<SuiteError>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cases").join("s.jsonl");
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, text).expect("write");
        load(&file, "s", &SuiteConfig::default(), dir.path())
    }

    #[test]
    fn a_row_without_numbers_or_expectations_is_an_error() {
        let (cases, errors) = load_text(
            r#"{"conversations": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}"#,
        );
        assert!(cases.is_empty());
        assert!(
            errors[0]
                .to_string()
                .contains("s.jsonl:1: field `conversations`: nothing to check"),
            "{}",
            errors[0]
        );
    }

    proptest! {
        #[test]
        fn any_line_loads_or_names_its_line(lines in proptest::collection::vec("\\PC{0,40}", 1..6)) {
            let text = lines.join("\n");
            let (cases, errors) = load_text(&text);
            let non_empty = lines.iter().filter(|l| !l.trim().is_empty()).count();
            prop_assert_eq!(cases.len() + errors.len(), non_empty);
            for e in errors {
                prop_assert!(e.line.is_some());
            }
        }

        #[test]
        fn numbers_in_the_reference_become_expectations(v in 1u32..10_000, unit in prop::sample::select(vec!["Nm", "bar", "mm", "%"])) {
            let line = format!(r#"{{"conversations": [{{"role": "user", "content": "q"}}, {{"role": "assistant", "content": "It is {v} {unit}."}}]}}"#);
            let (cases, errors) = load_text(&line);
            prop_assert!(errors.is_empty());
            let Expectation::Numbers { numbers, .. } = &cases[0].expect[0] else { panic!("numbers") };
            prop_assert_eq!(numbers[0].value, f64::from(v));
        }
    }
}
