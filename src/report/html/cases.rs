//! One case on the page: status, name, images (or the deals overlay), prompt, expected answer,
//! the model's answer, and every score with its threshold, detail, parsed fields and the judge's
//! reason and raw reply.

use std::fmt::Write;

use serde_json::Value;

use super::escape::escape;
use super::images::{Embedded, ImageStore};
use super::svg::{boxes_overlay, LabeledBox};
use super::{sort_score, CaseInfo, HtmlMeta, Status};
use crate::report::Report;
use crate::score::{Score, ScoreStatus};
use crate::verdict::Verdict;

/// The element id of a case's card.
pub fn anchor(name: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "c-{}",
        &crate::case::hex(&Sha256::digest(name.as_bytes()))[..16]
    )
}

/// A thumbnail `<img>` (full image on click), or the reason the image is missing.
pub fn thumb(out: &mut String, store: &ImageStore, src: &crate::case::ImageSource) {
    match store.get(src) {
        Some(Ok(e)) => img(out, e),
        Some(Err(why)) => {
            let _ = write!(
                out,
                r#"<div class="noimg" title="{0}">image could not be embedded: {0}</div>"#,
                escape(why)
            );
        }
        None => out.push_str(r#"<div class="noimg">image not embedded</div>"#),
    }
}

/// An `<img>` whose data the page's script fills in from `data-src` when it nears the viewport.
fn img(out: &mut String, e: &Embedded) {
    let full = e
        .full
        .map(|i| format!(r#" data-full="full-{i}""#))
        .unwrap_or_default();
    let _ = write!(
        out,
        r#"<img class="thumb" loading="lazy" decoding="async" width="{}" height="{}" alt="case image {}x{}"{full} data-src="{}">"#,
        e.thumb_width,
        e.thumb_height,
        e.width,
        e.height,
        e.thumb_id()
    );
}

fn pre(out: &mut String, label: &str, class: &str, text: &str) {
    let _ = write!(
        out,
        r#"<div class="k">{label}</div><pre class="{class}">{}</pre>"#,
        escape(text)
    );
}

fn mark(s: &Score) -> (&'static str, &'static str) {
    match (s.status, s.passed) {
        (ScoreStatus::ScorerError, _) => ("judge-error", "error"),
        (ScoreStatus::Skipped, _) => ("skip", "skipped"),
        (_, true) => ("pass", "ok"),
        (_, false) => ("fail", "FAIL"),
    }
}

/// Parsed fields, malformed-answer errors and judge exchanges of a score's data.
fn score_extras(out: &mut String, s: &Score) {
    let d = &s.data;
    if let Some(e) = d.get("error").and_then(Value::as_str) {
        let _ = write!(
            out,
            r#"<div class="extra bad">parse error: {}</div>"#,
            escape(e)
        );
    }
    if let Some(p) = d.get("pred").filter(|p| !p.is_null()) {
        let text = serde_json::to_string(p).unwrap_or_default();
        let _ = write!(
            out,
            r#"<div class="extra"><span class="k">parsed</span> <code>{}</code></div>"#,
            escape(&crate::score::text::shorten(&text, 600))
        );
    }
    if let Some(r) = d.get("reason").and_then(Value::as_str) {
        let _ = write!(
            out,
            r#"<div class="extra"><span class="k">judge reason</span> {}</div>"#,
            escape(r)
        );
    }
    if let Some(reply) = d
        .get("exchange")
        .and_then(Value::as_array)
        .and_then(|x| x.last())
        .and_then(|x| x.get("reply"))
        .and_then(Value::as_str)
    {
        let _ = write!(
            out,
            r#"<details class="extra"><summary>judge raw reply</summary><pre>{}</pre></details>"#,
            escape(reply)
        );
    }
}

fn scores(out: &mut String, v: &Verdict) {
    if v.scores.is_empty() {
        return;
    }
    out.push_str(r#"<table class="scores"><tr><th>scorer</th><th>value</th><th>threshold</th><th></th><th>detail</th></tr>"#);
    for s in &v.scores {
        let (class, label) = mark(s);
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td class="num">{}</td><td class="num">{:.3}</td><td><span class="badge {class}">{label}</span></td><td>{}"#,
            escape(&s.scorer),
            s.value.map_or_else(|| "-".into(), |x| format!("{x:.3}")),
            s.threshold,
            escape(&s.detail)
        );
        score_extras(out, s);
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
}

fn boxes(v: &Value) -> Vec<[f64; 4]> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    d.get("bbox")
                        .and_then(|b| serde_json::from_value::<[f64; 4]>(b.clone()).ok())
                        .unwrap_or([f64::NAN; 4])
                })
                .collect()
        })
        .unwrap_or_default()
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let name = d.get("name").and_then(Value::as_str).unwrap_or("?");
                    match d.get("price").and_then(Value::as_f64) {
                        Some(p) => format!("{name} {p}"),
                        None => name.to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The deals task's page: ground-truth and predicted boxes over the image, where both exist.
pub fn deals_overlay(info: &CaseInfo, v: &Verdict, store: &ImageStore) -> Option<String> {
    let spec = info.tasks.get("deals")?;
    let score = v.scores.iter().find(|s| s.scorer == "deals")?;
    let Some(Ok(e)) = info.images.first().and_then(|s| store.get(s)) else {
        return None;
    };
    let (gt, pr) = (&spec["deals"], &score.data["pred"]);
    let matched: Vec<(usize, usize)> = score.data["matches"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| Some((m.get(0)?.as_u64()? as usize, m.get(1)?.as_u64()? as usize)))
                .collect()
        })
        .unwrap_or_default();
    let make = |list: &Value, is_gt: bool| -> Vec<LabeledBox> {
        boxes(list)
            .into_iter()
            .zip(names(list))
            .enumerate()
            .filter(|(_, (b, _))| b.iter().all(|x| x.is_finite()))
            .map(|(i, (bbox, label))| LabeledBox {
                bbox,
                label,
                matched: matched
                    .iter()
                    .any(|&(g, p)| if is_gt { g == i } else { p == i }),
            })
            .collect()
    };
    let (truth, pred) = (make(gt, true), make(pr, false));
    if truth.is_empty() && pred.is_empty() {
        return None;
    }
    let svg = boxes_overlay(
        "deal boxes: truth solid, predicted dashed, unmatched in red",
        None,
        (e.width as f64, e.height as f64),
        &truth,
        &pred,
    );
    Some(format!(
        r#"<div class="overlay" style="--ar:{:.4}"><img class="page" decoding="async" width="{}" height="{}" alt="page image {}x{}" data-src="{}">{svg}</div>"#,
        e.width as f64 / e.height.max(1) as f64,
        e.width,
        e.height,
        e.width,
        e.height,
        e.best_id()
    ))
}

