//! The spam TSV of seed 001: `product_id, description, image_url, label, yes_count, no_count`.
//! Rows are validated (unique non-empty ids, label 0 or 1, counts ≥ 0), unlabeled rows dropped
//! with a note, labeled rows split train / validation (stratified, seeded), the TF-IDF baseline
//! fitted on the training descriptions, and each selected row's image fetched into the cache; a
//! row whose image is unavailable becomes a text-only case with an explicit note in its prompt.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Value};

use super::download::{fetch_all, Outcome};
use super::split::{stratified, Split};
use super::{make_case, read, CaseParts, ImportOptions, Imported};
use crate::metric::baseline::fit_predict;
use crate::task::prompt::{IMAGE_UNAVAILABLE, SPAM_SYSTEM, SPAM_USER};
use crate::task::spam::SpamSpec;
use crate::task::TaskError;

pub const COLUMNS: [&str; 6] = [
    "product_id",
    "description",
    "image_url",
    "label",
    "yes_count",
    "no_count",
];

/// One valid TSV row.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamRecord {
    pub line: usize,
    pub product_id: String,
    pub description: String,
    pub image_url: String,
    /// `None` for an unlabeled row.
    pub label: Option<bool>,
    pub yes_count: u64,
    pub no_count: u64,
}

impl SpamRecord {
    /// `(yes − no) / (yes + no)`, 0 when nobody voted.
    pub fn label_confidence(&self) -> f64 {
        let total = self.yes_count + self.no_count;
        if total == 0 {
            0.0
        } else {
            (self.yes_count as f64 - self.no_count as f64) / total as f64
        }
    }
}

/// A TSV field: surrounding double quotes removed and `""` unescaped.
fn field(raw: &str) -> String {
    let t = raw.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        t[1..t.len() - 1].replace("\"\"", "\"")
    } else {
        t.to_owned()
    }
}

fn count(file: &Path, line: usize, name: &str, raw: &str) -> Result<u64, TaskError> {
    let v: f64 = raw
        .parse()
        .map_err(|_| TaskError::row(file, line, name, format!("`{raw}` is not a number")))?;
    if v < 0.0 || v.fract() != 0.0 || !v.is_finite() {
        return Err(TaskError::row(
            file,
            line,
            name,
            format!("`{raw}` is not a count ≥ 0"),
        ));
    }
    Ok(v as u64)
}

/// Parses and validates the TSV text: good records, and one error per bad row.
pub fn parse_tsv(file: &Path, text: &str) -> Result<(Vec<SpamRecord>, Vec<TaskError>), TaskError> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')));
    let (_, header) = lines
        .next()
        .ok_or_else(|| TaskError::row(file, 1, "header", "the file is empty"))?;
    let names: Vec<String> = header
        .split('\t')
        .map(|h| field(h).to_lowercase())
        .collect();
    let mut col = HashMap::new();
    for c in COLUMNS {
        let i = names
            .iter()
            .position(|n| n == c)
            .ok_or_else(|| TaskError::row(file, 1, c, "column missing from the header"))?;
        col.insert(c, i);
    }
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (line, text) in lines {
        if text.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = text.split('\t').collect();
        if cells.len() != names.len() {
            bad.push(TaskError::row(
                file,
                line,
                "columns",
                format!("{} cells, header has {}", cells.len(), names.len()),
            ));
            continue;
        }
        let get = |c: &str| field(cells[col[c]]);
        let parsed = (|| {
            let product_id = get("product_id");
            if product_id.is_empty() {
                return Err(TaskError::row(file, line, "product_id", "empty"));
            }
            if let Some(first) = seen.get(&product_id) {
                return Err(TaskError::row(
                    file,
                    line,
                    "product_id",
                    format!("`{product_id}` already used on line {first}"),
                ));
            }
            let label = match get("label").as_str() {
                "" => None,
                "0" | "0.0" => Some(false),
                "1" | "1.0" => Some(true),
                other => {
                    return Err(TaskError::row(
                        file,
                        line,
                        "label",
                        format!("`{other}` is not 0 or 1"),
                    ))
                }
            };
            Ok(SpamRecord {
                line,
                product_id,
                description: get("description"),
                image_url: get("image_url"),
                label,
                yes_count: count(file, line, "yes_count", &get("yes_count"))?,
                no_count: count(file, line, "no_count", &get("no_count"))?,
            })
        })();
        match parsed {
            Ok(r) => {
                seen.insert(r.product_id.clone(), line);
                good.push(r);
            }
            Err(e) => bad.push(e),
        }
    }
    Ok((good, bad))
}

