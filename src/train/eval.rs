//! The trainer's evaluations, through the same pipeline as `vlmtest run`: a snapshot of the model
//! being trained answers the validation cases in batches (`Session::evaluate_with`), the session
//! scores the answers with the suite's own scorers, task metrics and judge, and builds the same
//! `Report` `vlmtest run` writes. The trainer adds only the teacher-forced validation loss.
//!
//! The early-stopping and best-checkpoint metric (`Objective`) is any metric of that report, by
//! the names gates and `vlmtest compare` use (`pass_rate`, `score.token_f1`, `spam.macro_f1`,
//! `deals.f1`, `price.smape`), or `val_loss`; its better direction is the report's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::batch::plan;
use super::data::Example;
use super::model::TrainableModel;
use super::TrainError;
use crate::case::Case;
use crate::config::Config;
use crate::lora::LoraRng;
use crate::report::{self, Report};
use crate::session::{Overrides, Session};
use crate::suite::Suite;
use crate::task;

/// The name of the teacher-forced loss among an evaluation's metrics.
pub const VAL_LOSS: &str = "val_loss";

/// The summary of one evaluation (the seeds' `prebench_*_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// `before`, `step-N`, `epoch-N`, `after`.
    pub label: String,
    pub step: usize,
    /// Validation cases answered.
    pub n: usize,
    /// Every aggregate metric of `report`, by its gate name (`report::gate::metrics`), plus
    /// `val_loss` when the validation rows have reference answers to score.
    pub metrics: BTreeMap<String, f64>,
    pub seconds: f64,
    /// The suite's report, exactly as `vlmtest run` builds it for the same answers.
    pub report: Report,
}

impl EvalSummary {
    /// The value of a named metric, when this evaluation has it.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).copied()
    }

    /// Each answered case's test name and answer, in the report's order.
    pub fn rows(&self) -> Vec<EvalRow> {
        self.report
            .verdicts
            .iter()
            .map(|v| EvalRow {
                case: v.name.clone(),
                answer: v
                    .answer
                    .as_ref()
                    .map(|a| a.text.clone())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// The answer given to the case named `test_name`.
    pub fn answer(&self, test_name: &str) -> Option<&str> {
        self.report
            .verdicts
            .iter()
            .find(|v| v.name == test_name)
            .and_then(|v| v.answer.as_ref())
            .map(|a| a.text.as_str())
    }
}

/// One validation case's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRow {
    pub case: String,
    pub answer: String,
}

/// The metric that picks the best checkpoint and drives early stopping, with its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub name: String,
    pub lower_is_better: bool,
}

impl Objective {
    /// Reads a metric name: `val_loss`, `pass_rate`, `score.<scorer>`, `category.<name>` or
    /// `<task>.<metric>`; a name of none of these forms, or a metric with no better direction
    /// (a chosen threshold, a count), is an error saying what to write instead.
    pub fn parse(name: &str) -> Result<Self, String> {
        if name == VAL_LOSS {
            return Ok(Self {
                name: name.to_owned(),
                lower_is_better: true,
            });
        }
        let known_form = name == "pass_rate"
            || name.starts_with("score.")
            || name.starts_with("category.")
            || name
                .split_once('.')
                .is_some_and(|(t, m)| task::TASKS.contains(&t) && !m.is_empty());
        if !known_form {
            return Err(format!(
                "{name:?} is not a report metric; name one as gates do: \"pass_rate\", \
                 \"score.<scorer>\" (e.g. \"score.token_f1\"), \"category.<name>\", \
                 \"<task>.<metric>\" (e.g. \"spam.macro_f1\", \"deals.f1\", \"price.smape\"), \
                 or \"val_loss\""
            ));
        }
        match report::columns::lower_is_better(name) {
            Some(lower_is_better) => Ok(Self {
                name: name.to_owned(),
                lower_is_better,
            }),
            None => Err(format!(
                "{name:?} has no better direction (a threshold or a count); pick a metric to \
                 maximise or minimise"
            )),
        }
    }

    /// Whether `new` beats `best` by more than `min_delta` in this metric's direction.
    pub fn improves(&self, new: f64, best: Option<f64>, min_delta: f64) -> bool {
        let margin = min_delta.max(0.0) + 1e-12;
        match best {
            None => true,
            Some(b) if self.lower_is_better => new < b - margin,
            Some(b) => new > b + margin,
        }
    }

