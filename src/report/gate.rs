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

/// Items behind the metric `name` that ended in an error instead of a value: the suite's
/// entries that did not load, the cases the model could not answer, and the metric's own scorer
/// errors (judge errors for `score.judge.*`, the task's `scorer_errors` for task metrics).
pub fn missing(report: &Report, name: &str) -> usize {
    let model_errors = report
        .verdicts
        .iter()
        .filter(|v| v.model_error.is_some())
        .count();
    let base = report.load_errors.len();
    if name == "pass_rate" {
        return base + report.verdicts.iter().filter(|v| v.is_error()).count();
    }
    if let Some(scorer) = name.strip_prefix("score.") {
        return base + model_errors + report.scorers.get(scorer).map_or(0, |s| s.errors);
    }
    if let Some(cat) = name.strip_prefix("category.") {
        let errors = report
            .verdicts
            .iter()
            .filter(|v| v.category == cat && v.is_error())
            .count();
        return base + errors;
    }
    let task_errors = name
        .split_once('.')
        .and_then(|(task, _)| report.tasks.get(task)?.get("metrics")?.get("scorer_errors"))
        .and_then(serde_json::Value::as_f64)
        .map_or(0, |x| x as usize);
    base + model_errors + task_errors
}

/// Checks every gate of a suite against its report. A gate whose metric misses more than
/// `max_errors` items fails as incomplete, whatever its value.
pub fn evaluate(
    gates: &BTreeMap<String, GateBound>,
    max_errors: usize,
    report: &Report,
) -> Vec<GateResult> {
    gates
        .iter()
        .map(|(name, bound)| {
            let (min, max) = bound.bounds();
            let mut g = GateResult {
                name: name.clone(),
                min,
                max,
                actual: metric(report, name),
                missing: missing(report, name),
                passed: false,
            };
            g.passed = g.in_bounds() && g.missing <= max_errors;
            g
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::config::SuiteConfig;
    use crate::score::Score;
    use crate::suite::SuiteError;
    use crate::verdict::Verdict;

    fn verdict(i: usize, score: Score) -> Verdict {
        Verdict {
            name: format!("s::c::{i}"),
            category: "c".into(),
            tags: Vec::new(),
            passed: score.passed,
            answer: None,
            model_error: None,
            scores: vec![score],
        }
    }

    fn judged(passed: usize, errors: usize) -> Vec<Verdict> {
        (0..passed + errors)
            .map(|i| {
                let s = if i < passed {
                    Score::scored("judge.correctness", 1.0, 0.5, String::new())
                } else {
                    Score::scorer_error("judge.correctness", 0.5, "judge error: down".into())
                };
                verdict(i, s)
            })
            .collect()
    }

    fn cfg(gates: &[(&str, f64)], max_errors: usize) -> SuiteConfig {
        SuiteConfig {
            gates: gates
                .iter()
                .map(|(k, v)| ((*k).to_owned(), GateBound::Min(*v)))
                .collect(),
            max_errors,
            bootstrap: 0,
            ..SuiteConfig::default()
        }
    }

    fn bad_row(line: usize) -> SuiteError {
        SuiteError::new(
            std::path::Path::new("cases/s.jsonl"),
            Some(line),
            None,
            "bad",
        )
    }

    /// The case: the judge down for 69 of 100 cases, the 31 it scored all correct. The
    /// mean over what was scored is 1.00; the gate must not pass on it.
    #[test]
    fn a_judge_gate_with_errors_behind_it_fails_as_incomplete() {
        let verdicts = judged(31, 69);
        let c = cfg(&[("score.judge.correctness", 0.9)], 0);
        let r = crate::report::build("s", "m", &c, &[], verdicts.clone(), BTreeMap::new(), &[]);
        let g = &r.gates[0];
        assert_eq!(g.actual, Some(1.0));
        assert_eq!(g.missing, 69);
        assert!(!g.passed);
        assert!(
            g.failure().contains("incomplete: 69 item(s)"),
            "{}",
            g.failure()
        );
        // A suite that accepts that many errors gets its gate judged on the value.
        let c = cfg(&[("score.judge.correctness", 0.9)], 69);
        let r = crate::report::build("s", "m", &c, &[], verdicts.clone(), BTreeMap::new(), &[]);
        assert!(r.gates[0].passed);
        assert_eq!(r.outcome(), crate::report::Outcome::Error);
    }

    /// The case: 1 bad row of 3 gave a pass rate of 1.0.
    #[test]
    fn an_entry_that_did_not_load_counts_against_the_pass_rate_and_every_gate() {
        let verdicts: Vec<Verdict> = (0..2)
            .map(|i| verdict(i, Score::scored("numeric", 1.0, 1.0, String::new())))
            .collect();
        let c = cfg(&[("pass_rate", 0.5), ("score.numeric", 0.5)], 0);
        let errors = [bad_row(3)];
        let r = crate::report::build(
            "s",
            "m",
            &c,
            &[],
            verdicts.clone(),
            BTreeMap::new(),
            &errors,
        );
        assert_eq!((r.overall.cases, r.overall.passed), (3, 2));
        assert!((r.overall.pass_rate - 2.0 / 3.0).abs() < 1e-12);
        assert!(
            r.gates.iter().all(|g| g.missing == 1 && !g.passed),
            "{:?}",
            r.gates
        );
        assert_eq!(r.errors(), 1);
        assert_eq!(r.outcome(), crate::report::Outcome::Error);
        let clean = crate::report::build("s", "m", &c, &[], verdicts.clone(), BTreeMap::new(), &[]);
        assert!(clean.gates.iter().all(|g| g.missing == 0 && g.passed));
        assert_eq!(clean.outcome(), crate::report::Outcome::Passed);
    }

    proptest! {
        /// Whatever the values, a gate with more errors behind it than the suite allows fails,
        /// and one without errors is decided by its bounds alone.
        #[test]
        fn errors_beyond_max_errors_always_fail_the_gate(
            passed in 0usize..30,
            errors in 0usize..30,
            loads in 0usize..4,
            max_errors in 0usize..40,
            min in 0.0f64..=1.0,
        ) {
            let verdicts = judged(passed, errors);
            let c = cfg(&[("score.judge.correctness", min), ("pass_rate", min)], max_errors);
            let load: Vec<SuiteError> = (0..loads).map(|i| bad_row(i + 1)).collect();
            let r = crate::report::build("s", "m", &c, &[], verdicts.clone(), BTreeMap::new(), &load);
            for g in &r.gates {
                prop_assert_eq!(g.missing, errors + loads);
                if g.missing > max_errors {
                    prop_assert!(!g.passed);
                }
                if g.missing == 0 {
                    let in_bounds = g.actual.is_some_and(|a| a >= min - 1e-12);
                    prop_assert_eq!(g.passed, in_bounds);
                }
            }
        }
    }
}
