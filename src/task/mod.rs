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
pub(crate) trait Aggregator: 'static {
    /// The type of `Score::data` this task's scorer writes.
    type Row: DeserializeOwned + Send + Sync + 'static;
    /// Slice fields always reported, and groups that always appear in them.
    const SLICES: &'static [(&'static str, &'static [&'static str])];
    /// Metrics and details of a set of rows; `None` for no rows.
    fn compute(rows: &[&Self::Row]) -> Option<(BTreeMap<String, f64>, Value)>;
    /// The metrics alone, for resampling (bootstrap intervals, paired comparison). A task may
    /// leave out what is costly and is not a statistic of fixed rows (spam's threshold sweep
    /// picks an operating point); every metric it returns equals `compute`'s.
    fn metrics(rows: &[&Self::Row]) -> Option<BTreeMap<String, f64>> {
        Self::compute(rows).map(|(m, _)| m)
    }
}

/// Metrics that are counts, not statistics of the rows: left out of intervals and comparisons.
pub const COUNT_METRICS: [&str; 2] = ["n", "scorer_errors"];

/// A task's rows, parsed once from their scores, measured on any subset of them: the report's
/// metrics on all rows, a bootstrap resample, or the cases two runs share. It goes through the
/// same `Aggregator` functions as the report, so no metric is computed twice in two ways.
pub trait RowSet: Send + Sync {
    /// Number of rows.
    fn len(&self) -> usize;
    /// Whether there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The metrics (with their higher-is-better complements) of the rows at `idx`, `None` when
    /// they have none. `full` computes every metric as the report does; otherwise only those a
    /// resample needs (see `Aggregator::metrics`).
    fn metrics(&self, idx: &[usize], full: bool) -> Option<BTreeMap<String, f64>>;
}

struct Parsed<A: Aggregator>(Vec<A::Row>);

impl<A: Aggregator> RowSet for Parsed<A> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn metrics(&self, idx: &[usize], full: bool) -> Option<BTreeMap<String, f64>> {
        let rows: Vec<&A::Row> = idx.iter().filter_map(|&i| self.0.get(i)).collect();
        if rows.is_empty() {
            return None;
        }
        let mut m = if full {
            A::compute(&rows)?.0
        } else {
            A::metrics(&rows)?
        };
        add_complements(&mut m);
        Some(m)
    }
}

fn parse_rows<A: Aggregator>(
    rows: impl IntoIterator<Item = (String, Value)>,
) -> Result<Vec<A::Row>, TaskError> {
    rows.into_iter()
        .map(|(case, data)| {
            serde_json::from_value(data).map_err(|e| TaskError::Data {
                case,
                message: e.to_string(),
            })
        })
        .collect()
}

/// Parses the `Score::data` of a task's scored rows, `(case name, data)` each, into a `RowSet`.
pub fn row_set(
    task: &str,
    rows: impl IntoIterator<Item = (String, Value)>,
) -> Result<Box<dyn RowSet>, TaskError> {
    fn boxed<A: Aggregator>(
        rows: impl IntoIterator<Item = (String, Value)>,
    ) -> Result<Box<dyn RowSet>, TaskError> {
        Ok(Box::new(Parsed::<A>(parse_rows::<A>(rows)?)))
    }
    match task {
        "deals" => boxed::<deals::Deals>(rows),
        "spam" => boxed::<spam::Spam>(rows),
        "price" => boxed::<price::Price>(rows),
        "labels" => boxed::<labels::Labels>(rows),
        other => Err(TaskError::UnknownTask(other.into())),
    }
}

/// Whether a lower value of `metric` (a task metric name without its task, `smape`) is better;
/// `None` for metrics with no better direction (chosen thresholds, review and demote rates).
pub fn lower_is_better(metric: &str) -> Option<bool> {
    const LOWER: [&str; 5] = [
        "smape",
        "mae",
        "ece",
        "malformed_rate",
        "parse_failure_rate",
    ];
    const NEUTRAL: [&str; 4] = [
        "sweep.review_threshold",
        "sweep.demote_threshold",
        "policy.review_rate",
        "policy.demote_rate",
    ];
    if NEUTRAL.contains(&metric) || COUNT_METRICS.contains(&metric) {
        None
    } else {
        Some(LOWER.contains(&metric))
    }
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

/// Gates are minimums, so each lower-is-better metric also appears as a higher-is-better
/// complement: `parsed_rate = 1 − malformed_rate`, `calibration = 1 − ece`,
/// `smape_score = 1 − smape / 200`.
fn add_complements(m: &mut BTreeMap<String, f64>) {
    let pairs = [
        ("malformed_rate", "parsed_rate", 1.0),
        ("ece", "calibration", 1.0),
        ("smape", "smape_score", 200.0),
    ];
    for (low, high, scale) in pairs {
        if let Some(v) = m.get(low).copied() {
            m.insert(high.to_owned(), 1.0 - v / scale);
        }
    }
}

fn run<A: Aggregator>(
    task: &str,
    items: &[(&Case, &Score)],
    extra: &[&str],
) -> Result<TaskReport, TaskError> {
    let mut data = Vec::new();
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
        data.push((case.id.test_name(), score.data.clone()));
        cases.push(*case);
    }
    let rows = parse_rows::<A>(data)?;
    let all: Vec<&A::Row> = rows.iter().collect();
    let (mut metrics, details) = A::compute(&all).unwrap_or_default();
    add_complements(&mut metrics);
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
            let mut m = A::compute(&subset).map(|x| x.0).unwrap_or_default();
            add_complements(&mut m);
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

/// Every task's report for one suite, ready for `Report::tasks`: task name → `{"metrics",
/// "details"}` (or `{"error"}` when a score's data is not its task's). `items` may hold scores of
/// any scorer; only task scores are used.
pub fn suite_reports<'a>(
    items: impl IntoIterator<Item = (&'a Case, &'a Score)>,
    slice_fields: &[&str],
) -> BTreeMap<String, Value> {
    let items: Vec<(&Case, &Score)> = items
        .into_iter()
        .filter(|(_, s)| TASKS.contains(&s.scorer.as_str()))
        .collect();
    let names: BTreeSet<&str> = items.iter().map(|(_, s)| s.scorer.as_str()).collect();
    names
        .into_iter()
        .map(|name| {
            let v = match aggregate_with(name, &items, slice_fields) {
                Ok(r) => serde_json::to_value(&r).unwrap_or(Value::Null),
                Err(e) => json!({ "error": e.to_string() }),
            };
            (name.to_owned(), v)
        })
        .collect()
}