    /// This metric's value in `s`; a metric the report does not have is an error listing the
    /// ones it has.
    pub fn value(&self, s: &EvalSummary) -> Result<f64, TrainError> {
        s.metric(&self.name).ok_or_else(|| TrainError::Config {
            field: "metric",
            reason: format!(
                "the validation report has no metric {:?}; it has: {}",
                self.name,
                s.metrics.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        })
    }
}

/// The validation set: one suite, with the configuration it is scored under.
pub struct Validation {
    session: Session,
    suite: String,
}

impl Validation {
    /// No validation rows: nothing is evaluated.
    pub fn none() -> Self {
        Self::of_rows(Vec::new())
    }

    /// Rows read from `val` files (`load_rows`): scored with the expectations the rows carry
    /// (an `expect` list, e.g. a `spam` task) and the default row scorers, exact match and token
    /// F1, under a default suite configuration. The suite is named after the file when all rows
    /// come from one, else `val`.
    pub fn of_rows(mut cases: Vec<Case>) -> Self {
        let first = cases.first().map(|c| c.id.suite.clone());
        let name = match first {
            Some(f) if cases.iter().all(|c| c.id.suite == f) => f,
            Some(_) => "val".to_owned(),
            None => "val".to_owned(),
        };
        for c in &mut cases {
            c.id.suite = name.clone();
        }
        let session = Session {
            root: PathBuf::from("."),
            config: Config::default(),
            suites: vec![Suite {
                name: name.clone(),
                cases,
                errors: Vec::new(),
            }],
        };
        Self {
            session,
            suite: name,
        }
    }

    /// The suite `name` of the project at `root`, scored as `vlmtest run` scores it there: its
    /// prompt, row scorers, task, judge (the project's `[judge]`), slices and gates. A suite
    /// with rows that fail to load is an error naming them.
    pub fn of_suite(root: &Path, name: &str) -> Result<Self, TrainError> {
        let session =
            Session::open(root, &Overrides::default()).map_err(|e| TrainError::Config {
                field: "suite",
                reason: e.to_string(),
            })?;
        let Some(suite) = session.suite(name) else {
            let names: Vec<&str> = session.suites.iter().map(|s| s.name.as_str()).collect();
            return Err(TrainError::Config {
                field: "suite",
                reason: format!(
                    "{} has no suite {name:?}; its suites: {}",
                    root.display(),
                    names.join(", ")
                ),
            });
        };
        if !suite.errors.is_empty() {
            let lines: Vec<String> = suite.errors.iter().map(ToString::to_string).collect();
            return Err(TrainError::Data {
                origin: root.display().to_string(),
                case: format!("suite {name}: {} bad row(s)", lines.len()),
                reason: lines.join("\n"),
            });
        }
        Ok(Self {
            session,
            suite: name.to_owned(),
        })
    }

    /// Keeps the first `n` cases that are not ignored (0 keeps all), and answers with at most
    /// `max_new_tokens` tokens (the trainer's `eval_max_new_tokens`).
    pub fn limit(mut self, n: usize, max_new_tokens: usize) -> Self {
        self.session.config.model.max_new_tokens = max_new_tokens;
        if let Some(s) = self
            .session
            .suites
            .iter_mut()
            .find(|s| s.name == self.suite)
        {
            s.cases.retain(|c| !c.ignored);
            if n > 0 {
                s.cases.truncate(n);
            }
        }
        self
    }

    /// The suite's name.
    pub fn suite_name(&self) -> &str {
        &self.suite
    }

    /// The project the suite belongs to (`.` for row files).
    pub fn root(&self) -> &Path {
        &self.session.root
    }

    /// The validation cases, in order.
    pub fn cases(&self) -> Vec<&Case> {
        self.session
            .suite(&self.suite)
            .map(|s| s.cases.iter().filter(|c| !c.ignored).collect())
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.cases().is_empty()
    }

