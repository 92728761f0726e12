//! The self-contained HTML report: one file holding the run's header, each suite's summary,
//! category and slice tables, judge counters, task plots (inline SVG, see [`svg`]), the seed 001
//! error gallery, and every case with its prompt, images, answer and scores, filterable and
//! sortable by a small inline script.
//!
//! The page makes no network request: CSS and script are inline, images are data URIs (see
//! [`images`]), plots are SVG elements. Verdicts do not carry prompts or images, so the caller
//! passes the cases (by test name) in [`HtmlMeta::cases`]; a case missing there is shown from its
//! verdict alone.

mod cases;
pub mod escape;
mod gallery;
pub mod images;
mod page;
pub mod svg;
mod tasks;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::Value;

use crate::case::{Case, Expectation, ImageSource, Role};
use crate::score::ScoreStatus;
use crate::verdict::{expected_text, Verdict};
use escape::escape;
pub use images::ImageOptions;
pub use page::CSP;

/// The report page's inline style sheet, for other pages of the same look (`vlmtest compare`).
pub fn style() -> &'static str {
    page::CSS
}

use super::Report;

/// What the page needs beyond the reports: the header's run facts (all optional, shown where
/// given), the cases behind the verdicts, and the accepted baselines' known failures.
#[derive(Debug, Clone, Default)]
pub struct HtmlMeta {
    /// The page title (default: `vlmtest report`).
    pub title: Option<String>,
    pub run_id: Option<String>,
    /// Model label; default: the reports' own labels.
    pub model: Option<String>,
    pub adapter: Option<String>,
    /// When the run happened, as text (e.g. `2025-06-01 12:00 UTC`).
    pub date: Option<String>,
    /// Git commit of the suite files.
    pub git_commit: Option<String>,
    /// The case behind each verdict, by test name.
    pub cases: BTreeMap<String, CaseInfo>,
    /// Test names of failing cases the accepted snapshot lists (shown as known failures).
    pub known_failures: BTreeSet<String>,
    pub images: ImageOptions,
}

/// The parts of a [`Case`] the page shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CaseInfo {
    pub system: Option<String>,
    /// The conversation's non-system turns, as text (`role: text` when there are several).
    pub prompt: String,
    pub images: Vec<ImageSource>,
    /// What the case expects, in one line (numbers, keywords, reference).
    pub expected: Option<String>,
    pub metadata: BTreeMap<String, Value>,
    /// Task name → the task expectation's spec (its ground truth).
    pub tasks: BTreeMap<String, Value>,
}

impl CaseInfo {
    pub fn from_case(case: &Case) -> Self {
        let system = case
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.joined_text())
            .reduce(|a, b| a + "\n" + &b);
        let turns: Vec<_> = case
            .messages
            .iter()
            .filter(|m| m.role != Role::System)
            .collect();
        let prompt = if turns.len() == 1 {
            turns[0].joined_text()
        } else {
            turns
                .iter()
                .map(|m| format!("{}: {}", m.role.as_str(), m.joined_text()))
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        Self {
            system,
            prompt,
            images: case
                .messages
                .iter()
                .flat_map(|m| m.images().cloned())
                .collect(),
            expected: expected_text(case),
            metadata: case.metadata.clone(),
            tasks: case
                .expect
                .iter()
                .filter_map(|e| match e {
                    Expectation::Task { task, spec } => Some((task.clone(), spec.clone())),
                    _ => None,
                })
                .collect(),
        }
    }
}

impl HtmlMeta {
    /// Adds the cases (by test name) the page shows beside their verdicts.
    pub fn with_cases<'a>(mut self, cases: impl IntoIterator<Item = &'a Case>) -> Self {
        for c in cases {
            self.cases.insert(c.id.test_name(), CaseInfo::from_case(c));
        }
        self
    }
}

/// A case's outcome as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Fail,
    /// Failed, and listed as failing in the accepted snapshot.
    KnownFailure,
    /// The model did not answer.
    ModelError,
    /// A scorer (the judge, or a task spec) could not score the answer.
    JudgeError,
}

