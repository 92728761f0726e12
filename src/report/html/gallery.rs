//! The seed 001 error gallery: for a spam suite, the most informative 3–4 true positives, true
//! negatives, false positives and false negatives, each with its image, description, label,
//! prediction, confidence, reason and the policy's decision.
//!
//! Not random: errors come most confident first (a confident mistake says most about what the
//! model learnt wrong); correct calls come first where the TF-IDF baseline was wrong (what the
//! fine-tune fixed, the seed's "revisit the old way's failures"), then least confident first (the
//! right calls nearest the decision boundary). Ties go by name, so the gallery is stable.

use std::fmt::Write;

use super::cases::{anchor, thumb};
use super::escape::escape;
use super::images::ImageStore;
use super::HtmlMeta;
use crate::metric::policy::{decide, Decision};
use crate::report::Report;
use crate::task::spam::SpamRow;
use crate::verdict::Verdict;

/// Cases shown per quadrant.
pub const PER_QUADRANT: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quadrant {
    TruePositive,
    TrueNegative,
    FalsePositive,
    FalseNegative,
}

impl Quadrant {
    pub const ALL: [Quadrant; 4] = [
        Quadrant::TruePositive,
        Quadrant::TrueNegative,
        Quadrant::FalsePositive,
        Quadrant::FalseNegative,
    ];
    fn of(row: &SpamRow) -> Self {
        match (row.truth, row.predicted()) {
            (true, true) => Quadrant::TruePositive,
            (false, false) => Quadrant::TrueNegative,
            (false, true) => Quadrant::FalsePositive,
            (true, false) => Quadrant::FalseNegative,
        }
    }
    fn title(self) -> &'static str {
        match self {
            Quadrant::TruePositive => "True positives: spam caught",
            Quadrant::TrueNegative => "True negatives: clean listings kept",
            Quadrant::FalsePositive => "False positives: clean listings flagged",
            Quadrant::FalseNegative => "False negatives: spam missed",
        }
    }
    fn is_error(self) -> bool {
        matches!(self, Quadrant::FalsePositive | Quadrant::FalseNegative)
    }
}

/// A gallery entry: the verdict and its spam row.
pub struct Pick<'a> {
    pub verdict: &'a Verdict,
    pub row: SpamRow,
}

fn confidence(row: &SpamRow) -> f64 {
    row.pred.as_ref().map_or(0.0, |p| p.confidence)
}

fn baseline_wrong(row: &SpamRow) -> bool {
    row.baseline.is_some_and(|b| b.is_spam != row.truth)
}

/// The gallery of a suite's verdicts: per quadrant, at most `per` picks in the order the module
/// doc gives. Verdicts without a scored spam score are left out.
pub fn select(verdicts: &[Verdict], per: usize) -> Vec<(Quadrant, Vec<Pick<'_>>)> {
    let rows: Vec<Pick> = verdicts
        .iter()
        .filter_map(|v| {
            let s = v
                .scores
                .iter()
                .find(|s| s.scorer == "spam" && s.value.is_some())?;
            let row = serde_json::from_value::<SpamRow>(s.data.clone()).ok()?;
            Some(Pick { verdict: v, row })
        })
        .collect();
    let mut by_q: Vec<(Quadrant, Vec<Pick>)> =
        Quadrant::ALL.iter().map(|q| (*q, Vec::new())).collect();
    for p in rows {
        let q = Quadrant::of(&p.row);
        if let Some(slot) = by_q.iter_mut().find(|(k, _)| *k == q) {
            slot.1.push(p);
        }
    }
    for (q, picks) in &mut by_q {
        let err = q.is_error();
        picks.sort_by(|a, b| {
            let by_name = a.verdict.name.cmp(&b.verdict.name);
            let (ca, cb) = (confidence(&a.row), confidence(&b.row));
            if err {
                cb.total_cmp(&ca).then(by_name)
            } else {
                let fixed = baseline_wrong(&b.row).cmp(&baseline_wrong(&a.row));
                fixed.then(ca.total_cmp(&cb)).then(by_name)
            }
        });
        picks.truncate(per);
    }
    by_q
}

/// The listing's description: the prompt's `Description:` paragraph, else the whole prompt.
fn description(prompt: &str) -> &str {
    match prompt.split_once("Description:") {
        Some((_, rest)) => rest.split("\n\n").next().unwrap_or(rest).trim(),
        None => prompt.trim(),
    }
}

fn decision_label(d: Decision) -> &'static str {
    match d {
        Decision::Demote => "demote",
        Decision::Review => "review",
        Decision::Keep => "keep",
    }
}

