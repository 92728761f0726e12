//! Task suites of the seeds: deal extraction (`deals`), spam classification (`spam`), price
//! regression (`price`) and image labels (`labels`).
//!
//! Per case, `score` parses the model's free-text answer against the case's ground truth (the
//! `spec` of an `Expectation::Task`) and keeps both in `Score::data`. Per suite, `aggregate` turns
//! those data into flat gateable metrics and details (confusion matrices, sweeps, reliability
//! bins, slices by metadata field). `import` turns the seeds' data formats into cases.

pub mod deals;
pub mod error;
pub mod extract;
pub mod import;
pub mod labels;
pub mod price;
mod prompt;
pub mod render;
pub mod spam;

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::case::Case;
use crate::metric::slice::{group_indices, key_of};
use crate::score::{Score, ScoreStatus};

pub use error::TaskError;

/// The task names an `Expectation::Task` may carry.
pub const TASKS: [&str; 4] = ["deals", "spam", "price", "labels"];

/// A suite's aggregate for one task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskReport {
    /// Flat metric names usable as gates (`f1`, `macro_f1`, `smape`, …).
    pub metrics: BTreeMap<String, f64>,
    /// Confusion matrices, sweeps, reliability bins, slices.
    pub details: Value,
}

/// Scores one answer. A malformed answer is a scored failure (`data.malformed = true`, value 0);
/// a malformed `spec` is a scorer error (the suite is wrong, not the model).
pub fn score(task: &str, spec: &Value, answer: &str) -> Score {
    match task {
        "deals" => deals::score(spec, answer),
        "spam" => spam::score(spec, answer),
        "price" => price::score(spec, answer),
        "labels" => labels::score(spec, answer),
        other => Score::scorer_error(other, 0.0, TaskError::UnknownTask(other.into()).to_string()),
    }
}

/// One task's aggregate logic.
pub(crate) trait Aggregator {
    /// The type of `Score::data` this task's scorer writes.
    type Row: DeserializeOwned;
    /// Slice fields always reported, and groups that always appear in them.
    const SLICES: &'static [(&'static str, &'static [&'static str])];
    /// Metrics and details of a set of rows; `None` for no rows.
    fn compute(rows: &[&Self::Row]) -> Option<(BTreeMap<String, f64>, Value)>;
}

/// Aggregates a suite's task scores (those whose scorer is `task`), sliced by the task's default
/// fields, `category`, and any field listed in a case's `metadata.slice_by`.
pub fn aggregate(task: &str, items: &[(&Case, &Score)]) -> Result<TaskReport, TaskError> {
    aggregate_with(task, items, &[])
}

/// As `aggregate`, with extra slice fields (e.g. from the suite configuration).
pub fn aggregate_with(
    task: &str,
    items: &[(&Case, &Score)],
    slice_fields: &[&str],
) -> Result<TaskReport, TaskError> {
    match task {
        "deals" => run::<deals::Deals>(task, items, slice_fields),
        "spam" => run::<spam::Spam>(task, items, slice_fields),
        "price" => run::<price::Price>(task, items, slice_fields),
        "labels" => run::<labels::Labels>(task, items, slice_fields),
        other => Err(TaskError::UnknownTask(other.into())),
    }
}

/// The slice key of a case for `field`: `category` is the name's middle part, `image` is
/// `present` / `missing`, anything else is looked up in the metadata.
fn slice_key(case: &Case, field: &str) -> String {
    match field {
        "category" => case.id.category.clone(),
        "image" => if case.has_images() {
            "present"
        } else {
            "missing"
        }
        .into(),
        _ => key_of(case.metadata.get(field)),
    }
}

fn run<A: Aggregator>(
    task: &str,
    items: &[(&Case, &Score)],
    extra: &[&str],
) -> Result<TaskReport, TaskError> {
    let mut rows = Vec::new();
    let mut cases = Vec::new();
    let mut scorer_errors = 0usize;
    for (case, score) in items.iter().filter(|(_, s)| s.scorer == task) {
        match score.status {
            ScoreStatus::Scored => {}
            ScoreStatus::ScorerError => {
                scorer_errors += 1;
                continue;
            }
            ScoreStatus::Skipped => continue,
        }
        let row: A::Row =
            serde_json::from_value(score.data.clone()).map_err(|e| TaskError::Data {
                case: case.id.test_name(),
                message: e.to_string(),
            })?;
        rows.push(row);
        cases.push(*case);
    }
    let all: Vec<&A::Row> = rows.iter().collect();
    let (mut metrics, details) = A::compute(&all).unwrap_or_default();
    metrics.insert("n".into(), rows.len() as f64);
    metrics.insert("scorer_errors".into(), scorer_errors as f64);

    let mut fields: BTreeSet<String> = A::SLICES.iter().map(|s| s.0.to_owned()).collect();
    fields.insert("category".into());
    fields.extend(extra.iter().map(|s| (*s).to_owned()));
    for c in &cases {
        if let Some(Value::Array(list)) = c.metadata.get("slice_by") {
            fields.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
    }
    let mut slices = serde_json::Map::new();
    for field in fields {
        let always = A::SLICES
            .iter()
            .find(|s| s.0 == field)
            .map_or(&[][..], |s| s.1);
        let groups = group_indices(&cases, |c| slice_key(c, &field), always);
        let mut out = serde_json::Map::new();
        for (value, idx) in groups {
            let subset: Vec<&A::Row> = idx.iter().map(|&i| &rows[i]).collect();
            let m = A::compute(&subset).map(|x| x.0).unwrap_or_default();
            out.insert(value, json!({ "n": idx.len(), "metrics": m }));
        }
        slices.insert(field, Value::Object(out));
    }
    let mut details = match details {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        other => serde_json::Map::from_iter([("summary".to_owned(), other)]),
    };
    details.insert("slices".into(), Value::Object(slices));
    Ok(TaskReport {
        metrics,
        details: Value::Object(details),
    })
}