impl Status {
    pub fn of(v: &Verdict, known: bool) -> Self {
        if v.model_error.is_some() {
            Status::ModelError
        } else if v.has_scorer_error() {
            Status::JudgeError
        } else if v.passed {
            Status::Pass
        } else if known {
            Status::KnownFailure
        } else {
            Status::Fail
        }
    }
    /// The key used in `data-status` and CSS classes.
    pub fn key(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::KnownFailure => "known",
            Status::ModelError => "model-error",
            Status::JudgeError => "judge-error",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::KnownFailure => "known failure",
            Status::ModelError => "model error",
            Status::JudgeError => "judge error",
        }
    }
    pub const ALL: [Status; 5] = [
        Status::Pass,
        Status::Fail,
        Status::KnownFailure,
        Status::ModelError,
        Status::JudgeError,
    ];
}

/// A case's sort key: its lowest score value (-1 for a model error, 2 when nothing was scored,
/// so unscored cases sort last).
pub fn sort_score(v: &Verdict) -> f64 {
    if v.model_error.is_some() {
        return -1.0;
    }
    v.scores
        .iter()
        .filter(|s| s.status != ScoreStatus::Skipped)
        .map(|s| s.value.unwrap_or(0.0))
        .reduce(f64::min)
        .unwrap_or(2.0)
}

/// The system prompt every case of a suite shares: shown once in the suite's section rather
/// than in each case (it is most of a row's text in the task suites).
pub(crate) fn common_system<'a>(r: &Report, meta: &'a HtmlMeta) -> Option<&'a str> {
    let mut it = r
        .verdicts
        .iter()
        .map(|v| meta.cases.get(&v.name).and_then(|c| c.system.as_deref()));
    let first = it.next()??;
    it.all(|s| s == Some(first)).then_some(first)
}

/// `0.93 [0.81, 0.97]`.
fn rate_ci(rate: f64, ci: (f64, f64)) -> String {
    format!("{rate:.3} [{:.3}, {:.3}]", ci.0, ci.1)
}

fn summary(out: &mut String, r: &Report) {
    let _ = write!(
        out,
        r#"<div class="cards"><div class="stat"><b>{}</b>cases</div><div class="stat"><b>{}</b>passed</div><div class="stat"><b>{}</b>pass rate, 95% CI</div><div class="stat"><b>{}</b>failed</div><div class="stat{}"><b>{}</b>model errors</div><div class="stat{}"><b>{}</b>scorer errors</div><div class="stat{}"><b>{}</b>did not load</div></div>"#,
        r.overall.cases,
        r.overall.passed,
        rate_ci(r.overall.pass_rate, r.overall.pass_rate_ci95),
        r.failed,
        if r.model_errors > 0 { " bad" } else { "" },
        r.model_errors,
        if r.scorer_errors > 0 { " bad" } else { "" },
        r.scorer_errors,
        if r.load_errors.is_empty() { "" } else { " bad" },
        r.load_errors.len()
    );
    if !r.load_errors.is_empty() {
        out.push_str(r#"<div class="load-errors"><h4>Entries that did not load (each counts as a case that did not pass)</h4><ul>"#);
        for e in &r.load_errors {
            let _ = write!(out, "<li><code>{}</code></li>", escape(&e.to_string()));
        }
        out.push_str("</ul></div>");
    }
    out.push_str(r#"<div class="tables">"#);
    if !r.gates.is_empty() {
        out.push_str("<div><h4>Gates</h4><table><tr><th>gate</th><th>bounds</th><th>actual</th><th>errors behind it</th><th>outcome</th></tr>");
        for g in &r.gates {
            let _ = write!(
                out,
                r#"<tr><td><code>{}</code></td><td>{}</td><td class="num">{}</td><td class="num">{}</td><td><span class="badge {}" title="{}">{}</span></td></tr>"#,
                escape(&g.name),
                escape(&g.describe()),
                g.actual
                    .map_or_else(|| "missing".into(), |a| format!("{a:.4}")),
                g.missing,
                if g.passed { "pass" } else { "fail" },
                if g.passed {
                    String::new()
                } else {
                    escape(&g.failure()).into_owned()
                },
                if g.passed { "passed" } else { "FAILED" }
            );
        }
        out.push_str("</table></div>");
    }
    if !r.scorers.is_empty() {
        out.push_str("<div><h4>Scorers</h4><table><tr><th>scorer</th><th>scored</th><th>passed</th><th>pass rate, 95% CI</th><th>mean</th><th>errors</th></tr>");
        for (name, s) in &r.scorers {
            let t = super::aggregate::tally(s.passed, s.scored);
            let _ = write!(
                out,
                r#"<tr><td><code>{}</code></td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
                escape(name),
                s.scored,
                s.passed,
                rate_ci(t.pass_rate, t.pass_rate_ci95),
                s.mean.map_or_else(|| "-".into(), |m| format!("{m:.3}")),
                s.errors
            );
        }
        out.push_str("</table></div>");
    }
    if let Some(j) = &r.judge {
        let _ = write!(
            out,
            r#"<div><h4>Judge</h4><p class="judge">{}: {} items, {} scored, {} skipped, {} errors, {} repaired; {} HTTP calls, {} retries, {} cache hits; {} prompt + {} completion tokens, ${:.4}</p></div>"#,
            escape(if j.judge_model.is_empty() {
                "no judge"
            } else {
                &j.judge_model
            }),
            j.items,
            j.scored,
            j.skipped,
            j.errors,
            j.repairs,
            j.http_calls,
            j.retries,
            j.cache_hits,
            j.prompt_tokens,
            j.completion_tokens,
            j.cost_usd
        );
    }
    tally_table(out, "Categories", "category", r.categories.iter());
    for (field, groups) in &r.slices {
        tally_table(out, &format!("Slice: {field}"), field, groups.iter());
    }
    out.push_str("</div>");
}

fn tally_table<'a>(
    out: &mut String,
    title: &str,
    what: &str,
    rows: impl Iterator<Item = (&'a String, &'a super::Tally)>,
) {
    let rows: Vec<_> = rows.collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        r#"<div><h4>{}</h4><table><tr><th>{}</th><th>cases</th><th>passed</th><th>pass rate, 95% CI</th><th></th></tr>"#,
        escape(title),
        escape(what)
    );
    for (k, t) in rows {
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="meter"><span style="width:{:.1}%"></span></td></tr>"#,
            escape(k),
            t.cases,
            t.passed,
            rate_ci(t.pass_rate, t.pass_rate_ci95),
            t.pass_rate * 100.0
        );
    }
    out.push_str("</table></div>");
}

