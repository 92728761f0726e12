//! Spam classification (seed 001): the model answers `{"is_spam": bool, "confidence": 0..1,
//! "reason": str}`; the suite reports accuracy, precision, recall, macro / micro F1, AUPRC, ECE
//! with reliability bins, the review / demote policy at its configured thresholds, a threshold
//! sweep with the chosen operating point, and the TF-IDF baseline's numbers and the uplift.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::first_json;
use super::Aggregator;
use crate::metric::baseline::BaselinePrediction;
use crate::metric::calibration::calibration;
use crate::metric::classification::binary;
use crate::metric::policy::{evaluate, grid, sweep};
use crate::metric::ranking::average_precision;
use crate::metric::significance::{mcnemar_exact, PairCounts};
use crate::score::Score;

/// The seed's default policy thresholds.
pub const REVIEW_THRESHOLD: f64 = 0.5;
pub const DEMOTE_THRESHOLD: f64 = 0.7;
/// Reliability bins for ECE.
pub const ECE_BINS: usize = 10;
/// Sweep grid: thresholds in steps of 1/20.
pub const SWEEP_STEPS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub review_threshold: f64,
    pub demote_threshold: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            review_threshold: REVIEW_THRESHOLD,
            demote_threshold: DEMOTE_THRESHOLD,
        }
    }
}

/// A case's ground truth and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpamSpec {
    pub label: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// `(yes − no) / (yes + no)` of the annotators, 0 when there were none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_confidence: Option<f64>,
    /// The TF-IDF baseline's prediction for this row, computed at import time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselinePrediction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
}

/// A validated model answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamAnswer {
    pub is_spam: bool,
    pub confidence: f64,
    #[serde(default)]
    pub reason: String,
}

impl SpamAnswer {
    /// Probability of spam implied by the answer.
    pub fn p_spam(&self) -> f64 {
        if self.is_spam {
            self.confidence
        } else {
            1.0 - self.confidence
        }
    }
}

/// What the scorer stores in `Score::data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpamRow {
    pub malformed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub truth: bool,
    pub pred: Option<SpamAnswer>,
    pub baseline: Option<BaselinePrediction>,
    pub policy: Policy,
}

impl SpamRow {
    /// The predicted label; a malformed answer counts as "not spam" (the policy keeps it).
    pub fn predicted(&self) -> bool {
        self.pred.as_ref().is_some_and(|p| p.is_spam)
    }
    /// Spam probability used for ranking and calibration; 0 for a malformed answer.
    pub fn p_spam(&self) -> f64 {
        self.pred.as_ref().map_or(0.0, SpamAnswer::p_spam)
    }
    fn decision_input(&self) -> (bool, f64) {
        self.pred
            .as_ref()
            .map_or((false, 0.0), |p| (p.is_spam, p.confidence))
    }
}

/// Validates a parsed value against the answer schema.
pub fn parse_answer(answer: &str) -> Result<SpamAnswer, String> {
    let (v, _) = first_json(answer).ok_or("no JSON object in the answer")?;
    let obj = v.as_object().ok_or("the answer's JSON is not an object")?;
    let is_spam = obj
        .get("is_spam")
        .ok_or("missing field `is_spam`")?
        .as_bool()
        .ok_or("field `is_spam` is not a boolean")?;
    let confidence = obj
        .get("confidence")
        .ok_or("missing field `confidence`")?
        .as_f64()
        .ok_or("field `confidence` is not a number")?;
    if !(0.0..=1.0).contains(&confidence) {
        return Err(format!(
            "field `confidence` = {confidence} is outside 0..=1"
        ));
    }
    let reason = match obj.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("field `reason` is not a string".into()),
    };
    Ok(SpamAnswer {
        is_spam,
        confidence,
        reason,
    })
}