pub fn import(path: &Path, suite: &str, o: &ImportOptions) -> Result<Imported, TaskError> {
    let (records, rejected) = parse_tsv(path, &read(path)?)?;
    let mut notes = Vec::new();
    let unlabeled = records.iter().filter(|r| r.label.is_none()).count();
    if unlabeled > 0 {
        notes.push(format!("{unlabeled} unlabeled rows dropped"));
    }
    let labeled: Vec<&SpamRecord> = records.iter().filter(|r| r.label.is_some()).collect();
    let labels: Vec<bool> = labeled.iter().map(|r| r.label == Some(true)).collect();
    let is_val = stratified(&labels, o.val_fraction, o.seed);
    let pick = |v: bool| match o.split {
        Split::Val => v,
        Split::Train => !v,
        Split::All => true,
    };
    let train: Vec<(&str, bool)> = labeled
        .iter()
        .zip(&labels)
        .zip(&is_val)
        .filter(|(_, &v)| !v)
        .map(|((r, &l), _)| (r.description.as_str(), l))
        .collect();
    let chosen: Vec<(&SpamRecord, bool)> = labeled
        .iter()
        .zip(&labels)
        .zip(&is_val)
        .filter(|(_, &v)| pick(v))
        .map(|((r, &l), _)| (*r, l))
        .collect();
    let texts: Vec<&str> = chosen.iter().map(|(r, _)| r.description.as_str()).collect();
    let baseline = fit_predict(&train, &texts);
    if baseline.is_none() {
        notes.push("baseline skipped: the training split holds a single class".into());
    }
    notes.push(format!(
        "split: {} train, {} validation (seed {})",
        train.len(),
        is_val.iter().filter(|&&v| v).count(),
        o.seed
    ));

    let urls: Vec<String> = chosen.iter().map(|(r, _)| r.image_url.clone()).collect();
    let outcomes = fetch_all(&urls, &o.download);
    let mut cases = Vec::new();
    for (k, ((r, label), outcome)) in chosen.iter().zip(&outcomes).enumerate() {
        let image = outcome.path().map(Path::to_path_buf);
        if let Outcome::Failed(e) = outcome {
            notes.push(format!(
                "{}:{}: image unavailable ({e}): {}",
                path.display(),
                r.line,
                r.image_url
            ));
        }
        let mut user = format!("{SPAM_USER}\n\nDescription: {}", r.description);
        if image.is_none() {
            user.push_str(&format!("\n\n{IMAGE_UNAVAILABLE}"));
        }
        let spec = SpamSpec {
            label: u8::from(*label),
            product_id: Some(r.product_id.clone()),
            label_confidence: Some(r.label_confidence()),
            baseline: baseline.as_ref().map(|b| b[k]),
            policy: None,
        };
        let reference =
            json!({"is_spam": label, "confidence": 1.0, "reason": "ground truth"}).to_string();
        let metadata = BTreeMap::from([
            ("product_id".to_owned(), Value::String(r.product_id.clone())),
            (
                "image".to_owned(),
                Value::String(
                    if image.is_some() {
                        "present"
                    } else {
                        "missing"
                    }
                    .into(),
                ),
            ),
            ("image_url".to_owned(), Value::String(r.image_url.clone())),
            ("label_confidence".to_owned(), json!(r.label_confidence())),
        ]);
        cases.push(make_case(CaseParts {
            suite,
            category: if *label { "spam" } else { "not_spam" },
            id: &r.product_id,
            system: SPAM_SYSTEM,
            user,
            images: image.into_iter().collect(),
            reference,
            task: "spam",
            spec: serde_json::to_value(&spec).unwrap_or(Value::Null),
            metadata,
            file: path,
            line: r.line,
        }));
    }
    Ok(Imported {
        cases,
        rejected,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEAD: &str = "product_id\tdescription\timage_url\tlabel\tyes_count\tno_count\n";

    #[test]
    fn validates_rows_and_keeps_good_ones() {
        let text = format!(
            "{HEAD}p1\tnice mug\thttp://x/a.jpg\t0\t0\t3\n\tno id\t\t1\t1\t0\np1\tdup\t\t1\t1\t0\np2\tbad label\t\t2\t1\t0\np3\tneg\t\t1\t-1\t0\np4\tunlabeled\t\t\t0\t0\n"
        );
        let (good, bad) = parse_tsv(Path::new("s.tsv"), &text).unwrap();
        assert_eq!(
            good.iter()
                .map(|r| r.product_id.as_str())
                .collect::<Vec<_>>(),
            ["p1", "p4"]
        );
        let msgs: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(msgs[0], "s.tsv:3: field `product_id`: empty");
        assert!(msgs[1].contains("s.tsv:4: field `product_id`") && msgs[1].contains("line 2"));
        assert!(msgs[2].starts_with("s.tsv:5: field `label`"));
        assert!(msgs[3].starts_with("s.tsv:6: field `yes_count`"));
        assert_eq!(good[0].label_confidence(), -1.0);
        assert_eq!(good[1].label, None);
    }

    #[test]
    fn missing_column_is_named() {
        let e = parse_tsv(Path::new("s.tsv"), "product_id\tdescription\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "s.tsv:1: field `image_url`: column missing from the header"
        );
    }

    proptest! {
        #[test]
        fn confidence_bounded(yes in 0u64..1000, no in 0u64..1000) {
            let r = SpamRecord { line: 1, product_id: "p".into(), description: String::new(), image_url: String::new(), label: Some(true), yes_count: yes, no_count: no };
            let c = r.label_confidence();
            prop_assert!((-1.0..=1.0).contains(&c));
        }

        #[test]
        fn parser_never_panics(body in "[a-z0-9\t\"\n-]{0,200}") {
            let _ = parse_tsv(Path::new("s.tsv"), &format!("{HEAD}{body}"));
        }
    }
}
