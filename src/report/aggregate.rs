//! Builds a `Report` from a suite's cases and verdicts. Pure: same input, same report.

use std::collections::BTreeMap;

use super::columns::Columns;
use super::{gate, Report, ScorerSummary, Tally};
use crate::case::Case;
use crate::config::SuiteConfig;
use crate::metric::significance::{percentile_interval, Bootstrap, Interval, DEFAULT_BOOTSTRAP};
use crate::score::ScoreStatus;
use crate::suite::SuiteError;
use crate::verdict::Verdict;

/// The 95% Wilson score interval of `passed` out of `n`.
pub fn wilson95(passed: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let n_f = n as f64;
    let p = passed as f64 / n_f;
    let denom = 1.0 + z * z / n_f;
    let centre = (p + z * z / (2.0 * n_f)) / denom;
    let half = z * ((p * (1.0 - p) + z * z / (4.0 * n_f)) / n_f).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// `passed / cases`, 0 for no cases: every pass rate of a report (overall, per category, per
/// slice) and of a resample.
pub fn rate(passed: usize, cases: usize) -> f64 {
    if cases == 0 {
        0.0
    } else {
        passed as f64 / cases as f64
    }
}

/// The mean of a scorer's values over the cases it scored; `None` when it scored none.
pub fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub fn tally(passed: usize, cases: usize) -> Tally {
    Tally {
        cases,
        passed,
        pass_rate: rate(passed, cases),
        pass_rate_ci95: wilson95(passed, cases),
    }
}

/// 95% percentile-bootstrap intervals of every aggregate metric of `verdicts` (see
/// `Columns::metrics`), from `boot.resamples` seeded resamples of the cases.
pub fn bootstrap_intervals(verdicts: &[Verdict], boot: Bootstrap) -> BTreeMap<String, Interval> {
    let Ok(columns) = Columns::new(verdicts) else {
        return BTreeMap::new();
    };
    let mut replicates: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut draws = boot.draws(columns.len());
    while let Some(idx) = draws.next_draw() {
        for (k, v) in columns.metrics(idx, false) {
            replicates.entry(k).or_default().push(v);
        }
    }
    replicates
        .into_iter()
        .filter_map(|(k, mut v)| percentile_interval(&mut v).map(|i| (k, i)))
        .collect()
}

fn metadata_value(case: &Case, field: &str) -> String {
    match case.metadata.get(field) {
        None | Some(serde_json::Value::Null) => "(none)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Aggregates one suite. `tasks` holds the task metrics computed by the task stage;
/// `load_errors` the suite's entries that did not load, each counted as a case that did not pass.
pub fn build(
    suite: &str,
    model: &str,
    cfg: &SuiteConfig,
    cases: &[&Case],
    verdicts: Vec<Verdict>,
    tasks: BTreeMap<String, serde_json::Value>,
    load_errors: &[SuiteError],
) -> Report {
    let passed = verdicts.iter().filter(|v| v.passed).count();
    let mut scorers: BTreeMap<String, (ScorerSummary, Vec<f64>)> = BTreeMap::new();
    for v in &verdicts {
        for s in &v.scores {
            let (sum, values) = scorers.entry(s.scorer.clone()).or_default();
            match s.status {
                ScoreStatus::Scored => {
                    sum.scored += 1;
                    sum.passed += usize::from(s.passed);
                    values.push(s.value.unwrap_or(0.0));
                }
                ScoreStatus::ScorerError => sum.errors += 1,
                ScoreStatus::Skipped => {}
            }
        }
    }
    let boot = Bootstrap {
        resamples: cfg.bootstrap,
        ..DEFAULT_BOOTSTRAP
    };
    let intervals = bootstrap_intervals(&verdicts, boot);
    let scorers = scorers
        .into_iter()
        .map(|(k, (mut s, values))| {
            s.mean = mean(values);
            s.mean_ci95 = intervals.get(&format!("score.{k}")).map(|i| (i.lo, i.hi));
            (k, s)
        })
        .collect();
    let mut tasks = tasks;
    for (name, value) in tasks.iter_mut() {
        let prefix = format!("{name}.");
        let ci: serde_json::Map<String, serde_json::Value> = intervals
            .iter()
            .filter_map(|(k, i)| {
                let metric = k.strip_prefix(&prefix)?;
                Some((metric.to_owned(), serde_json::json!([i.lo, i.hi])))
            })
            .collect();
        // Differences within a task (the spam model's uplift over its TF-IDF baseline on the
        // same rows) are paired; their bootstrap p-value says whether the uplift is real.
        let p: serde_json::Map<String, serde_json::Value> = intervals
            .iter()
            .filter_map(|(k, i)| {
                let metric = k.strip_prefix(&prefix)?;
                metric
                    .starts_with("uplift.")
                    .then(|| (metric.to_owned(), serde_json::json!(i.p_zero)))
            })
            .collect();
        if let (Some(obj), false) = (value.as_object_mut(), ci.is_empty()) {
            obj.insert("ci95".into(), serde_json::Value::Object(ci));
            if !p.is_empty() {
                obj.insert("p_value".into(), serde_json::Value::Object(p));
            }
        }
    }
    let mut cats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for v in &verdicts {
        let e = cats.entry(v.category.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(v.passed);
    }
    let mut slices: BTreeMap<String, BTreeMap<String, Tally>> = BTreeMap::new();
    for field in &cfg.slices {
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (c, v) in cases.iter().zip(&verdicts) {
            let e = groups.entry(metadata_value(c, field)).or_default();
            e.0 += 1;
            e.1 += usize::from(v.passed);
        }
        slices.insert(
            field.clone(),
            groups
                .into_iter()
                .map(|(k, (n, p))| (k, tally(p, n)))
                .collect(),
        );
    }
    let mut report = Report {
        suite: suite.to_owned(),
        model: model.to_owned(),
        overall: tally(passed, verdicts.len() + load_errors.len()),
        baseline: None,
        failed: verdicts.len() - passed,
        model_errors: verdicts.iter().filter(|v| v.model_error.is_some()).count(),
        scorer_errors: verdicts.iter().filter(|v| v.has_scorer_error()).count(),
        scorers,
        categories: cats
            .into_iter()
            .map(|(k, (n, p))| (k, tally(p, n)))
            .collect(),
        slices,
        tasks,
        gates: Vec::new(),
        judge: None,
        load_errors: load_errors.to_vec(),
        verdicts,
    };
    report.gates = gate::evaluate(&cfg.gates, cfg.max_errors, &report);
    report
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn wilson_matches_statsmodels() {
        // statsmodels.stats.proportion.proportion_confint(7, 20, method="wilson")
        let (lo, hi) = wilson95(7, 20);
        assert!((lo - 0.181_192_0).abs() < 1e-6, "{lo}");
        assert!((hi - 0.567_146_2).abs() < 1e-6, "{hi}");
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }

    proptest! {
        #[test]
        fn wilson_brackets_the_rate(n in 1usize..500, k in 0usize..500) {
            let k = k % (n + 1);
            let (lo, hi) = wilson95(k, n);
            let p = k as f64 / n as f64;
            prop_assert!(lo <= p + 1e-12 && p <= hi + 1e-12 && 0.0 <= lo && hi <= 1.0);
        }
    }
}
