//! The page's frame: head with the inline style, the run header, the case list with its filter
//! bar, the full images and the inline script.

use std::collections::BTreeSet;
use std::fmt::Write;

use super::escape::escape;
use super::images::ImageStore;
use super::{cases, HtmlMeta, Status};
use crate::report::Report;

pub(super) const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");
/// The page forbids itself every network request: only inline style and script and `data:`
/// images load, whatever a case's text holds.
pub const CSP: &str =
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'";

pub(super) fn head(out: &mut String, reports: &[Report], meta: &HtmlMeta) {
    let title = meta.title.as_deref().unwrap_or("vlmtest report");
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="{CSP}"><meta name="generator" content="vlmtest {}"><title>{}</title><style>{CSS}</style></head><body><header class="top"><h1>{}</h1><div class="meta">"#,
        env!("CARGO_PKG_VERSION"),
        escape(title),
        escape(title)
    );
    let mut models: Vec<&str> = reports.iter().map(|r| r.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let model = meta.model.clone().unwrap_or_else(|| models.join(", "));
    let gates: usize = reports.iter().map(|r| r.gates.len()).sum();
    let failed: Vec<String> = reports
        .iter()
        .flat_map(|r| {
            r.gates
                .iter()
                .filter(|g| !g.passed)
                .map(move |g| format!("{}::{}", r.suite, g.name))
        })
        .collect();
    let outcome = if gates == 0 {
        "no gates".to_owned()
    } else if failed.is_empty() {
        format!("all {gates} passed")
    } else {
        format!("{} of {gates} FAILED: {}", failed.len(), failed.join(", "))
    };
    let rows = [
        ("run", meta.run_id.clone()),
        ("model", Some(model)),
        ("adapter", meta.adapter.clone()),
        ("date", meta.date.clone()),
        ("commit", meta.git_commit.clone()),
        ("suites", Some(reports.len().to_string())),
        (
            "cases",
            Some(
                reports
                    .iter()
                    .map(|r| r.verdicts.len())
                    .sum::<usize>()
                    .to_string(),
            ),
        ),
        ("gates", Some(outcome)),
    ];
    for (k, v) in rows {
        if let Some(v) = v {
            let class = if k == "gates" && !failed.is_empty() {
                " class=\"bad\""
            } else {
                ""
            };
            let _ = write!(out, "<span{class}>{k} <b>{}</b></span>", escape(&v));
        }
    }
    out.push_str("</div><nav>");
    for (i, r) in reports.iter().enumerate() {
        let state = if r.gates.is_empty() {
            "none"
        } else if r.gates_passed() {
            "pass"
        } else {
            "fail"
        };
        let _ = write!(
            out,
            r##"<a class="{state}" href="#suite-{i}">{} <small>{}/{}</small></a>"##,
            escape(&r.suite),
            r.overall.passed,
            r.overall.cases
        );
    }
    out.push_str(r##"<a href="#cases">cases</a></nav></header><main>"##);
}

/// The slice keys a case belongs to, as `field=value`: the suite's slice fields (from the report)
/// and `image`.
fn slice_keys(r: &Report, meta: &HtmlMeta, name: &str) -> Vec<String> {
    let Some(info) = meta.cases.get(name) else {
        return Vec::new();
    };
    let mut fields: BTreeSet<&str> = r.slices.keys().map(String::as_str).collect();
    for t in r.tasks.values() {
        if let Some(s) = t.pointer("/details/slices").and_then(|v| v.as_object()) {
            fields.extend(s.keys().map(String::as_str));
        }
    }
    fields.remove("category");
    fields.insert("image");
    fields
        .into_iter()
        .map(|f| {
            let v = if f == "image" {
                if info.images.is_empty() {
                    "missing".into()
                } else {
                    "present".into()
                }
            } else {
                crate::metric::slice::key_of(info.metadata.get(f))
            };
            format!("{f}={v}")
        })
        .collect()
}

pub(super) fn cases(out: &mut String, reports: &[Report], meta: &HtmlMeta, store: &ImageStore) {
    let total: usize = reports.iter().map(|r| r.verdicts.len()).sum();
    let mut counts = [0usize; 5];
    let mut slices: BTreeSet<String> = BTreeSet::new();
    let mut rows: Vec<(usize, &crate::verdict::Verdict, Status, Vec<String>)> =
        Vec::with_capacity(total);
    for (i, r) in reports.iter().enumerate() {
        for v in &r.verdicts {
            let st = Status::of(v, meta.known_failures.contains(&v.name));
            counts[Status::ALL.iter().position(|s| *s == st).unwrap_or(0)] += 1;
            let keys = slice_keys(r, meta, &v.name);
            slices.extend(keys.iter().cloned());
            rows.push((i, v, st, keys));
        }
    }
    out.push_str(r#"<section id="cases"><h2>Cases</h2><div class="filters" role="search"><label>status <select id="f-status"><option value="">all</option>"#);
    for (s, n) in Status::ALL.iter().zip(counts) {
        let _ = write!(
            out,
            r#"<option value="{}">{} ({n})</option>"#,
            s.key(),
            s.label()
        );
    }
    out.push_str(
        r#"</select></label><label>category <select id="f-cat"><option value="">all</option>"#,
    );
    for r in reports {
        let _ = write!(out, r#"<optgroup label="{}">"#, escape(&r.suite));
        for (c, t) in &r.categories {
            let _ = write!(
                out,
                r#"<option value="{}">{} ({})</option>"#,
                escape(&format!("{}::{c}", r.suite)),
                escape(c),
                t.cases
            );
        }
        out.push_str("</optgroup>");
    }
    out.push_str(
        r#"</select></label><label>slice <select id="f-slice"><option value="">all</option>"#,
    );
    for s in &slices {
        let _ = write!(
            out,
            r#"<option value="{}">{}</option>"#,
            escape(s),
            escape(s)
        );
    }
    let _ = write!(
        out,
        r#"</select></label><label>search <input id="f-text" type="search" placeholder="name, prompt, answer, reason"></label><label>sort <select id="f-sort"><option value="name">by name</option><option value="score-asc">score, lowest first</option><option value="score-desc">score, highest first</option></select></label><span id="f-count">{total} of {total} cases</span></div><div id="case-list">"#
    );
    let common: Vec<Option<&str>> = reports
        .iter()
        .map(|r| super::common_system(r, meta))
        .collect();
    for (i, v, st, keys) in rows {
        let row = cases::Row {
            report: &reports[i],
            verdict: v,
            status: st,
            slices: &keys,
            common_system: common[i],
        };
        cases::card(out, &row, meta, store);
    }
    out.push_str("</div></section>");
}

pub(super) fn tail(out: &mut String, store: &ImageStore) {
    out.push_str(r#"</main><div id="lightbox" hidden><div></div><p>click or press Escape to close</p></div>"#);
    // Base64 and the `data:` prefix hold no `<`, so the text cannot end the element early.
    for (i, t) in store.thumbs.iter().enumerate() {
        let _ = write!(out, r#"<script type="text/plain" id="t-{i}">{t}</script>"#);
    }
    for (i, f) in store.fulls.iter().enumerate() {
        let _ = write!(
            out,
            r#"<script type="text/plain" id="full-{i}">{f}</script>"#
        );
    }
    let _ = writeln!(out, "<script>{JS}</script></body></html>");
}
