//! Evaluation with generation: answer every validation case, score the answers with vlmtest's
//! deterministic scorers, and add the task metrics the seeds track — malformed rate and F1 for
//! strict-JSON answers, SMAPE for bare-number answers — plus the teacher-forced loss.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::config::Metric;
use crate::case::Case;
use crate::score::score_deterministic;

/// One validation case's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRow {
    pub case: String,
    pub reference: Option<String>,
    pub answer: String,
    /// Mean of the case's deterministic expectation scores; exact match when it has none.
    pub score: f64,
    pub exact: bool,
}

/// The summary of one evaluation (the seeds' `prebench_*_summary.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    /// `before`, `epoch-N`, `after`.
    pub label: String,
    pub step: usize,
    pub n: usize,
    pub score: f64,
    pub exact_match: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub malformed_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smape: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss: Option<f64>,
    pub seconds: f64,
    pub rows: Vec<EvalRow>,
}

impl EvalSummary {
    /// The value of `metric`, when this evaluation has it.
    pub fn metric(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Score => Some(self.score),
            Metric::ExactMatch => Some(self.exact_match),
            Metric::F1 => self.f1,
            Metric::MalformedRate => self.malformed_rate,
            Metric::Smape => self.smape,
            Metric::ValLoss => self.val_loss,
        }
    }

    /// The metric lines to print side by side: (name, value).
    pub fn headline(&self) -> Vec<(&'static str, f64)> {
        let mut v = vec![("score", self.score), ("exact_match", self.exact_match)];
        for (name, x) in [
            ("malformed_rate", self.malformed_rate),
            ("f1", self.f1),
            ("accuracy", self.accuracy),
            ("smape", self.smape),
            ("val_loss", self.val_loss),
        ] {
            if let Some(x) = x {
                v.push((name, x));
            }
        }
        v
    }
}

/// Whether `new` beats `best` on `metric`.
pub fn improves(metric: Metric, new: f64, best: Option<f64>) -> bool {
    match best {
        None => true,
        Some(b) if metric.higher_is_better() => new > b + 1e-12,
        Some(b) => new < b - 1e-12,
    }
}

fn normalise(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The first JSON object in `text` (models often wrap it in prose or a code fence).
pub fn extract_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let start = text.find('{')?;
    let mut de =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    match de.next() {
        Some(Ok(serde_json::Value::Object(m))) => Some(m),
        _ => None,
    }
}

/// A JSON answer is well-formed when it is an object with the reference's keys, each of the same
/// JSON type (a strict schema check, as seed 001 asks).
pub fn well_formed(answer: &str, reference: &serde_json::Map<String, serde_json::Value>) -> bool {
    let Some(obj) = extract_json_object(answer) else {
        return false;
    };
    reference.iter().all(|(k, rv)| {
        obj.get(k)
            .is_some_and(|av| std::mem::discriminant(av) == std::mem::discriminant(rv))
            || (rv.is_number() && obj.get(k).is_some_and(serde_json::Value::is_number))
    })
}

/// The first number in `text` (`$4.89` → 4.89).
pub fn first_number(text: &str) -> Option<f64> {
    let re = regex::Regex::new(r"-?\d+(?:[.,]\d+)?").ok()?;
    let m = re.find(text)?;
    m.as_str().replace(',', ".").parse().ok()
}

/// SMAPE of one pair in [0, 2]: a missing prediction costs the maximum, as in seed 003.
pub fn smape(pred: Option<f64>, truth: f64) -> f64 {
    match pred {
        None => 2.0,
        Some(p) => {
            let den = (p.abs() + truth.abs()) / 2.0;
            if den == 0.0 {
                0.0
            } else {
                (p - truth).abs() / den
            }
        }
    }
}

/// Binary F1 with `true` as the positive class.
pub fn f1(pairs: &[(Option<bool>, bool)]) -> f64 {
    let tp = pairs.iter().filter(|(p, t)| *p == Some(true) && *t).count() as f64;
    let fp = pairs
        .iter()
        .filter(|(p, t)| *p == Some(true) && !*t)
        .count() as f64;
    let fn_ = pairs.iter().filter(|(p, t)| *p != Some(true) && *t).count() as f64;
    if tp == 0.0 {
        return 0.0;
    }
    2.0 * tp / (2.0 * tp + fp + fn_)
}

