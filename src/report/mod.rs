//! Stage 4 of the flow: aggregating verdicts into one `Report` per suite — data first, then
//! rendered as a terminal table, JSON, JUnit XML and an insta snapshot.

mod aggregate;
pub mod columns;
pub mod export;
pub mod gate;
pub mod html;
pub mod junit;
pub mod snapshot;
pub mod table;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use aggregate::{bootstrap_intervals, build, mean, rate};

use crate::verdict::Verdict;

/// Cases and passes of a group, with the pass rate's 95% Wilson interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tally {
    pub cases: usize,
    pub passed: usize,
    pub pass_rate: f64,
    pub pass_rate_ci95: (f64, f64),
}

/// One scorer's aggregate over the suite.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScorerSummary {
    /// Cases where it produced a value.
    pub scored: usize,
    pub passed: usize,
    /// Mean of the values (None when nothing was scored).
    pub mean: Option<f64>,
    /// The mean's 95% percentile-bootstrap interval over the cases (seeded, so reproducible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_ci95: Option<(f64, f64)>,
    /// Scorer errors (e.g. judge errors), counted apart from model failures.
    pub errors: usize,
}

/// A gate's outcome: `min <= name <= max`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    pub name: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub actual: Option<f64>,
    /// Items the metric should cover and does not: entries that did not load, cases the model
    /// could not answer, and scorer (judge) errors behind it. More than the suite's
    /// `max_errors` fails the gate whatever its value.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing: usize,
    pub passed: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// A suite's aggregate report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub suite: String,
    pub model: String,
    pub overall: Tally,
    pub failed: usize,
    /// Cases the model could not answer.
    pub model_errors: usize,
    /// Cases with at least one scorer (judge) error.
    pub scorer_errors: usize,
    pub scorers: BTreeMap<String, ScorerSummary>,
    pub categories: BTreeMap<String, Tally>,
    /// Breakdowns by metadata field: field → value → tally.
    pub slices: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Task metrics (`deals`, `spam`, …): task → `{metrics, details, ci95}`, where `ci95` holds
    /// each metric's 95% percentile-bootstrap interval over the cases.
    pub tasks: BTreeMap<String, serde_json::Value>,
    pub gates: Vec<GateResult>,
    /// The LLM judge's counters for this suite's judge expectations (calls, retries, cache hits,
    /// errors, tokens, cost); absent when the suite has none. Only the deterministic counts go
    /// into the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::judge::JudgeStats>,
    /// The comparison with the suite's baseline and its rules (`[suites.<name>.baseline]`);
    /// absent when the suite has none. Not in the snapshot (it is about another run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<crate::compare::BaselineCheck>,
    /// Rows, probes and sources of the suite that did not load, each with its file, line and
    /// field. Each counts as a case that did not pass (in `overall`) and as a missing item of
    /// every gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load_errors: Vec<crate::suite::SuiteError>,
    /// Every case's verdict (JSON report only; not in the snapshot).
    pub verdicts: Vec<Verdict>,
}

/// What a report (or a set of them) says to a CI: the exit code's three cases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    Passed,
    /// A gate, the baseline rules or (in a suite without gates) a case failed.
    Failed,
    /// Something did not run: an entry did not load, the model or a scorer (the judge) erred.
    Error,
}

impl GateResult {
    /// Why a failed gate failed: `0.412 is outside its bounds (>= 0.550)`, or
    /// `0.91 is incomplete: 69 items ended in an error`.
    pub fn failure(&self) -> String {
        let value = self.actual.map_or("missing".into(), |a| format!("{a:.3}"));
        let in_bounds = self.in_bounds();
        if in_bounds && self.missing > 0 {
            format!(
                "{value} is incomplete: {} item(s) behind it ended in an error (raise the suite's \
                 `max_errors` to accept them)",
                self.missing
            )
        } else if self.missing > 0 {
            format!(
                "{value} is outside its bounds ({}), and {} item(s) behind it ended in an error",
                self.describe(),
                self.missing
            )
        } else {
            format!("{value} is outside its bounds ({})", self.describe())
        }
    }

    /// `min <= actual <= max` (to 1e-12); a missing value is never in bounds.
    pub fn in_bounds(&self) -> bool {
        self.actual.is_some_and(|a| {
            self.min.is_none_or(|m| a >= m - 1e-12) && self.max.is_none_or(|m| a <= m + 1e-12)
        })
    }

    /// `>= 0.550`, `<= 55.000`, or `>= 0.1, <= 0.9`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(m) = self.min {
            parts.push(format!(">= {m:.3}"));
        }
        if let Some(m) = self.max {
            parts.push(format!("<= {m:.3}"));
        }
        parts.join(", ")
    }
}

impl Report {
    /// All gates passed, the baseline rules included.
    pub fn gates_passed(&self) -> bool {
        self.gates.iter().all(|g| g.passed) && self.baseline.as_ref().is_none_or(|b| b.passed)
    }

    /// Cases that ended in an error, not a verdict: entries that did not load, and cases the
    /// model could not answer or a scorer (the judge) could not score.
    pub fn errors(&self) -> usize {
        self.load_errors.len() + self.verdicts.iter().filter(|v| v.is_error()).count()
    }

    /// Error when anything erred; else Failed when a gate or the baseline failed, or, in a
    /// suite without gates, a case failed; else Passed.
    pub fn outcome(&self) -> Outcome {
        if self.errors() > 0 {
            Outcome::Error
        } else if (self.gates.is_empty() && self.baseline.is_none() && self.failed > 0)
            || !self.gates_passed()
        {
            Outcome::Failed
        } else {
            Outcome::Passed
        }
    }
}

/// The worst outcome of several reports (Passed for none).
pub fn outcome(reports: &[Report]) -> Outcome {
    reports
        .iter()
        .map(Report::outcome)
        .max()
        .unwrap_or(Outcome::Passed)
}

/// `<project>/target/vlmtest`, or `$CARGO_TARGET_DIR/vlmtest`.
pub fn output_dir(project: &Path) -> PathBuf {
    match crate::config::env::cargo_target_dir() {
        Some(t) => t.join("vlmtest"),
        None => project.join("target").join("vlmtest"),
    }
}

/// Writes `report-<suite>.json` and returns its path.
pub fn write_json(dir: &Path, report: &Report) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("report-{}.json", report.suite));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // Streamed to the file: a large report is never held as one string.
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    serde_json::to_writer_pretty(&mut out, report).map_err(std::io::Error::other)?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Reads a report written by `write_json`.
pub fn read_json(path: &Path) -> Result<Report, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}
