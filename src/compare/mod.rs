//! Comparing two runs of the same suite: every aggregate metric side by side with the
//! difference, its paired 95% interval and a p-value, and the per-case changes (fixed, broken,
//! both failing) with the two answers.
//!
//! `compare` is a pure function of two reports (their verdicts hold every per-case score), so it
//! works on saved runs, committed baselines and fresh runs alike. Pass/fail pairs get the exact
//! McNemar test; every metric that is a function of the per-case rows (rates, scorer means, task
//! metrics such as macro F1, AUPRC, ECE, SMAPE, deal F1) gets a paired bootstrap recomputed
//! through the report's own aggregate functions (`report::columns`). Cases present on one side
//! only are listed and left out of the paired statistics. The difference is always `B − A`.

pub mod baseline;
pub mod html;
pub mod render;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

pub use baseline::{BaselineCheck, BaselineConfig, RuleOutcome};

use crate::metric::significance::{mcnemar_exact, percentile_interval, Bootstrap, PairCounts};
use crate::report::columns::{lower_is_better, Columns};
use crate::report::Report;
use crate::task::TaskError;
use crate::verdict::Verdict;

/// Which way a metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Higher,
    Lower,
    /// No better direction (a chosen threshold, a review rate).
    Neither,
}

impl Direction {
    pub fn of(metric: &str) -> Self {
        match lower_is_better(metric) {
            Some(true) => Direction::Lower,
            Some(false) => Direction::Higher,
            None => Direction::Neither,
        }
    }
}

/// What the difference means, at the comparison's significance level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// B is significantly better.
    Improved,
    /// B is significantly worse.
    Regressed,
    /// No significant difference (or no better direction).
    Unchanged,
    /// The metric exists on one side only, or no test could be made.
    Untested,
}

/// One metric of both sides over the paired cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricDelta {
    pub name: String,
    pub direction: Direction,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// `b − a`.
    pub diff: Option<f64>,
    /// 95% paired-bootstrap percentile interval of `b − a`.
    pub ci95: Option<(f64, f64)>,
    pub p_value: Option<f64>,
    /// `mcnemar` (pass rate) or `bootstrap`.
    pub test: String,
    pub change: Change,
}

/// A case whose outcome differs between the sides (or that fails on both).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseChange {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub a_answer: Option<String>,
    pub b_answer: Option<String>,
    /// Why it failed on the failing side (`numeric 0.33 < 1.00`).
    pub reason: String,
}

/// The comparison of one suite's two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteComparison {
    pub suite: String,
    pub a_model: String,
    pub b_model: String,
    /// Cases answered on both sides: the statistics rest on these.
    pub paired: usize,
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    pub pairs: PairCounts,
    pub metrics: Vec<MetricDelta>,
    /// Failed in A, passed in B.
    pub fixed: Vec<CaseChange>,
    /// Passed in A, failed in B.
    pub broken: Vec<CaseChange>,
    pub both_failing: Vec<String>,
    pub alpha: f64,
    pub bootstrap: Bootstrap,
}

impl SuiteComparison {
    /// The metric named `name`, if either side has it.
    pub fn metric(&self, name: &str) -> Option<&MetricDelta> {
        self.metrics.iter().find(|m| m.name == name)
    }

    /// Metrics that got significantly worse.
    pub fn regressions(&self) -> impl Iterator<Item = &MetricDelta> {
        self.metrics
            .iter()
            .filter(|m| m.change == Change::Regressed)
    }
}

/// Labels of the two sides (run ids, file names, model specs) for the rendered header.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sides {
    pub a: String,
    pub b: String,
}

/// The comparison of two runs: one entry per suite present on both sides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub sides: Sides,
    pub suites: Vec<SuiteComparison>,
    /// Suites present on one side only.
    pub unmatched_suites: Vec<String>,
}

/// Settings of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    pub bootstrap: Bootstrap,
    /// Significance level for `Change::Improved` / `Regressed`.
    pub alpha: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bootstrap: Bootstrap::default(),
            alpha: 0.05,
        }
    }
}

/// Compares every suite present in both `a` and `b`.
pub fn compare(
    sides: Sides,
    a: &[Report],
    b: &[Report],
    opts: Options,
) -> Result<Comparison, TaskError> {
    let b_by: HashMap<&str, &Report> = b.iter().map(|r| (r.suite.as_str(), r)).collect();
    let a_names: BTreeSet<&str> = a.iter().map(|r| r.suite.as_str()).collect();
    let mut suites = Vec::new();
    for ra in a {
        if let Some(rb) = b_by.get(ra.suite.as_str()) {
            suites.push(compare_suite(ra, rb, opts)?);
        }
    }
    let unmatched_suites = a
        .iter()
        .map(|r| r.suite.as_str())
        .filter(|s| !b_by.contains_key(s))
        .chain(
            b.iter()
                .map(|r| r.suite.as_str())
                .filter(|s| !a_names.contains(s)),
        )
        .map(str::to_owned)
        .collect();
    Ok(Comparison {
        sides,
        suites,
        unmatched_suites,
    })
}