pub fn score(spec: &Value, answer: &str) -> Score {
    let spec = match serde_json::from_value::<SpamSpec>(spec.clone()) {
        Ok(s) if s.label <= 1 => s,
        Ok(s) => {
            return Score::scorer_error(
                "spam",
                1.0,
                format!("spec label {} is not 0 or 1", s.label),
            )
        }
        Err(e) => return Score::scorer_error("spam", 1.0, format!("invalid spam spec: {e}")),
    };
    let truth = spec.label == 1;
    let parsed = parse_answer(answer);
    let row = SpamRow {
        malformed: parsed.is_err(),
        error: parsed.as_ref().err().cloned(),
        truth,
        pred: parsed.as_ref().ok().cloned(),
        baseline: spec.baseline,
        policy: spec.policy.unwrap_or_default(),
    };
    let correct = !row.malformed && row.predicted() == truth;
    let detail = match &parsed {
        Err(e) => format!("malformed answer: {e}"),
        Ok(p) => format!(
            "predicted {} (confidence {:.2}), truth {}",
            if p.is_spam { "spam" } else { "not spam" },
            p.confidence,
            if truth { "spam" } else { "not spam" }
        ),
    };
    let data = serde_json::to_value(&row).unwrap_or(Value::Null);
    Score::scored("spam", if correct { 1.0 } else { 0.0 }, 1.0, detail).with_data(data)
}

/// The sweep as `"review/demote" → macro F1` (keys sort in grid order), compact enough to read in
/// a snapshot; the chosen point carries the full numbers.
fn sweep_table(table: &[crate::metric::policy::OperatingPoint]) -> BTreeMap<String, f64> {
    table
        .iter()
        .map(|p| {
            (
                format!("{:.2}/{:.2}", p.review_threshold, p.demote_threshold),
                p.macro_f1,
            )
        })
        .collect()
}

pub(crate) struct Spam;

impl Aggregator for Spam {
    type Row = SpamRow;
    const SLICES: &'static [(&'static str, &'static [&'static str])] =
        &[("image", &["present", "missing"])];

    fn compute(rows: &[&SpamRow]) -> Option<(BTreeMap<String, f64>, Value)> {
        measure(rows, true)
    }

    /// Everything but the threshold sweep: its chosen point is a selection over the rows, not a
    /// statistic of them, and it costs 231 policy evaluations per resample.
    fn metrics(rows: &[&SpamRow]) -> Option<BTreeMap<String, f64>> {
        measure(rows, false).map(|(m, _)| m)
    }
}

