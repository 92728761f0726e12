//! Stage 3 of the flow: scoring an answer against a case's expectations.
//!
//! Every scorer is a pure function of (expectation, answer) returning a `Score`. The judge and
//! task scorers plug in through `Expectation::Judge` and `Expectation::Task`.

pub mod exact;
pub mod keywords;
pub mod numbers;
pub mod text;
pub mod token_f1;

use serde::{Deserialize, Serialize};

use crate::case::Expectation;

/// Why a score could not be computed as a pass/fail of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreStatus {
    /// Scored: `value` holds the score.
    Scored,
    /// The scorer itself failed (a judge error): reported apart from model failures.
    ScorerError,
    /// Not scored (no reference, scorer not configured): excluded from means.
    Skipped,
}

/// One expectation's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// `numeric`, `keywords`, `exact`, `token_f1`, `judge.correctness`, `deals`, …
    pub scorer: String,
    pub status: ScoreStatus,
    /// In 0..=1 when scored.
    pub value: Option<f64>,
    pub threshold: f64,
    pub passed: bool,
    /// A short human-readable explanation ("matched 2/3 numbers; missing 90 deg").
    pub detail: String,
    /// Scorer-specific structured data (matched items, judge exchange, parsed JSON) for reports.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

impl Score {
    /// A scored result that passes when `value >= threshold`.
    pub fn scored(scorer: impl Into<String>, value: f64, threshold: f64, detail: String) -> Self {
        Self {
            scorer: scorer.into(),
            status: ScoreStatus::Scored,
            value: Some(value),
            threshold,
            passed: value >= threshold,
            detail,
            data: serde_json::Value::Null,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }

    pub fn scorer_error(scorer: impl Into<String>, threshold: f64, detail: String) -> Self {
        Self {
            scorer: scorer.into(),
            status: ScoreStatus::ScorerError,
            value: None,
            threshold,
            passed: false,
            detail,
            data: serde_json::Value::Null,
        }
    }

    pub fn skipped(scorer: impl Into<String>, detail: String) -> Self {
        Self {
            scorer: scorer.into(),
            status: ScoreStatus::Skipped,
            value: None,
            threshold: 0.0,
            passed: true,
            detail,
            data: serde_json::Value::Null,
        }
    }
}

/// Scores the deterministic expectations (numbers, keywords, exact, token F1). Judge and task
/// expectations return `None`: their own stages score them.
pub fn score_deterministic(expectation: &Expectation, answer: &str) -> Option<Score> {
    match expectation {
        Expectation::Numbers {
            numbers,
            tolerance,
            min_matched,
            threshold,
        } => Some(numbers::score(
            numbers,
            *tolerance,
            *min_matched,
            *threshold,
            answer,
        )),
        Expectation::Keywords {
            keywords,
            min_matched,
            threshold,
        } => Some(keywords::score(keywords, *min_matched, *threshold, answer)),
        Expectation::Exact { text, normalise } => Some(exact::score(text, *normalise, answer)),
        Expectation::TokenF1 {
            reference,
            threshold,
        } => Some(token_f1::score(reference, *threshold, answer)),
        Expectation::Judge { .. } | Expectation::Task { .. } => None,
    }
}
