//! Builds a `Report` from a suite's cases and verdicts. Pure: same input, same report.

use std::collections::BTreeMap;

use super::{gate, Report, ScorerSummary, Tally};
use crate::case::Case;
use crate::config::SuiteConfig;
use crate::score::ScoreStatus;
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

pub fn tally(passed: usize, cases: usize) -> Tally {
    let pass_rate = if cases == 0 {
        0.0
    } else {
        passed as f64 / cases as f64
    };
    Tally {
        cases,
        passed,
        pass_rate,
        pass_rate_ci95: wilson95(passed, cases),
    }
}

fn metadata_value(case: &Case, field: &str) -> String {
    match case.metadata.get(field) {
        None | Some(serde_json::Value::Null) => "(none)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

/// Aggregates one suite. `tasks` holds the task metrics computed by the task stage.
pub fn build(
    suite: &str,
    model: &str,
    cfg: &SuiteConfig,
    cases: &[&Case],
    verdicts: &[Verdict],
    tasks: BTreeMap<String, serde_json::Value>,
) -> Report {
    let passed = verdicts.iter().filter(|v| v.passed).count();
    let mut scorers: BTreeMap<String, (ScorerSummary, f64)> = BTreeMap::new();
    for v in verdicts {
        for s in &v.scores {
            let (sum, total) = scorers.entry(s.scorer.clone()).or_default();
            match s.status {
                ScoreStatus::Scored => {
                    sum.scored += 1;
                    sum.passed += usize::from(s.passed);
                    *total += s.value.unwrap_or(0.0);
                }
                ScoreStatus::ScorerError => sum.errors += 1,
                ScoreStatus::Skipped => {}
            }
        }
    }
    let scorers = scorers
        .into_iter()
        .map(|(k, (mut s, total))| {
            s.mean = (s.scored > 0).then(|| total / s.scored as f64);
            (k, s)
        })
        .collect();
    let mut cats: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for v in verdicts {
        let e = cats.entry(v.category.clone()).or_default();
        e.0 += 1;
        e.1 += usize::from(v.passed);
    }
    let mut slices: BTreeMap<String, BTreeMap<String, Tally>> = BTreeMap::new();
    for field in &cfg.slices {
        let mut groups: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for (c, v) in cases.iter().zip(verdicts) {
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
        overall: tally(passed, verdicts.len()),
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
        verdicts: verdicts.to_vec(),
    };
    report.gates = gate::evaluate(&cfg.gates, &report);
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