fn answer(v: &Verdict) -> Option<String> {
    v.answer
        .as_ref()
        .map(|a| a.text.clone())
        .or_else(|| v.model_error.as_ref().map(|e| format!("[model error] {e}")))
}

/// Compares two reports of one suite.
pub fn compare_suite(a: &Report, b: &Report, opts: Options) -> Result<SuiteComparison, TaskError> {
    let b_index: HashMap<&str, usize> = b
        .verdicts
        .iter()
        .enumerate()
        .map(|(i, v)| (v.name.as_str(), i))
        .collect();
    let a_names: BTreeSet<&str> = a.verdicts.iter().map(|v| v.name.as_str()).collect();
    // The paired cases, in A's order: the same verdict list on both sides.
    let mut va = Vec::new();
    let mut vb = Vec::new();
    let mut only_a = Vec::new();
    for v in &a.verdicts {
        match b_index.get(v.name.as_str()) {
            Some(&j) => {
                va.push(v.clone());
                vb.push(b.verdicts[j].clone());
            }
            None => only_a.push(v.name.clone()),
        }
    }
    let only_b: Vec<String> = b
        .verdicts
        .iter()
        .filter(|v| !a_names.contains(v.name.as_str()))
        .map(|v| v.name.clone())
        .collect();
    let ca = Columns::new(&va)?;
    let cb = Columns::new(&vb)?;
    let n = va.len();

    let mut pairs = PairCounts::default();
    let mut fixed = Vec::new();
    let mut broken = Vec::new();
    let mut both_failing = Vec::new();
    for (x, y) in va.iter().zip(&vb) {
        match (x.passed, y.passed) {
            (true, true) => pairs.both_pass += 1,
            (false, true) => {
                pairs.fixed += 1;
                fixed.push(CaseChange {
                    name: x.name.clone(),
                    tags: y.tags.clone(),
                    a_answer: answer(x),
                    b_answer: answer(y),
                    reason: x.short_reason(),
                });
            }
            (true, false) => {
                pairs.broken += 1;
                broken.push(CaseChange {
                    name: x.name.clone(),
                    tags: y.tags.clone(),
                    a_answer: answer(x),
                    b_answer: answer(y),
                    reason: y.short_reason(),
                });
            }
            (false, false) => {
                pairs.both_fail += 1;
                both_failing.push(x.name.clone());
            }
        }
    }

    let all: Vec<usize> = (0..n).collect();
    let point_a = ca.metrics(&all, true);
    let point_b = cb.metrics(&all, true);
    // The paired bootstrap: one resample of case indices measures both sides.
    let mut diffs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut draws = opts.bootstrap.draws(n);
    while let Some(idx) = draws.next_draw() {
        let ma = ca.metrics(idx, false);
        let mb = cb.metrics(idx, false);
        for (k, x) in &ma {
            if let Some(y) = mb.get(k) {
                diffs.entry(k.clone()).or_default().push(y - x);
            }
        }
    }
    let names: BTreeSet<&String> = point_a.keys().chain(point_b.keys()).collect();
    let mut metrics = Vec::new();
    for name in names {
        let (va, vb) = (point_a.get(name).copied(), point_b.get(name).copied());
        let diff = va.zip(vb).map(|(x, y)| y - x);
        let direction = Direction::of(name);
        let reps = diffs.get_mut(name);
        let (ci95, boot_p) = match reps.and_then(|r| diff.and(percentile_interval(r))) {
            Some(i) => (Some((i.lo, i.hi)), Some(i.p_zero)),
            None => (None, None),
        };
        let (test, p_value) = if name == "pass_rate" {
            ("mcnemar", Some(mcnemar_exact(pairs.fixed, pairs.broken)))
        } else {
            ("bootstrap", boot_p)
        };
        let change = match (diff, p_value) {
            (Some(d), Some(p)) if p < opts.alpha && d != 0.0 => match direction {
                Direction::Higher if d > 0.0 => Change::Improved,
                Direction::Lower if d < 0.0 => Change::Improved,
                Direction::Neither => Change::Unchanged,
                _ => Change::Regressed,
            },
            (Some(_), Some(_)) => Change::Unchanged,
            _ => Change::Untested,
        };
        metrics.push(MetricDelta {
            name: name.clone(),
            direction,
            a: va,
            b: vb,
            diff,
            ci95,
            p_value,
            test: test.to_owned(),
            change,
        });
    }
    // Pass rate first, then scorer means, categories, task metrics (names sort that way apart
    // from the first).
    metrics.sort_by_key(|m| (m.name != "pass_rate", m.name.clone()));
    Ok(SuiteComparison {
        suite: a.suite.clone(),
        a_model: a.model.clone(),
        b_model: b.model.clone(),
        paired: n,
        only_a,
        only_b,
        pairs,
        metrics,
        fixed,
        broken,
        both_failing,
        alpha: opts.alpha,
        bootstrap: opts.bootstrap,
    })
}

#[cfg(test)]
mod tests;
