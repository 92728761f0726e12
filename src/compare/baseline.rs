//! The regression gate against a baseline run: `[suites.<name>.baseline]` names a committed
//! report (or a stored run) and the rules a new run must keep — no significant regression on the
//! named metrics, at most `max_broken` broken cases (optionally only those with given tags).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{compare_suite, Change, Direction, Options, SuiteComparison};
use crate::metric::significance::{Bootstrap, DEFAULT_BOOTSTRAP};
use crate::report::Report;

/// `[suites.<name>.baseline]` in `vlmtest.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineConfig {
    /// A baseline report (`report-<suite>.json`, as `vlmtest run` writes it) or a run folder,
    /// relative to the project root. Commit it beside the suite.
    pub report: Option<PathBuf>,
    /// A run id of the run store (`target/vlmtest/runs/`), or `latest`.
    pub run: Option<String>,
    /// Metrics (gate names) that must not get significantly worse.
    #[serde(default)]
    pub no_significant_regression: Vec<String>,
    /// Significance level of those tests.
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    /// At most this many cases may pass in the baseline and fail now.
    pub max_broken: Option<usize>,
    /// Only cases with one of these tags count toward `max_broken` (default: every case).
    #[serde(default)]
    pub broken_tags: Vec<String>,
    /// Bootstrap resamples of the comparison (at least 2,000 by default).
    pub resamples: Option<usize>,
}

fn default_alpha() -> f64 {
    0.05
}

impl BaselineConfig {
    /// What the baseline is, for messages: the report path or `run <id>`.
    pub fn describe(&self) -> String {
        match (&self.report, &self.run) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(id)) => format!("run {id}"),
            (None, None) => "(none)".into(),
        }
    }

    fn options(&self) -> Options {
        Options {
            bootstrap: Bootstrap {
                resamples: self.resamples.unwrap_or(DEFAULT_BOOTSTRAP.resamples),
                ..DEFAULT_BOOTSTRAP
            },
            alpha: self.alpha,
        }
    }
}

/// One rule's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleOutcome {
    /// `no_significant_regression(spam.macro_f1)`, `max_broken = 0 [critical]`.
    pub rule: String,
    pub passed: bool,
    pub detail: String,
}

/// The baseline gate of one suite.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineCheck {
    /// The baseline, as configured.
    pub baseline: String,
    pub passed: bool,
    /// Why no comparison could be made (missing file, another suite); the check then fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub rules: Vec<RuleOutcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comparison: Option<SuiteComparison>,
}

impl BaselineCheck {
    fn failed(baseline: String, error: String) -> Self {
        Self {
            baseline,
            passed: false,
            error: Some(error),
            rules: Vec::new(),
            comparison: None,
        }
    }
}

/// Checks `current` against `baseline` (already loaded, or the reason it could not be).
pub fn check(
    cfg: &BaselineConfig,
    baseline: Result<Report, String>,
    current: &Report,
) -> BaselineCheck {
    let name = cfg.describe();
    let base = match baseline {
        Ok(b) => b,
        Err(e) => return BaselineCheck::failed(name, format!("cannot read the baseline: {e}")),
    };
    if base.suite != current.suite {
        return BaselineCheck::failed(
            name,
            format!(
                "the baseline is a report of suite `{}`, not `{}`",
                base.suite, current.suite
            ),
        );
    }
    if !(cfg.alpha > 0.0 && cfg.alpha < 1.0) {
        return BaselineCheck::failed(name, format!("alpha = {} is not in (0, 1)", cfg.alpha));
    }
    if cfg.no_significant_regression.is_empty() && cfg.max_broken.is_none() {
        return BaselineCheck::failed(
            name,
            "a baseline without rules checks nothing: set `no_significant_regression` or `max_broken`"
                .into(),
        );
    }
    let cmp = match compare_suite(&base, current, cfg.options()) {
        Ok(c) => c,
        Err(e) => return BaselineCheck::failed(name, format!("cannot compare: {e}")),
    };
    let mut rules = Vec::new();
    for metric in &cfg.no_significant_regression {
        let rule = format!("no_significant_regression({metric})");
        let outcome = match cmp.metric(metric) {
            None => RuleOutcome {
                rule,
                passed: false,
                detail: format!("metric `{metric}` is in neither run"),
            },
            Some(m) if m.direction == Direction::Neither => RuleOutcome {
                rule,
                passed: false,
                detail: format!("metric `{metric}` has no better direction to regress in"),
            },
            Some(m) => match (m.diff, m.p_value) {
                (Some(d), Some(p)) => RuleOutcome {
                    rule,
                    passed: m.change != Change::Regressed,
                    detail: format!(
                        "{:.4} -> {:.4} (diff {d:+.4}, p = {p:.4} by {}, alpha {})",
                        m.a.unwrap_or(f64::NAN),
                        m.b.unwrap_or(f64::NAN),
                        m.test,
                        cfg.alpha
                    ),
                },
                _ => RuleOutcome {
                    rule,
                    passed: false,
                    detail: format!(
                        "metric `{metric}` could not be tested (baseline {}, now {})",
                        m.a.map_or("missing".into(), |x| format!("{x:.4}")),
                        m.b.map_or("missing".into(), |x| format!("{x:.4}"))
                    ),
                },
            },
        };
        rules.push(outcome);
    }
    if let Some(max) = cfg.max_broken {
        let counted: Vec<&str> = cmp
            .broken
            .iter()
            .filter(|c| {
                cfg.broken_tags.is_empty() || c.tags.iter().any(|t| cfg.broken_tags.contains(t))
            })
            .map(|c| c.name.as_str())
            .collect();
        let scope = if cfg.broken_tags.is_empty() {
            String::new()
        } else {
            format!(" [tags: {}]", cfg.broken_tags.join(", "))
        };
        rules.push(RuleOutcome {
            rule: format!("max_broken = {max}{scope}"),
            passed: counted.len() <= max,
            detail: if counted.is_empty() {
                "no broken case".into()
            } else {
                format!("{} broken: {}", counted.len(), counted.join(", "))
            },
        });
    }
    if cmp.paired == 0 {
        rules.push(RuleOutcome {
            rule: "paired cases".into(),
            passed: false,
            detail: "the baseline and this run share no case".into(),
        });
    }
    BaselineCheck {
        baseline: name,
        passed: rules.iter().all(|r| r.passed),
        error: None,
        rules,
        comparison: Some(cmp),
    }
}