/// What one case card shows beyond the page-wide cases and images.
pub(super) struct Row<'a> {
    pub report: &'a Report,
    pub verdict: &'a Verdict,
    pub status: Status,
    /// `field=value` slice keys, for the slice filter.
    pub slices: &'a [String],
    /// The suite's shared system prompt, left out of the card.
    pub common_system: Option<&'a str>,
}

pub(super) fn card(out: &mut String, row: &Row<'_>, meta: &HtmlMeta, store: &ImageStore) {
    let Row {
        report: r,
        verdict: v,
        status: st,
        slices,
        common_system,
    } = *row;
    let info = meta.cases.get(&v.name);
    let mut slice_attr = String::from("|");
    for s in slices {
        slice_attr.push_str(s);
        slice_attr.push('|');
    }
    let score = sort_score(v);
    let _ = write!(
        out,
        r#"<article class="case {key}" id="{}" data-status="{key}" data-cat="{}" data-slices="{}" data-score="{score:.4}"><header><span class="badge {key}">{}</span> <code class="name">{}</code>"#,
        anchor(&v.name),
        escape(&format!("{}::{}", r.suite, v.category)),
        escape(&slice_attr),
        st.label(),
        escape(&v.name),
        key = st.key()
    );
    if (0.0..=1.0).contains(&score) {
        let _ = write!(out, r#"<span class="score">min score {score:.3}</span>"#);
    }
    if let Some(a) = v
        .answer
        .as_ref()
        .filter(|a| a.prompt_tokens + a.generated_tokens > 0)
    {
        let _ = write!(
            out,
            r#"<span class="tokens">{} + {} tokens</span>"#,
            a.prompt_tokens, a.generated_tokens
        );
    }
    out.push_str("</header><div class=\"body\">");
    if let Some(info) = info {
        let overlay = deals_overlay(info, v, store);
        if overlay.is_some() || !info.images.is_empty() {
            out.push_str(r#"<div class="imgs">"#);
            match overlay {
                Some(svg) => out.push_str(&svg),
                None => info.images.iter().for_each(|s| thumb(out, store, s)),
            }
            out.push_str("</div>");
        }
    }
    out.push_str(r#"<div class="text">"#);
    match info {
        Some(info) => {
            if let Some(s) = info.system.as_deref().filter(|s| Some(*s) != common_system) {
                let _ = write!(out, r#"<details><summary>system prompt</summary><pre>{}</pre></details>"#, escape(s));
            }
            pre(out, "prompt", "prompt", &info.prompt);
            if let Some(e) = &info.expected {
                pre(out, "expected", "expected", e);
            }
        }
        None => out.push_str(r#"<p class="note">prompt and images not available (the case was not found in the project)</p>"#),
    }
    match (&v.answer, &v.model_error) {
        (_, Some(e)) => pre(out, "model error", "error", e),
        (Some(a), None) => pre(out, "answer", "answer", &a.text),
        (None, None) => {}
    }
    scores(out, v);
    out.push_str("</div></div></article>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Answer;
    use serde_json::json;

    #[test]
    fn a_card_escapes_the_answer_and_lists_every_score() {
        let v = Verdict {
            tags: Vec::new(),
            name: "s::c::<1>".into(),
            category: "c".into(),
            passed: false,
            answer: Some(Answer {
                text: "<img src=x onerror=alert(1)>".into(),
                prompt_tokens: 3,
                generated_tokens: 4,
                elapsed: Default::default(),
            }),
            model_error: None,
            scores: vec![
                Score::scored("spam", 0.0, 1.0, "predicted spam".into()).with_data(
                    json!({"pred": {"is_spam": true, "confidence": 0.9, "reason": "#ad"}}),
                ),
                Score::scorer_error("judge.correctness", 0.5, "judge error: timeout".into())
                    .with_data(json!({"exchange": [{"reply": "not json"}]})),
            ],
        };
        let r: Report = serde_json::from_value(json!({
            "suite": "s", "model": "m", "overall": {"cases": 1, "passed": 0, "pass_rate": 0.0, "pass_rate_ci95": [0.0, 0.79]},
            "failed": 1, "model_errors": 0, "scorer_errors": 1, "scorers": {}, "categories": {}, "slices": {},
            "tasks": {}, "gates": [], "verdicts": []
        })).unwrap();
        let mut out = String::new();
        let st = Status::of(&v, false);
        assert_eq!(st, Status::JudgeError);
        let slices = ["image=missing".to_owned()];
        let row = Row {
            report: &r,
            verdict: &v,
            status: st,
            slices: &slices,
            common_system: None,
        };
        card(&mut out, &row, &HtmlMeta::default(), &ImageStore::default());
        assert!(!out.contains("<img src=x"), "{out}");
        assert!(out.contains("&lt;img src=x onerror=alert(1)&gt;"));
        assert!(out.contains(r#"data-slices="|image=missing|""#));
        assert!(out.contains(r#"data-score="0.0000""#));
        assert!(out.contains("judge raw reply") && out.contains("not json"));
        assert!(out.contains("&quot;reason&quot;:&quot;#ad&quot;"));
        assert_eq!(
            out.matches("<tr>").count(),
            3,
            "a header and one row per score"
        );
    }
}
