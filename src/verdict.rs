//! A case's outcome: the answer, every score, and whether it passed; and the failure text a
//! trial prints.

use serde::{Deserialize, Serialize};

use crate::case::{Case, Expectation};
use crate::model::Answer;
use crate::score::text::shorten;
use crate::score::{Score, ScoreStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub name: String,
    pub category: String,
    /// The case's tags, so a saved report can be compared by tag (`max_broken` of `critical`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub passed: bool,
    pub answer: Option<Answer>,
    /// The model failed to answer (load or inference error).
    pub model_error: Option<String>,
    pub scores: Vec<Score>,
}

impl Verdict {
    /// Passed when the model answered and every score passed.
    pub fn new(case: &Case, answer: Result<Answer, String>, scores: Vec<Score>) -> Self {
        let (answer, model_error) = match answer {
            Ok(a) => (Some(a), None),
            Err(e) => (None, Some(e)),
        };
        let passed = model_error.is_none() && scores.iter().all(|s| s.passed);
        Self {
            name: case.id.test_name(),
            category: case.id.category.clone(),
            tags: case.tags.clone(),
            passed,
            answer,
            model_error,
            scores,
        }
    }

    /// The case ended in an error, not a verdict: the model could not answer, or a scorer (the
    /// judge) could not score. Counted as an error in every output, never as a plain failure.
    pub fn is_error(&self) -> bool {
        self.model_error.is_some() || self.has_scorer_error()
    }

    pub fn has_scorer_error(&self) -> bool {
        self.scores
            .iter()
            .any(|s| s.status == ScoreStatus::ScorerError)
    }

    /// The failing scores in one line: `numeric 0.33 < 1.00; keywords 0.00 < 1.00`.
    pub fn short_reason(&self) -> String {
        if let Some(e) = &self.model_error {
            return format!("model error: {e}");
        }
        let parts: Vec<String> = self
            .scores
            .iter()
            .filter(|s| !s.passed)
            .map(|s| match s.value {
                Some(v) => format!("{} {v:.2} < {:.2}", s.scorer, s.threshold),
                None => format!("{} error", s.scorer),
            })
            .collect();
        parts.join("; ")
    }

    /// What a failing trial prints: prompt (shortened), expected, answer, each score against its
    /// threshold.
    pub fn explain(&self, case: &Case) -> String {
        let mut out = String::new();
        out.push_str(&format!("prompt:   {}\n", shorten(&case.question(), 160)));
        if let Some(expected) = expected_text(case) {
            out.push_str(&format!("expected: {}\n", shorten(&expected, 160)));
        }
        match (&self.answer, &self.model_error) {
            (_, Some(e)) => out.push_str(&format!("model error: {e}\n")),
            (Some(a), None) => out.push_str(&format!("answer:   {}\n", shorten(&a.text, 240))),
            (None, None) => {}
        }
        for s in &self.scores {
            let mark = match (s.status, s.passed) {
                (ScoreStatus::ScorerError, _) => "ERROR",
                (ScoreStatus::Skipped, _) => "skip",
                (_, true) => "ok",
                (_, false) => "FAIL",
            };
            let value = s
                .value
                .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
            out.push_str(&format!(
                "  [{mark:>5}] {:<18} {value} (threshold {:.3}): {}\n",
                s.scorer, s.threshold, s.detail
            ));
        }
        out
    }
}

/// A one-line description of what the case expects, for failure output.
pub fn expected_text(case: &Case) -> Option<String> {
    let mut parts = Vec::new();
    for e in &case.expect {
        match e {
            Expectation::Numbers { numbers, .. } => {
                let list: Vec<String> = numbers
                    .iter()
                    .map(|n| match &n.unit {
                        Some(u) => format!("{} {u}", n.value),
                        None => n.value.to_string(),
                    })
                    .collect();
                parts.push(format!("numbers [{}]", list.join(", ")));
            }
            Expectation::Keywords { keywords, .. } => {
                parts.push(format!("keywords [{}]", keywords.join(", ")))
            }
            Expectation::Exact { text, .. } => parts.push(format!("exactly `{text}`")),
            Expectation::TokenF1 { .. } | Expectation::Judge { .. } | Expectation::Task { .. } => {}
        }
    }
    if let Some(r) = &case.reference {
        parts.push(format!("reference `{}`", shorten(r, 120)));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::case::{CaseId, ExpectedNumber, Message, Origin, Role, Tolerance};
    use crate::score::score_deterministic;

    #[test]
    fn a_failure_explains_prompt_expectation_answer_and_scores() {
        let expect = vec![Expectation::Numbers {
            numbers: vec![ExpectedNumber {
                value: 35.0,
                unit: Some("Nm".into()),
            }],
            tolerance: Tolerance::default(),
            min_matched: None,
            threshold: 1.0,
        }];
        let case = Case {
            id: CaseId::new("qa", "torque", "t1"),
            tags: vec![],
            messages: vec![Message::text(
                Role::User,
                "How tight should the drain plug be?",
            )],
            reference: Some("35 Nm.".into()),
            context: None,
            expect,
            metadata: Default::default(),
            ignored: false,
            origin: Origin {
                file: "p.toml".into(),
                line: Some(1),
            },
        };
        let answer = Answer {
            text: "100 Nm".into(),
            prompt_tokens: 5,
            generated_tokens: 3,
            elapsed: Duration::ZERO,
        };
        let scores = case
            .expect
            .iter()
            .filter_map(|e| score_deterministic(e, &answer.text))
            .collect();
        let v = Verdict::new(&case, Ok(answer), scores);
        assert!(!v.passed);
        let text = v.explain(&case);
        for needle in [
            "prompt:   How tight",
            "expected: numbers [35 Nm]",
            "answer:   100 Nm",
            "[ FAIL] numeric",
            "threshold 1.000",
            "missing 35 Nm",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert_eq!(v.short_reason(), "numeric 0.00 < 1.00");
    }
}