/// Scores answered cases into a summary. `answers[i]` answers `cases[i]`.
pub fn summarise(
    label: &str,
    step: usize,
    cases: &[&Case],
    answers: &[String],
    started: Instant,
) -> EvalSummary {
    let mut rows = Vec::with_capacity(cases.len());
    let mut json_refs = 0usize;
    let mut malformed = 0usize;
    let mut cls: Vec<(Option<bool>, bool)> = Vec::new();
    let mut smapes = Vec::new();
    for (case, answer) in cases.iter().zip(answers) {
        let reference = case.reference.clone();
        let exact = reference
            .as_deref()
            .is_some_and(|r| normalise(r) == normalise(answer));
        let scores: Vec<f64> = case
            .expect
            .iter()
            .filter_map(|e| score_deterministic(e, answer))
            .filter_map(|s| s.value)
            .collect();
        let score = if scores.is_empty() {
            f64::from(u8::from(exact))
        } else {
            scores.iter().sum::<f64>() / scores.len() as f64
        };
        if let Some(r) = reference.as_deref() {
            if let Some(robj) = extract_json_object(r).filter(|_| r.trim_start().starts_with('{')) {
                json_refs += 1;
                if !well_formed(answer, &robj) {
                    malformed += 1;
                }
                // The first boolean field is the class label (`is_spam`).
                if let Some((k, serde_json::Value::Bool(truth))) =
                    robj.iter().find(|(_, v)| v.is_boolean())
                {
                    let pred = extract_json_object(answer)
                        .and_then(|o| o.get(k).and_then(serde_json::Value::as_bool));
                    cls.push((pred, *truth));
                }
            } else if let Ok(truth) = r.trim().parse::<f64>() {
                smapes.push(smape(first_number(answer), truth));
            }
        }
        rows.push(EvalRow {
            case: case.id.test_name(),
            reference,
            answer: answer.clone(),
            score,
            exact,
        });
    }
    let n = rows.len();
    let mean = |xs: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = xs.collect();
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    EvalSummary {
        label: label.to_owned(),
        step,
        n,
        score: mean(&mut rows.iter().map(|r| r.score)),
        exact_match: mean(&mut rows.iter().map(|r| f64::from(u8::from(r.exact)))),
        malformed_rate: (json_refs > 0).then(|| malformed as f64 / json_refs as f64),
        f1: (!cls.is_empty()).then(|| f1(&cls)),
        accuracy: (!cls.is_empty())
            .then(|| cls.iter().filter(|(p, t)| *p == Some(*t)).count() as f64 / cls.len() as f64),
        smape: (!smapes.is_empty()).then(|| smapes.iter().sum::<f64>() / smapes.len() as f64),
        val_loss: None,
        seconds: started.elapsed().as_secs_f64(),
        rows,
    }
}

/// `before` and `after` side by side, with the change.
pub fn side_by_side(before: &EvalSummary, after: &EvalSummary) -> String {
    let b: BTreeMap<&str, f64> = before.headline().into_iter().collect();
    let mut out = format!(
        "{:<16} {:>10} {:>10} {:>10}\n",
        "metric", before.label, after.label, "change"
    );
    for (name, a) in after.headline() {
        match b.get(name) {
            Some(bv) => out.push_str(&format!(
                "{name:<16} {bv:>10.4} {a:>10.4} {:>+10.4}\n",
                a - bv
            )),
            None => out.push_str(&format!("{name:<16} {:>10} {a:>10.4} {:>10}\n", "-", "-")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::case::{CaseId, Message, Origin, Role};

    fn case(id: &str, reference: &str) -> Case {
        Case {
            id: CaseId::new("s", "c", id),
            tags: vec![],
            messages: vec![Message::text(Role::User, "q")],
            reference: Some(reference.into()),
            context: None,
            expect: vec![],
            metadata: BTreeMap::new(),
            ignored: false,
            origin: Origin {
                file: PathBuf::from("x.jsonl"),
                line: Some(1),
            },
        }
    }

    #[test]
    fn json_answers_get_malformed_rate_and_f1() {
        let r1 = r#"{"is_spam":true,"confidence":1.0,"reason":"cta"}"#;
        let r2 = r#"{"is_spam":false,"confidence":1.0,"reason":"ok"}"#;
        let cases = [case("1", r1), case("2", r2), case("3", r1)];
        let refs: Vec<&Case> = cases.iter().collect();
        let answers = vec![
            r#"Sure: {"is_spam": true, "confidence": 0.9, "reason": "x"}"#.to_owned(),
            "It is not spam.".to_owned(),
            r#"{"is_spam": "yes", "confidence": 1, "reason": "x"}"#.to_owned(),
        ];
        let s = summarise("before", 0, &refs, &answers, Instant::now());
        assert!((s.malformed_rate.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        // One true positive, one missed positive: F1 = 2/3.
        assert!((s.f1.unwrap() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.exact_match, 0.0);
        assert!(s.smape.is_none());
    }

    #[test]
    fn numeric_answers_get_smape() {
        let cases = [case("1", "4.00"), case("2", "10")];
        let refs: Vec<&Case> = cases.iter().collect();
        let s = summarise(
            "after",
            3,
            &refs,
            &["$4.00".into(), "no idea".into()],
            Instant::now(),
        );
        assert!((s.smape.unwrap() - 1.0).abs() < 1e-9);
        assert!(s.malformed_rate.is_none());
        assert!(side_by_side(&s, &s).contains("smape"));
    }

    #[test]
    fn improvement_respects_direction() {
        assert!(improves(Metric::F1, 0.5, Some(0.4)));
        assert!(!improves(Metric::F1, 0.4, Some(0.4)));
        assert!(improves(Metric::MalformedRate, 0.1, Some(0.4)));
        assert!(improves(Metric::ValLoss, 9.0, None));
    }

    proptest! {
        #[test]
        fn smape_is_bounded(p in proptest::option::of(-1e6f64..1e6), t in -1e6f64..1e6) {
            let v = smape(p, t);
            prop_assert!((0.0..=2.0 + 1e-9).contains(&v));
        }

        #[test]
        fn json_extraction_never_panics(s in "\\PC{0,80}") {
            let _ = extract_json_object(&s);
            let _ = first_number(&s);
        }
    }
}
