//! Gates: bounds on aggregate metrics, from `[suites.<name>.gates]`. A gate names `pass_rate`,
//! `score.<scorer>` (mean score), `category.<name>` (pass rate of a category) or
//! `<task>.<metric>` (task metrics). A bare number is a minimum; `{ max = … }` bounds a
//! lower-is-better metric from above. An unknown metric fails its gate, naming it.

use std::collections::BTreeMap;

use super::{GateResult, Report};
use crate::config::GateBound;

/// The value of a named aggregate metric, if the report has it.
pub fn metric(report: &Report, name: &str) -> Option<f64> {
    if name == "pass_rate" {
        return Some(report.overall.pass_rate);
    }
    if let Some(scorer) = name.strip_prefix("score.") {
        return report.scorers.get(scorer).and_then(|s| s.mean);
    }
    if let Some(cat) = name.strip_prefix("category.") {
        return report.categories.get(cat).map(|t| t.pass_rate);
    }
    let (task, key) = name.split_once('.')?;
    report.tasks.get(task)?.get("metrics")?.get(key)?.as_f64()
}

pub fn evaluate(gates: &BTreeMap<String, GateBound>, report: &Report) -> Vec<GateResult> {
    gates
        .iter()
        .map(|(name, bound)| {
            let (min, max) = bound.bounds();
            let actual = metric(report, name);
            let passed = actual.is_some_and(|a| {
                min.is_none_or(|m| a >= m - 1e-12) && max.is_none_or(|m| a <= m + 1e-12)
            });
            GateResult {
                name: name.clone(),
                min,
                max,
                actual,
                passed,
            }
        })
        .collect()
}