/// The page for `reports`. Pure apart from reading the cases' image files.
pub fn render(reports: &[Report], meta: &HtmlMeta) -> String {
    let sources = reports
        .iter()
        .flat_map(|r| &r.verdicts)
        .filter_map(|v| meta.cases.get(&v.name))
        .flat_map(|c| &c.images);
    let store = images::ImageStore::build(sources, &meta.images);
    let mut out = String::with_capacity(
        64 * 1024
            + store.embedded_bytes
            + 2048 * reports.iter().map(|r| r.verdicts.len()).sum::<usize>(),
    );
    page::head(&mut out, reports, meta);
    for (i, r) in reports.iter().enumerate() {
        let _ = write!(
            out,
            r#"<section class="suite" id="suite-{i}"><h2>{} <span class="badge {}">{}</span></h2><p class="model">model <code>{}</code></p>"#,
            escape(&r.suite),
            if r.errors() > 0 {
                "fail"
            } else if r.gates.is_empty() {
                "none"
            } else if r.gates_passed() {
                "pass"
            } else {
                "fail"
            },
            if r.errors() > 0 {
                "ERRORS"
            } else if r.gates.is_empty() {
                "no gates"
            } else if r.gates_passed() {
                "gates passed"
            } else {
                "gates FAILED"
            },
            escape(&r.model)
        );
        summary(&mut out, r);
        if let Some(s) = common_system(r, meta) {
            let _ = write!(
                out,
                r#"<details><summary>system prompt (every case)</summary><pre>{}</pre></details>"#,
                escape(s)
            );
        }
        tasks::render(&mut out, r, meta);
        gallery::render(&mut out, r, meta, &store);
        out.push_str("</section>");
    }
    page::cases(&mut out, reports, meta, &store);
    page::tail(&mut out, &store);
    out
}

/// `YYYY-MM-DD HH:MM UTC` of a time (for [`HtmlMeta::date`]).
pub fn utc_date(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::run_store::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01 00:00 UTC");
        // `date -u -d @1709210096` = Thu Feb 29 12:34:56 UTC 2024 (a leap day).
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(1_709_210_096)),
            "2024-02-29 12:34 UTC"
        );
        assert_eq!(
            utc_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00 UTC"
        );
    }
}