pub(super) fn render(out: &mut String, r: &Report, meta: &HtmlMeta, store: &ImageStore) {
    if !r.tasks.contains_key("spam") {
        return;
    }
    let gallery = select(&r.verdicts, PER_QUADRANT);
    out.push_str(r#"<div class="gallery"><h3>Gallery</h3><p class="note">Errors most confident first; correct calls first where the TF-IDF baseline was wrong, then least confident first.</p>"#);
    for (q, picks) in gallery {
        let _ = write!(
            out,
            r#"<h4>{} <small>({} shown)</small></h4><div class="tiles">"#,
            q.title(),
            picks.len()
        );
        if picks.is_empty() {
            out.push_str(r#"<p class="note">none</p>"#);
        }
        for p in picks {
            let info = meta.cases.get(&p.verdict.name);
            let row = &p.row;
            let _ = write!(
                out,
                r#"<div class="tile {}">"#,
                if q.is_error() { "err" } else { "ok" }
            );
            match info.and_then(|i| i.images.first()) {
                Some(src) => thumb(out, store, src),
                None => out.push_str(r#"<div class="noimg">no image (text only)</div>"#),
            }
            let (pred, conf, reason, decision) = match &row.pred {
                Some(a) => (
                    if a.is_spam { "spam" } else { "not spam" },
                    format!("{:.2}", a.confidence),
                    a.reason.as_str(),
                    decide(
                        a.is_spam,
                        a.confidence,
                        row.policy.review_threshold,
                        row.policy.demote_threshold,
                    ),
                ),
                None => (
                    "malformed",
                    "-".into(),
                    row.error.as_deref().unwrap_or(""),
                    Decision::Keep,
                ),
            };
            let _ = write!(
                out,
                r##"<dl><dt>description</dt><dd>{}</dd><dt>label</dt><dd>{}</dd><dt>prediction</dt><dd>{pred}</dd><dt>confidence</dt><dd>{conf}</dd><dt>reason</dt><dd>{}</dd><dt>decision</dt><dd><b>{}</b> <small>(review {:.2}, demote {:.2})</small></dd>"##,
                escape(info.map_or("", |i| description(&i.prompt))),
                if row.truth { "spam" } else { "not spam" },
                escape(reason),
                decision_label(decision),
                row.policy.review_threshold,
                row.policy.demote_threshold
            );
            if let Some(b) = row.baseline {
                let _ = write!(
                    out,
                    "<dt>baseline</dt><dd>{} (p {:.2}){}</dd>",
                    if b.is_spam { "spam" } else { "not spam" },
                    b.p_spam,
                    if b.is_spam != row.truth {
                        ", wrong"
                    } else {
                        ", right"
                    }
                );
            }
            let _ = write!(
                out,
                r##"</dl><a href="#{}"><code>{}</code></a></div>"##,
                anchor(&p.verdict.name),
                escape(&p.verdict.name)
            );
        }
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Answer;
    use serde_json::json;

    fn verdict(
        name: &str,
        truth: bool,
        answer: Option<(bool, f64)>,
        baseline_spam: bool,
    ) -> Verdict {
        let text = match answer {
            Some((s, c)) => json!({"is_spam": s, "confidence": c, "reason": "r"}).to_string(),
            None => "no idea".into(),
        };
        let spec = json!({"label": u8::from(truth), "baseline": {"is_spam": baseline_spam, "p_spam": 0.5}});
        let score = crate::task::spam::score(&spec, &text);
        Verdict {
            tags: Vec::new(),
            name: name.into(),
            category: "c".into(),
            passed: score.passed,
            answer: Some(Answer {
                text,
                prompt_tokens: 1,
                generated_tokens: 1,
                elapsed: Default::default(),
            }),
            model_error: None,
            scores: vec![score],
        }
    }

    #[test]
    fn errors_come_most_confident_first_and_fixes_lead_the_correct_calls() {
        let vs = vec![
            verdict("fp_low", false, Some((true, 0.55)), false),
            verdict("fp_high", false, Some((true, 0.97)), false),
            verdict("fn_malformed", true, None, true),
            verdict("fn_sure", true, Some((false, 0.9)), false),
            verdict("tp_sure", true, Some((true, 0.99)), true),
            verdict("tp_unsure", true, Some((true, 0.6)), true),
            verdict("tp_fixed", true, Some((true, 0.99)), false),
            verdict("tn_a", false, Some((false, 0.8)), false),
        ];
        let g = select(&vs, 4);
        let names = |q: Quadrant| -> Vec<&str> {
            g.iter()
                .find(|(k, _)| *k == q)
                .unwrap()
                .1
                .iter()
                .map(|p| p.verdict.name.as_str())
                .collect()
        };
        assert_eq!(names(Quadrant::FalsePositive), ["fp_high", "fp_low"]);
        assert_eq!(names(Quadrant::FalseNegative), ["fn_sure", "fn_malformed"]);
        assert_eq!(
            names(Quadrant::TruePositive),
            ["tp_fixed", "tp_unsure", "tp_sure"]
        );
        assert_eq!(names(Quadrant::TrueNegative), ["tn_a"]);
        assert_eq!(select(&vs, 1)[0].1.len(), 1);
        assert_eq!(
            description("Is it spam?\n\nDescription: Mug #ad\n\nNote: x"),
            "Mug #ad"
        );
    }
}
