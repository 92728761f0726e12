//! Hand-written probes: `probes/<suite>.toml`, a list of `[[probe]]` tables.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{build, SuiteError};
use crate::case::{Case, CaseId, Expectation, ExpectedNumber, Message, Origin, Role, Tolerance};
use crate::config::{toml_error, SuiteConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTurn {
    role: Role,
    content: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    id: String,
    category: String,
    question: Option<String>,
    messages: Option<Vec<RawTurn>>,
    context: Option<String>,
    image: Option<String>,
    #[serde(default)]
    images: Vec<String>,
    /// The expected answer (reference for token F1 and the judge).
    answer: Option<String>,
    numbers: Option<Vec<ExpectedNumber>>,
    tolerance: Option<Tolerance>,
    min_numbers: Option<usize>,
    keywords: Option<Vec<String>>,
    min_keywords: Option<usize>,
    exact: Option<String>,
    #[serde(default = "yes")]
    normalise: bool,
    #[serde(default)]
    token_f1: bool,
    #[serde(default)]
    judge: Vec<String>,
    #[serde(default)]
    thresholds: BTreeMap<String, f64>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    ignore: bool,
    #[serde(default)]
    metadata: toml::Table,
}

fn yes() -> bool {
    true
}

/// 1-based line of the `n`-th `[[probe]]` header.
fn probe_line(text: &str, n: usize) -> Option<usize> {
    let mut seen = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("[[probe]]") {
            if seen == n {
                return Some(i + 1);
            }
            seen += 1;
        }
    }
    None
}

/// 1-based line of the key `field` (its first segment: `numbers` of `numbers[0].unit`) within
/// the probe whose header is on line `header`.
fn key_line(text: &str, header: usize, field: &str) -> Option<usize> {
    let key = field.split(['.', '[']).next()?;
    for (i, line) in text.lines().enumerate().skip(header) {
        let t = line.trim_start();
        if t.starts_with("[[probe]]") {
            return None;
        }
        let keyed = t
            .strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']));
        if keyed {
            return Some(i + 1);
        }
    }
    None
}

/// Loads one probe file. Every bad probe is reported; good probes still load.
pub fn load(
    file: &Path,
    suite: &str,
    cfg: &SuiteConfig,
    root: &Path,
) -> (Vec<Case>, Vec<SuiteError>) {
    let text = match build::read_file(file) {
        Ok(t) => t,
        Err(e) => return (Vec::new(), vec![e]),
    };
    // The file parses as TOML first (a syntax error stops it); then each `[[probe]]` on its own,
    // so one bad probe costs that probe, not the file.
    let table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => return (Vec::new(), vec![toml_error(file, &text, &e)]),
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for key in table.keys().filter(|k| k.as_str() != "probe") {
        errors.push(SuiteError::new(
            file,
            None,
            Some(key),
            format!("unknown top-level key `{key}`: a probe file holds `[[probe]]` tables"),
        ));
    }
    let probes = match table.get("probe") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(_) => {
            errors.push(SuiteError::new(
                file,
                None,
                Some("probe"),
                "`probe` must be a list of `[[probe]]` tables",
            ));
            Vec::new()
        }
    };
    for (n, value) in probes.into_iter().enumerate() {
        let line = probe_line(&text, n);
        let raw: RawProbe = match serde_path_to_error::deserialize(value) {
            Ok(r) => r,
            Err(e) => {
                let path = e.path().to_string();
                let field = (path != ".").then_some(path);
                let msg = e.into_inner().message().to_owned();
                let at = field
                    .as_deref()
                    .and_then(|f| key_line(&text, line?, f))
                    .or(line);
                errors.push(SuiteError::new(file, at, field.as_deref(), msg));
                continue;
            }
        };
        match to_case(raw, file, line, suite, cfg, root) {
            Ok(c) => cases.push(c),
            Err(e) => errors.push(e),
        }
    }
    (cases, errors)
}

