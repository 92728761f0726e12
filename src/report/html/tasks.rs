//! Each task's section of a suite: its metrics (with 95% Wilson intervals where the metric is a
//! proportion with a known denominator) and its plots, read from `Report::tasks` (`{metrics,
//! details}`, as `task::aggregate` writes them) and, for per-case distributions, the verdicts.

use std::fmt::Write;

use serde_json::Value;

use super::cases::anchor;
use super::escape::escape;
use super::svg::{self, Bar, Bin};
use super::HtmlMeta;
use crate::report::aggregate::wilson95;
use crate::report::Report;

/// The metric each task's slice bars show.
fn headline(task: &str) -> &'static str {
    match task {
        "spam" => "macro_f1",
        "deals" => "f1",
        "price" => "smape_score",
        "labels" => "scene_accuracy",
        _ => "n",
    }
}

fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

/// `(successes, trials)` behind a proportion metric, where the report lets us know them.
fn counts_of(task: &str, name: &str, t: &Value) -> Option<(usize, usize)> {
    let n = num(t, "/metrics/n")? as usize;
    let whole = |m: f64| Some(((m * n as f64).round() as usize, n));
    let m = num(t, &format!("/metrics/{}", name.replace('/', "~1")))?;
    match (task, name) {
        (
            _,
            "accuracy" | "malformed_rate" | "parsed_rate" | "scene_accuracy" | "parse_failure_rate",
        )
        | ("spam", "policy.review_rate" | "policy.demote_rate") => whole(m),
        ("spam", "precision" | "recall") => {
            let c = t.pointer("/details/confusion/counts")?;
            let cell = |i: usize, j: usize| c.get(i)?.get(j)?.as_u64().map(|x| x as usize);
            let tp = cell(1, 1)?;
            let denom = if name == "precision" {
                tp + cell(0, 1)?
            } else {
                tp + cell(1, 0)?
            };
            (denom > 0).then_some((tp, denom))
        }
        _ => None,
    }
}

fn metrics_table(out: &mut String, task: &str, t: &Value) {
    let Some(m) = t.get("metrics").and_then(Value::as_object) else {
        return;
    };
    out.push_str(
        r#"<table class="metrics"><tr><th>metric</th><th>value</th><th>95% interval</th></tr>"#,
    );
    for (k, v) in m {
        let Some(x) = v.as_f64() else { continue };
        let ci = counts_of(task, k, t).map_or_else(String::new, |(s, n)| {
            let (lo, hi) = wilson95(s, n);
            format!("[{lo:.3}, {hi:.3}] ({s}/{n})")
        });
        let value = if x.fract() == 0.0 && x.abs() < 1e9 {
            format!("{x}")
        } else {
            format!("{x:.4}")
        };
        let _ = write!(
            out,
            r#"<tr><td><code>{task}.{}</code></td><td class="num">{value}</td><td class="num">{ci}</td></tr>"#,
            escape(k)
        );
    }
    out.push_str("</table>");
}

fn confusion_from(
    title: &str,
    v: Option<&Value>,
    rename: impl Fn(&str) -> String,
) -> Option<String> {
    let v = v?;
    let labels: Vec<String> = v
        .get("labels")?
        .as_array()?
        .iter()
        .map(|l| rename(l.as_str().unwrap_or("?")))
        .collect();
    let counts: Vec<Vec<u64>> = serde_json::from_value(v.get("counts")?.clone()).ok()?;
    Some(svg::confusion(title, &labels, &counts))
}

fn spam_label(l: &str) -> String {
    match l {
        "0" => "not spam".into(),
        "1" => "spam".into(),
        other => other.into(),
    }
}