    /// Answers the validation cases with a snapshot of `model`, scores them through the session
    /// and adds the teacher-forced loss over `examples` (the encoded validation rows). A case the
    /// snapshot could not answer is an error: the trainer's own model failing is never a score.
    pub fn evaluate(
        &self,
        model: &dyn TrainableModel,
        label: &str,
        step: usize,
        examples: &[Example],
        progress: bool,
    ) -> Result<EvalSummary, TrainError> {
        let start = Instant::now();
        let cases = self.cases();
        let eval = {
            let mut snap = model.snapshot()?;
            self.session.evaluate_with(snap.as_mut(), &cases, progress)
        };
        let suite = self
            .session
            .suite(&self.suite)
            .ok_or_else(|| TrainError::NoData(format!("no validation suite {}", self.suite)))?;
        let report = self.session.report(suite, &eval);
        if let Some(v) = report.verdicts.iter().find(|v| v.model_error.is_some()) {
            return Err(TrainError::Data {
                origin: format!("evaluation {label}"),
                case: v.name.clone(),
                reason: format!(
                    "the model could not answer ({} of {} cases): {}",
                    report.model_errors,
                    report.verdicts.len(),
                    v.model_error.as_deref().unwrap_or_default()
                ),
            });
        }
        let mut metrics = report::gate::metrics(&report);
        if let Some(loss) = validation_loss(model, examples)? {
            metrics.insert(VAL_LOSS.to_owned(), loss);
        }
        Ok(EvalSummary {
            label: label.to_owned(),
            step,
            n: cases.len(),
            metrics,
            seconds: start.elapsed().as_secs_f64(),
            report,
        })
    }
}

/// Mean cross-entropy per answer token over `examples` (no dropout); `None` without examples.
fn validation_loss(
    model: &dyn TrainableModel,
    examples: &[Example],
) -> Result<Option<f64>, TrainError> {
    if examples.is_empty() {
        return Ok(None);
    }
    let mut rng = LoraRng::new(0);
    let (mut sum, mut n) = (0f64, 0usize);
    for chunk in examples.chunks(4) {
        let refs: Vec<&Example> = chunk.iter().collect();
        let b = plan(&refs, model.pad_id()).to_batch(model.device())?;
        sum += model.loss_sum(&b, &mut rng)?.detach().to_scalar::<f32>()? as f64;
        n += b.n_targets;
    }
    Ok(Some(sum / n.max(1) as f64))
}

/// `before` and `after` side by side, with the change: the metrics both have, in name order.
pub fn side_by_side(before: &EvalSummary, after: &EvalSummary) -> String {
    let width = after
        .metrics
        .keys()
        .map(String::len)
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = format!(
        "{:<width$} {:>10} {:>10} {:>10}\n",
        "metric", before.label, after.label, "change"
    );
    for (name, a) in &after.metrics {
        match before.metrics.get(name) {
            Some(b) => out.push_str(&format!(
                "{name:<width$} {b:>10.4} {a:>10.4} {:>+10.4}\n",
                a - b
            )),
            None => out.push_str(&format!(
                "{name:<width$} {:>10} {a:>10.4} {:>10}\n",
                "-", "-"
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn objectives_take_report_metric_names_and_their_direction() {
        let o = Objective::parse("spam.macro_f1").unwrap();
        assert!(!o.lower_is_better);
        assert!(Objective::parse("price.smape").unwrap().lower_is_better);
        assert!(Objective::parse("val_loss").unwrap().lower_is_better);
        assert!(!Objective::parse("pass_rate").unwrap().lower_is_better);
        assert!(!Objective::parse("score.numeric").unwrap().lower_is_better);
        for old in ["f1", "score", "exact_match", "smape", "spam.", "nosuch.f1"] {
            let e = Objective::parse(old).unwrap_err();
            assert!(e.contains("spam.macro_f1"), "{old}: {e}");
        }
        let e = Objective::parse("spam.sweep.review_threshold").unwrap_err();
        assert!(e.contains("no better direction"), "{e}");
    }

    #[test]
    fn improvement_respects_direction_and_min_delta() {
        let hi = Objective::parse("spam.macro_f1").unwrap();
        let lo = Objective::parse("val_loss").unwrap();
        assert!(hi.improves(0.5, Some(0.4), 0.0));
        assert!(!hi.improves(0.4, Some(0.4), 0.0));
        assert!(!hi.improves(0.45, Some(0.4), 0.1));
        assert!(lo.improves(0.1, Some(0.4), 0.0));
        assert!(!lo.improves(0.35, Some(0.4), 0.1));
        assert!(lo.improves(9.0, None, 0.0));
    }

    proptest! {
        #[test]
        fn improvement_is_strict_and_antisymmetric(a in -1e3f64..1e3, b in -1e3f64..1e3, d in 0f64..1.0) {
            for o in [Objective::parse("pass_rate").unwrap(), Objective::parse("val_loss").unwrap()] {
                prop_assert!(!(o.improves(a, Some(b), d) && o.improves(b, Some(a), d)));
                prop_assert!(!o.improves(a, Some(a), d));
            }
        }
    }
}
