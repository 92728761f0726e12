//! `vlmtest compare --format html`: the comparison as one self-contained page in the report's
//! look — per suite the metric table (A, B, B − A with its 95% interval and p-value, better or
//! WORSE), then the fixed, broken and both-failing cases with both answers side by side, behind
//! filter buttons. No network request: inline style and script only (the report's CSP).

use std::fmt::Write;

use super::render::{header, metric_rows};
use super::{Change, Comparison, SuiteComparison};
use crate::report::html::escape::escape;

const SCRIPT: &str = "document.querySelectorAll('button[data-show]').forEach(function(b){b.onclick=function(){var k=b.getAttribute('data-show');document.querySelectorAll('tr.chg').forEach(function(r){r.hidden=!(k==='all'||r.classList.contains(k));});document.querySelectorAll('button[data-show]').forEach(function(x){x.classList.toggle('on',x===b);});};});";

/// The whole page.
pub fn render(c: &Comparison) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="{}"><title>vlmtest compare</title><style>{}button.on{{background:var(--accbg)}}tr.fixed td:first-child{{border-left:3px solid var(--pass)}}tr.broken td:first-child{{border-left:3px solid var(--fail)}}</style></head><body><header class="top"><h1>vlmtest compare</h1><div class="meta"><span>A <b>{}</b></span><span>B <b>{}</b></span></div></header><main>"#,
        crate::report::html::CSP,
        crate::report::html::style(),
        escape(&c.sides.a),
        escape(&c.sides.b)
    );
    for s in &c.suites {
        suite(&mut out, s);
    }
    if !c.unmatched_suites.is_empty() {
        let _ = write!(
            out,
            "<p class=\"note\">suites on one side only (not compared): {}</p>",
            escape(&c.unmatched_suites.join(", "))
        );
    }
    let _ = writeln!(out, "</main><script>{SCRIPT}</script></body></html>");
    out
}

fn suite(out: &mut String, s: &SuiteComparison) {
    let [h1, h2] = header(s);
    let regressed = s.metrics.iter().any(|m| m.change == Change::Regressed);
    let _ = write!(
        out,
        r#"<section class="suite"><h2>{} <span class="badge {}">{}</span></h2><p class="note">{}</p>"#,
        escape(&h1),
        if regressed { "fail" } else { "pass" },
        if regressed {
            "significant regression"
        } else {
            "no significant regression"
        },
        escape(&h2)
    );
    out.push_str("<table>");
    for (i, row) in metric_rows(s).iter().enumerate() {
        out.push_str("<tr>");
        for (j, cell) in row.iter().enumerate() {
            let (tag, class) = match (i, j) {
                (0, _) => ("th", ""),
                (_, 0) => ("td", ""),
                (_, 6) if cell == "WORSE" => ("td", " class=\"bad\""),
                _ => ("td", " class=\"num\""),
            };
            let _ = write!(out, "<{tag}{class}>{}</{tag}>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
    let _ = write!(
        out,
        r#"<p><button data-show="all" class="on">all changes</button> <button data-show="broken">broken ({})</button> <button data-show="fixed">fixed ({})</button> <button data-show="both">both failing ({})</button></p>"#,
        s.broken.len(),
        s.fixed.len(),
        s.both_failing.len()
    );
    out.push_str("<table><tr><th>case</th><th>change</th><th>why</th><th>A answered</th><th>B answered</th></tr>");
    let answer = |a: &Option<String>| {
        a.as_deref().map_or_else(
            || "<i>(no answer)</i>".to_owned(),
            |t| format!("<pre>{}</pre>", escape(t)),
        )
    };
    for (kind, label, list) in [
        ("broken", "pass → FAIL", &s.broken),
        ("fixed", "fail → pass", &s.fixed),
    ] {
        for ch in list {
            let _ = write!(
                out,
                r#"<tr class="chg {kind}"><td><code>{}</code></td><td>{label}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
                escape(&ch.name),
                escape(&ch.reason),
                answer(&ch.a_answer),
                answer(&ch.b_answer)
            );
        }
    }
    for name in &s.both_failing {
        let _ = write!(
            out,
            r#"<tr class="chg both"><td><code>{}</code></td><td>fails on both</td><td></td><td></td><td></td></tr>"#,
            escape(name)
        );
    }
    out.push_str("</table>");
    for (label, names) in [("only in A", &s.only_a), ("only in B", &s.only_b)] {
        if !names.is_empty() {
            let _ = write!(
                out,
                "<p class=\"note\">{label} (not compared): {}</p>",
                escape(&names.join(", "))
            );
        }
    }
    out.push_str("</section>");
}