fn spam_plots(out: &mut String, t: &Value) {
    let d = &t["details"];
    if let Some(bins) = d.get("reliability_bins").and_then(Value::as_array) {
        let bins: Vec<Bin> = bins
            .iter()
            .filter_map(|b| {
                Some(Bin {
                    lo: b.get("lo")?.as_f64()?,
                    hi: b.get("hi")?.as_f64()?,
                    count: b.get("count")?.as_u64()? as usize,
                    mean_prob: b.get("mean_prob")?.as_f64()?,
                    frac_pos: b.get("frac_pos")?.as_f64()?,
                })
            })
            .collect();
        out.push_str(&svg::reliability(
            &bins,
            num(t, "/metrics/ece").unwrap_or(f64::NAN),
        ));
    }
    if let Some(table) = d.pointer("/sweep/macro_f1").and_then(Value::as_object) {
        let cells: Vec<(f64, f64, f64)> = table
            .iter()
            .filter_map(|(k, v)| {
                let (r, dm) = k.split_once('/')?;
                Some((r.parse().ok()?, dm.parse().ok()?, v.as_f64()?))
            })
            .collect();
        let chosen =
            num(d, "/sweep/chosen/review_threshold").zip(num(d, "/sweep/chosen/demote_threshold"));
        out.push_str(&svg::sweep_heatmap(
            &cells,
            chosen,
            crate::task::spam::SWEEP_STEPS,
        ));
    }
    if let Some(s) = confusion_from("Confusion: model", d.get("confusion"), spam_label) {
        out.push_str(&s);
    }
    if let Some(s) = confusion_from(
        "Confusion: TF-IDF baseline",
        d.get("baseline_confusion"),
        spam_label,
    ) {
        out.push_str(&s);
    }
}

