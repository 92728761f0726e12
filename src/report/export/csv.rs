//! `predictions.csv`: one row per case with its suite, name, category, slices, status, the
//! answer, the task's parsed fields, every score and pass flag, and the spam policy's decision.
//! Quoting follows RFC 4180 (a field with a comma, quote or line break is quoted, quotes doubled).

use std::collections::BTreeSet;

use serde_json::Value;

use crate::metric::policy::{decide, Decision};
use crate::report::html::{HtmlMeta, Status};
use crate::report::Report;
use crate::task::spam::SpamRow;
use crate::verdict::Verdict;

/// One CSV field, quoted when it must be.
pub fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(String::new, |v| format!("{v}"))
}

/// The spam fields of a verdict: label, predicted, confidence, reason, decision.
fn spam_fields(v: &Verdict) -> [String; 5] {
    let row = v
        .scores
        .iter()
        .find(|s| s.scorer == "spam" && s.value.is_some())
        .and_then(|s| serde_json::from_value::<SpamRow>(s.data.clone()).ok());
    let Some(row) = row else {
        return Default::default();
    };
    let decision = match &row.pred {
        Some(p) => decide(
            p.is_spam,
            p.confidence,
            row.policy.review_threshold,
            row.policy.demote_threshold,
        ),
        None => Decision::Keep,
    };
    [
        u8::from(row.truth).to_string(),
        row.pred
            .as_ref()
            .map_or_else(String::new, |p| u8::from(p.is_spam).to_string()),
        num(row.pred.as_ref().map(|p| p.confidence)),
        row.pred
            .as_ref()
            .map_or_else(String::new, |p| p.reason.clone()),
        serde_json::to_value(decision)
            .ok()
            .and_then(|d| d.as_str().map(str::to_owned))
            .unwrap_or_default(),
    ]
}

/// The parsed answer of the case's task scores, as compact JSON (`""` when none).
fn parsed(v: &Verdict) -> String {
    let parts: Vec<String> = v
        .scores
        .iter()
        .filter(|s| crate::task::TASKS.contains(&s.scorer.as_str()))
        .filter_map(|s| {
            let p = s.data.get("pred").filter(|p| !p.is_null())?;
            Some(serde_json::to_string(p).unwrap_or_default())
        })
        .collect();
    parts.join(" ")
}

fn slices(meta: &HtmlMeta, r: &Report, name: &str) -> String {
    let Some(info) = meta.cases.get(name) else {
        return String::new();
    };
    let mut out = vec![format!(
        "image={}",
        if info.images.is_empty() {
            "missing"
        } else {
            "present"
        }
    )];
    for f in r.slices.keys().filter(|f| f.as_str() != "image") {
        out.push(format!(
            "{f}={}",
            crate::metric::slice::key_of(info.metadata.get(f))
        ));
    }
    out.join(";")
}

/// The CSV text for `reports`.
pub fn predictions(reports: &[Report], meta: &HtmlMeta) -> String {
    let scorers: BTreeSet<&str> = reports
        .iter()
        .flat_map(|r| &r.verdicts)
        .flat_map(|v| &v.scores)
        .map(|s| s.scorer.as_str())
        .collect();
    let mut header: Vec<String> = [
        "suite",
        "name",
        "category",
        "slices",
        "status",
        "passed",
        "label",
        "is_spam",
        "confidence",
        "reason",
        "decision",
        "parsed",
        "answer",
        "model_error",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for s in &scorers {
        header.push(format!("score.{s}"));
        header.push(format!("pass.{s}"));
    }
    let mut out = header
        .iter()
        .map(|h| field(h))
        .collect::<Vec<_>>()
        .join(",");
    out.push('\n');
    for r in reports {
        for v in &r.verdicts {
            let st = Status::of(v, meta.known_failures.contains(&v.name));
            let mut row = vec![
                r.suite.clone(),
                v.name.clone(),
                v.category.clone(),
                slices(meta, r, &v.name),
                st.label().to_owned(),
                v.passed.to_string(),
            ];
            row.extend(spam_fields(v));
            row.push(parsed(v));
            row.push(
                v.answer
                    .as_ref()
                    .map_or_else(String::new, |a| a.text.clone()),
            );
            row.push(v.model_error.clone().unwrap_or_default());
            for s in &scorers {
                match v.scores.iter().find(|x| x.scorer == *s) {
                    Some(x) => {
                        row.push(num(x.value));
                        row.push(x.passed.to_string());
                    }
                    None => row.extend([String::new(), String::new()]),
                }
            }
            out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
    }
    out
}

/// A report's metrics without its verdicts: what `metrics.json` holds per suite.
pub fn metrics(r: &Report) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.remove("verdicts");
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\"\nbye"), "\"say \"\"hi\"\"\nbye\"");
    }
}
