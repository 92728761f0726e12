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

/// Every named aggregate metric of the report, by the names `metric` reads: the numbers a
/// comparison, a gate or the trainer's early stopping can name.
pub fn metrics(report: &Report) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    out.insert("pass_rate".to_owned(), report.overall.pass_rate);
    for (name, s) in &report.scorers {
        if let Some(m) = s.mean {
            out.insert(format!("score.{name}"), m);
        }
    }
    for (name, t) in &report.categories {
        out.insert(format!("category.{name}"), t.pass_rate);
    }
    for (task, value) in &report.tasks {
        if let Some(serde_json::Value::Object(m)) = value.get("metrics") {
            for (key, v) in m {
                if let Some(x) = v.as_f64() {
                    out.insert(format!("{task}.{key}"), x);
                }
            }
        }
    }
    out
}

/// Checks every gate of a suite against its report.
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