/// The spam metrics and details; the threshold sweep only when `with_sweep`.
fn measure(rows: &[&SpamRow], with_sweep: bool) -> Option<(BTreeMap<String, f64>, Value)> {
    let truth: Vec<bool> = rows.iter().map(|r| r.truth).collect();
    let pred: Vec<bool> = rows.iter().map(|r| r.predicted()).collect();
    let p: Vec<f64> = rows.iter().map(|r| r.p_spam()).collect();
    let b = binary(&truth, &pred)?;
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("accuracy", b.accuracy),
        ("precision", b.precision),
        ("recall", b.recall),
        ("f1", b.f1),
        ("macro_f1", b.macro_f1),
        ("micro_f1", b.micro_f1),
    ] {
        m.insert(k.to_owned(), v);
    }
    let malformed = rows.iter().filter(|r| r.malformed).count();
    m.insert(
        "malformed_rate".into(),
        malformed as f64 / rows.len() as f64,
    );
    let auprc = average_precision(&truth, &p)?;
    m.insert("auprc".into(), auprc);
    let cal = calibration(&truth, &p, ECE_BINS)?;
    m.insert("ece".into(), cal.ece);

    let decisions: Vec<(bool, f64)> = rows.iter().map(|r| r.decision_input()).collect();
    let policy = rows[0].policy;
    let configured = evaluate(
        &truth,
        &decisions,
        policy.review_threshold,
        policy.demote_threshold,
    )?;
    m.insert("policy.macro_f1".into(), configured.macro_f1);
    m.insert("policy.review_rate".into(), configured.review_rate);
    m.insert("policy.demote_rate".into(), configured.demote_rate);
    let mut details = json!({
        "confusion": b.confusion,
        "reliability_bins": cal.bins,
        "policy": configured,
    });
    if with_sweep {
        let sw = sweep(&truth, &decisions, &grid(SWEEP_STEPS))?;
        m.insert("sweep.macro_f1".into(), sw.best.macro_f1);
        m.insert("sweep.review_threshold".into(), sw.best.review_threshold);
        m.insert("sweep.demote_threshold".into(), sw.best.demote_threshold);
        details["sweep"] = json!({ "chosen": sw.best, "macro_f1": sweep_table(&sw.table) });
    }
    let base: Option<Vec<BaselinePrediction>> = rows.iter().map(|r| r.baseline).collect();
    if let Some(base) = base {
        let bp: Vec<bool> = base.iter().map(|x| x.is_spam).collect();
        let bs: Vec<f64> = base.iter().map(|x| x.p_spam).collect();
        let bb = binary(&truth, &bp)?;
        m.insert("baseline.accuracy".into(), bb.accuracy);
        m.insert("baseline.f1".into(), bb.f1);
        m.insert("baseline.macro_f1".into(), bb.macro_f1);
        m.insert("baseline.auprc".into(), average_precision(&truth, &bs)?);
        let b_auprc = average_precision(&truth, &bs)?;
        m.insert("uplift.macro_f1".into(), b.macro_f1 - bb.macro_f1);
        m.insert("uplift.accuracy".into(), b.accuracy - bb.accuracy);
        m.insert("uplift.auprc".into(), auprc - b_auprc);
        details["baseline_confusion"] = serde_json::to_value(&bb.confusion).unwrap_or(Value::Null);
        // The model and the baseline answered the same rows: the exact McNemar test on
        // their right/wrong pairs.
        let mut pairs = PairCounts::default();
        for (r, q) in rows.iter().zip(&bp) {
            // Right as the case's score counts it: a malformed answer is never right.
            let model_right = !r.malformed && r.predicted() == r.truth;
            match (*q == r.truth, model_right) {
                (true, true) => pairs.both_pass += 1,
                (false, true) => pairs.fixed += 1,
                (true, false) => pairs.broken += 1,
                (false, false) => pairs.both_fail += 1,
            }
        }
        details["baseline_pairs"] = json!({
            "both_right": pairs.both_pass,
            "model_only_right": pairs.fixed,
            "baseline_only_right": pairs.broken,
            "both_wrong": pairs.both_fail,
            "mcnemar_p": mcnemar_exact(pairs.fixed, pairs.broken),
        });
    }
    Some((m, details))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn scores_and_flags_malformed() {
        let spec = json!({"label": 1});
        let s = score(
            &spec,
            "```json\n{\"is_spam\": true, \"confidence\": 0.8, \"reason\": \"hashtags\"}\n```",
        );
        assert_eq!(s.value, Some(1.0));
        assert!(s.passed);
        let bad = score(&spec, "It is spam, 90% sure.");
        assert_eq!(bad.value, Some(0.0));
        assert_eq!(bad.data["malformed"], json!(true));
        let out_of_range = score(&spec, r#"{"is_spam": true, "confidence": 1.5}"#);
        assert_eq!(out_of_range.data["malformed"], json!(true));
        let bad_spec = score(&json!({"label": 3}), "{}");
        assert_eq!(bad_spec.status, crate::score::ScoreStatus::ScorerError);
    }

    proptest! {
        #[test]
        fn any_text_scores_without_panic(answer in "\\PC{0,100}", label in 0u8..2) {
            let s = score(&json!({"label": label}), &answer);
            prop_assert!(matches!(s.value, Some(v) if v == 0.0 || v == 1.0));
            prop_assert!(s.data["malformed"].is_boolean());
        }

        #[test]
        fn valid_answers_parse(is_spam in any::<bool>(), c in 0.0f64..=1.0, reason in "[a-z ]{0,20}") {
            let text = format!("Answer: {}", json!({"is_spam": is_spam, "confidence": c, "reason": reason}));
            let a = parse_answer(&text).unwrap();
            prop_assert_eq!(a.is_spam, is_spam);
            prop_assert!((a.confidence - c).abs() < 1e-12, "serde_json parses floats to within an ulp");
        }
    }
}
