//! A report's per-case data in the shape its aggregate metrics are computed from, so that any
//! subset of the cases — a bootstrap resample, or the cases two runs share — is measured by the
//! very functions that built the report: `aggregate::rate` for pass rates, `aggregate::mean` for
//! scorer means, and each task's `Aggregator` (through `task::RowSet`) for task metrics.
//!
//! Metric names are the gate names (`pass_rate`, `score.<scorer>`, `category.<name>`,
//! `<task>.<metric>`), so an interval, a comparison and a gate all speak of the same thing.

use std::collections::BTreeMap;

use super::aggregate::{mean, rate};
use crate::score::ScoreStatus;
use crate::task::{self, RowSet, TaskError};
use crate::verdict::Verdict;

/// One task's rows and the row of each case (`None`: no scored task row, e.g. a model error).
struct TaskColumn {
    name: String,
    rows: Box<dyn RowSet>,
    row_of: Vec<Option<usize>>,
}

/// The per-case columns of a set of verdicts.
pub struct Columns {
    /// Case names, in verdict order.
    pub names: Vec<String>,
    passed: Vec<bool>,
    category_of: Vec<usize>,
    categories: Vec<String>,
    /// Scorer name → value per case (NaN where it did not score).
    scorers: Vec<(String, Vec<f64>)>,
    tasks: Vec<TaskColumn>,
}

impl Columns {
    /// Reads the columns of `verdicts` (a report's, in its order).
    pub fn new(verdicts: &[Verdict]) -> Result<Self, TaskError> {
        let names = verdicts.iter().map(|v| v.name.clone()).collect();
        let passed = verdicts.iter().map(|v| v.passed).collect();
        let mut categories: Vec<String> = verdicts.iter().map(|v| v.category.clone()).collect();
        categories.sort_unstable();
        categories.dedup();
        let category_of = verdicts
            .iter()
            .map(|v| categories.binary_search(&v.category).unwrap_or(0))
            .collect();
        let mut scorers: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for (i, v) in verdicts.iter().enumerate() {
            for s in &v.scores {
                if s.status == ScoreStatus::Scored {
                    let col = scorers
                        .entry(s.scorer.as_str())
                        .or_insert_with(|| vec![f64::NAN; verdicts.len()]);
                    col[i] = s.value.unwrap_or(0.0);
                }
            }
        }
        let scorers = scorers
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let mut tasks = Vec::new();
        for name in task::TASKS {
            let mut row_of = vec![None; verdicts.len()];
            let mut data = Vec::new();
            for (i, v) in verdicts.iter().enumerate() {
                let scored = v
                    .scores
                    .iter()
                    .find(|s| s.scorer == name && s.status == ScoreStatus::Scored);
                if let Some(s) = scored {
                    row_of[i] = Some(data.len());
                    data.push((v.name.clone(), s.data.clone()));
                }
            }
            let named = verdicts
                .iter()
                .any(|v| v.scores.iter().any(|s| s.scorer == name));
            if named {
                tasks.push(TaskColumn {
                    name: name.to_owned(),
                    rows: task::row_set(name, data)?,
                    row_of,
                });
            }
        }
        Ok(Self {
            names,
            passed,
            category_of,
            categories,
            scorers,
            tasks,
        })
    }

    /// Number of cases.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no cases.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Whether case `i` passed.
    pub fn passed(&self, i: usize) -> bool {
        self.passed[i]
    }

    /// Every aggregate metric of the cases at `idx` (indices may repeat, as in a resample).
    /// `full` computes every task metric as the report does; otherwise the cheaper set a
    /// resample needs (`task::RowSet::metrics`). Metrics undefined on the subset are absent.
    pub fn metrics(&self, idx: &[usize], full: bool) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        if idx.is_empty() {
            return out;
        }
        let passed = idx.iter().filter(|&&i| self.passed[i]).count();
        out.insert("pass_rate".to_owned(), rate(passed, idx.len()));
        let mut per_cat = vec![(0usize, 0usize); self.categories.len()];
        for &i in idx {
            let c = &mut per_cat[self.category_of[i]];
            c.0 += 1;
            c.1 += usize::from(self.passed[i]);
        }
        for (name, (n, p)) in self.categories.iter().zip(per_cat) {
            if n > 0 {
                out.insert(format!("category.{name}"), rate(p, n));
            }
        }
        for (name, col) in &self.scorers {
            let values = idx.iter().map(|&i| col[i]).filter(|x| !x.is_nan());
            if let Some(m) = mean(values) {
                out.insert(format!("score.{name}"), m);
            }
        }
        for t in &self.tasks {
            let rows: Vec<usize> = idx.iter().filter_map(|&i| t.row_of[i]).collect();
            if let Some(m) = t.rows.metrics(&rows, full) {
                for (k, v) in m {
                    if !task::COUNT_METRICS.contains(&k.as_str()) {
                        out.insert(format!("{}.{k}", t.name), v);
                    }
                }
            }
        }
        out
    }
}

/// Whether a lower value of the aggregate metric `name` is better; `None` for metrics without a
/// better direction. Rates and means are higher-is-better; task metrics say for themselves.
pub fn lower_is_better(name: &str) -> Option<bool> {
    if name == "pass_rate" || name.starts_with("score.") || name.starts_with("category.") {
        return Some(false);
    }
    match name.split_once('.') {
        Some((t, metric)) if task::TASKS.contains(&t) => task::lower_is_better(metric),
        _ => Some(false),
    }
}