fn to_case(
    raw: RawProbe,
    file: &Path,
    line: Option<usize>,
    suite: &str,
    cfg: &SuiteConfig,
    root: &Path,
) -> Result<Case, SuiteError> {
    let err = |field: &str, msg: String| SuiteError::new(file, line, Some(field), msg);
    build::check_name_part(&raw.id).map_err(|m| err("id", m))?;
    build::check_name_part(&raw.category).map_err(|m| err("category", m))?;
    let mut image_names: Vec<String> = raw.image.into_iter().collect();
    image_names.extend(raw.images);
    let mut messages = match (raw.question, raw.messages) {
        (Some(q), None) => {
            let text = match &raw.context {
                Some(ctx) => cfg
                    .prompt
                    .replace("{context}", ctx)
                    .replace("{question}", &q),
                None => q,
            };
            vec![Message::text(Role::User, text)]
        }
        (None, Some(turns)) => {
            if !turns.iter().any(|t| t.role == Role::User) {
                return Err(err("messages", "needs at least one user turn".into()));
            }
            turns
                .into_iter()
                .map(|t| Message::text(t.role, t.content))
                .collect()
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "question",
                "give `question` or `messages`, not both".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "question",
                "missing: give `question` or `messages`".into(),
            ))
        }
    };
    let mut metadata: BTreeMap<String, serde_json::Value> = raw
        .metadata
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    build::attach_images(
        &mut messages,
        &image_names,
        file,
        line,
        "image",
        root,
        cfg.missing_image,
        &mut metadata,
    )?;
    build::prepend_system(&mut messages, cfg);

    let th = |name: &str, default: f64| {
        raw.thresholds
            .get(name)
            .copied()
            .unwrap_or_else(|| cfg.threshold(name, default))
    };
    let mut expect = Vec::new();
    if let Some(numbers) = raw.numbers {
        if numbers.is_empty() {
            return Err(err("numbers", "empty list".into()));
        }
        let tolerance = raw.tolerance.unwrap_or_default();
        let share = build::share(raw.min_numbers, numbers.len());
        expect.push(Expectation::Numbers {
            numbers,
            tolerance,
            min_matched: raw.min_numbers,
            threshold: th("numeric", share),
        });
    }
    if let Some(keywords) = raw.keywords {
        if keywords.is_empty() || keywords.iter().any(|k| k.trim().is_empty()) {
            return Err(err(
                "keywords",
                "keywords must be a non-empty list of non-empty strings".into(),
            ));
        }
        let share = build::share(raw.min_keywords, keywords.len());
        expect.push(Expectation::Keywords {
            keywords,
            min_matched: raw.min_keywords,
            threshold: th("keywords", share),
        });
    }
    if let Some(text) = raw.exact {
        expect.push(Expectation::Exact {
            text,
            normalise: raw.normalise,
        });
    }
    if raw.token_f1 {
        let Some(reference) = raw.answer.clone() else {
            return Err(err("token_f1", "needs `answer` as the reference".into()));
        };
        expect.push(Expectation::TokenF1 {
            reference,
            threshold: th("token_f1", 0.5),
        });
    }
    for rubric in raw.judge {
        let threshold = raw
            .thresholds
            .get(&format!("judge.{rubric}"))
            .copied()
            .or_else(|| cfg.thresholds.get(&format!("judge.{rubric}")).copied());
        expect.push(Expectation::Judge { rubric, threshold });
    }
    if expect.is_empty() {
        return Err(err(
            "numbers",
            "a probe needs at least one of `numbers`, `keywords`, `exact`, `token_f1`, `judge`"
                .into(),
        ));
    }
    Ok(Case {
        id: CaseId::new(suite, &raw.category, &raw.id),
        tags: raw.tags,
        messages,
        reference: raw.answer,
        context: raw.context,
        expect,
        metadata,
        ignored: raw.ignore,
        origin: Origin {
            file: file.to_path_buf(),
            line,
        },
    })
}