fn policy_table(out: &mut String, t: &Value) {
    let d = &t["details"];
    let rows = [
        ("configured policy", d.get("policy")),
        ("sweep's chosen point", d.pointer("/sweep/chosen")),
    ];
    if rows.iter().all(|r| r.1.is_none()) {
        return;
    }
    out.push_str(r#"<table class="metrics"><tr><th>operating point</th><th>review</th><th>demote</th><th>macro F1</th><th>precision</th><th>recall</th><th>review rate</th><th>demote rate</th><th>demote precision</th></tr>"#);
    for (name, p) in rows {
        let Some(p) = p else { continue };
        let _ = write!(out, "<tr><td>{name}</td>");
        for k in [
            "review_threshold",
            "demote_threshold",
            "macro_f1",
            "precision",
            "recall",
            "review_rate",
            "demote_rate",
            "demote_precision",
        ] {
            let _ = write!(
                out,
                r#"<td class="num">{}</td>"#,
                p.get(k)
                    .and_then(Value::as_f64)
                    .map_or("-".into(), |x| format!("{x:.3}"))
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}

fn slice_bars(out: &mut String, task: &str, t: &Value) {
    let Some(slices) = t.pointer("/details/slices").and_then(Value::as_object) else {
        return;
    };
    let metric = headline(task);
    for (field, groups) in slices {
        let Some(groups) = groups.as_object() else {
            continue;
        };
        let bars: Vec<Bar> = groups
            .iter()
            .map(|(g, v)| Bar {
                label: g.clone(),
                value: v
                    .pointer(&format!("/metrics/{metric}"))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0),
                ci: None,
                n: v.get("n").and_then(Value::as_u64).unwrap_or(0) as usize,
            })
            .collect();
        if bars.len() >= 2 || field == "image" {
            out.push_str(&svg::bars(&format!("{task} by {field}"), metric, &bars));
        }
    }
}

fn price_plots(out: &mut String, r: &Report) {
    let rows: Vec<(f64, f64)> = r
        .verdicts
        .iter()
        .flat_map(|v| &v.scores)
        .filter(|s| s.scorer == "price")
        .filter_map(|s| Some((s.data.get("smape")?.as_f64()?, s.threshold)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let values: Vec<f64> = rows.iter().map(|r| r.0).collect();
    let max_smape = (1.0 - rows[0].1) * 200.0;
    out.push_str(&svg::histogram(
        "SMAPE per case",
        "SMAPE % (200 = unparseable)",
        &values,
        (0.0, 200.0),
        20,
        Some((max_smape, &format!("pass <= {max_smape:.0}%"))),
    ));
}

fn labels_tables(out: &mut String, t: &Value) {
    if let Some(s) = confusion_from(
        "Scene confusion",
        t.pointer("/details/scene_confusion"),
        |l| l.strip_prefix("scene.").unwrap_or(l).to_owned(),
    ) {
        out.push_str(&s);
    }
}

fn attributes_table(out: &mut String, t: &Value) {
    let Some(attrs) = t.pointer("/details/attributes").and_then(Value::as_object) else {
        return;
    };
    if attrs.is_empty() {
        return;
    }
    out.push_str(r#"<table class="metrics"><tr><th>attribute</th><th>precision</th><th>recall</th><th>F1</th><th>support</th><th>rows</th></tr>"#);
    for (k, a) in attrs {
        let f = |n: &str| {
            a.get(n)
                .and_then(Value::as_f64)
                .map_or("-".into(), |x| format!("{x:.3}"))
        };
        let _ = write!(
            out,
            r#"<tr><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(k),
            f("precision"),
            f("recall"),
            f("f1"),
            a.get("support").and_then(Value::as_u64).unwrap_or(0),
            a.get("n").and_then(Value::as_u64).unwrap_or(0)
        );
    }
    out.push_str("</table>");
}

fn deals_pages(out: &mut String, r: &Report) {
    let pages: Vec<_> = r
        .verdicts
        .iter()
        .filter_map(|v| {
            v.scores
                .iter()
                .find(|s| s.scorer == "deals")
                .map(|s| (v, s))
        })
        .collect();
    if pages.is_empty() {
        return;
    }
    out.push_str(r#"<table class="metrics"><tr><th>page</th><th>truth</th><th>predicted</th><th>matched</th><th>price right</th><th>safe</th><th>F1</th></tr>"#);
    for (v, s) in pages {
        let c = |k: &str| {
            s.data
                .pointer(&format!("/counts/{k}"))
                .and_then(Value::as_u64)
                .unwrap_or(0)
        };
        let _ = write!(
            out,
            r##"<tr><td><a href="#{}">{}</a>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"##,
            anchor(&v.name),
            escape(&v.name),
            if s.data.get("malformed").and_then(Value::as_bool) == Some(true) {
                r#" <span class="badge fail">malformed</span>"#
            } else {
                ""
            },
            c("gt"),
            c("pred"),
            c("matched"),
            c("price_ok"),
            c("safe"),
            s.value.map_or("-".into(), |x| format!("{x:.3}"))
        );
    }
    out.push_str("</table><p class=\"note\">Each page's image with its truth and predicted boxes is in its case below.</p>");
}

pub(super) fn render(out: &mut String, r: &Report, _meta: &HtmlMeta) {
    for (task, t) in &r.tasks {
        let _ = write!(
            out,
            r#"<div class="task" data-task="{0}"><h3>Task <code>{0}</code></h3>"#,
            escape(task)
        );
        if let Some(e) = t.get("error").and_then(Value::as_str) {
            let _ = write!(
                out,
                r#"<p class="bad">task metrics could not be computed: {}</p></div>"#,
                escape(e)
            );
            continue;
        }
        out.push_str(r#"<div class="split"><div>"#);
        metrics_table(out, task, t);
        out.push_str("</div><div class=\"plots\">");
        match task.as_str() {
            "spam" => spam_plots(out, t),
            "labels" => labels_tables(out, t),
            "price" => price_plots(out, r),
            _ => {}
        }
        slice_bars(out, task, t);
        out.push_str("</div></div>");
        match task.as_str() {
            "spam" => policy_table(out, t),
            "labels" => attributes_table(out, t),
            "deals" => deals_pages(out, r),
            _ => {}
        }
        out.push_str("</div>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proportions_get_wilson_intervals_from_their_counts() {
        let t = json!({
            "metrics": {"n": 20.0, "accuracy": 0.85, "precision": 0.8, "recall": 0.888888, "f1": 0.84},
            "details": {"confusion": {"labels": ["0", "1"], "counts": [[9, 2], [1, 8]]}}
        });
        assert_eq!(counts_of("spam", "accuracy", &t), Some((17, 20)));
        assert_eq!(counts_of("spam", "precision", &t), Some((8, 10)));
        assert_eq!(counts_of("spam", "recall", &t), Some((8, 9)));
        assert_eq!(counts_of("spam", "f1", &t), None, "F1 is not a proportion");
        let mut out = String::new();
        metrics_table(&mut out, "spam", &t);
        let (lo, hi) = wilson95(17, 20);
        assert!(
            out.contains(&format!("[{lo:.3}, {hi:.3}] (17/20)")),
            "{out}"
        );
    }
}
