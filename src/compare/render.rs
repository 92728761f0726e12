//! Renders a `Comparison` as a terminal table or as markdown (for a pull-request comment); JSON
//! is the struct itself.

use super::{CaseChange, Change, Comparison, MetricDelta, SuiteComparison};
use crate::report::table::grid;
use crate::score::text::shorten;

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.3}"))
}

fn signed(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:+.3}"))
}

fn interval(ci: Option<(f64, f64)>) -> String {
    ci.map_or_else(|| "-".into(), |(lo, hi)| format!("[{lo:+.3}, {hi:+.3}]"))
}

/// A p-value as printed; a bootstrap p-value of 0 (no resample crossed 0) is shown as the bound
/// the resamples give, `< 2/R`, never as 0.
fn p_value(m: &MetricDelta, resamples: usize) -> String {
    m.p_value.map_or_else(
        || "-".into(),
        |p| {
            if p == 0.0 && m.test == "bootstrap" && resamples > 0 {
                format!("< {:.1e} ({})", 2.0 / resamples as f64, m.test)
            } else if p < 1e-4 {
                format!("{p:.1e} ({})", m.test)
            } else {
                format!("{p:.4} ({})", m.test)
            }
        },
    )
}

fn change(c: Change) -> &'static str {
    match c {
        Change::Improved => "better",
        Change::Regressed => "WORSE",
        Change::Unchanged => "",
        Change::Untested => "untested",
    }
}

pub(super) fn header(s: &SuiteComparison) -> [String; 2] {
    [
        format!(
            "suite {}: A = {}, B = {}",
            s.suite, s.a_model, s.b_model
        ),
        format!(
            "{} paired cases ({} only in A, {} only in B): {} both pass, {} fixed, {} broken, {} both fail; \
             {} bootstrap resamples (seed {}), alpha {}",
            s.paired,
            s.only_a.len(),
            s.only_b.len(),
            s.pairs.both_pass,
            s.pairs.fixed,
            s.pairs.broken,
            s.pairs.both_fail,
            s.bootstrap.resamples,
            s.bootstrap.seed,
            s.alpha
        ),
    ]
}

pub(super) fn metric_rows(s: &SuiteComparison) -> Vec<Vec<String>> {
    let mut rows = vec![vec![
        "metric".to_string(),
        "A".into(),
        "B".into(),
        "B-A".into(),
        "95% CI of B-A".into(),
        "p".into(),
        "".into(),
    ]];
    for m in &s.metrics {
        rows.push(vec![
            m.name.clone(),
            num(m.a),
            num(m.b),
            signed(m.diff),
            interval(m.ci95),
            p_value(m, s.bootstrap.resamples),
            change(m.change).into(),
        ]);
    }
    rows
}

fn answers(c: &CaseChange, width: usize) -> [String; 2] {
    let show = |a: &Option<String>| {
        a.as_deref()
            .map_or_else(|| "(no answer)".into(), |t| shorten(t, width))
    };
    [show(&c.a_answer), show(&c.b_answer)]
}

/// The terminal rendering: per suite a header, the metric table, then fixed, broken (with both
/// answers) and both-failing cases.
pub fn table(c: &Comparison) -> String {
    let mut out = format!("compare A = {}  B = {}\n", c.sides.a, c.sides.b);
    for s in &c.suites {
        let [h1, h2] = header(s);
        out.push_str(&format!("\n{h1}\n{h2}\n\n"));
        out.push_str(&grid(&metric_rows(s)));
        out.push_str(&format!(
            "\nfixed (fail in A, pass in B): {}\n",
            s.fixed.len()
        ));
        for f in &s.fixed {
            out.push_str(&format!("  {}\n", f.name));
        }
        out.push_str(&format!(
            "broken (pass in A, fail in B): {}\n",
            s.broken.len()
        ));
        for b in &s.broken {
            let [a, bb] = answers(b, 160);
            out.push_str(&format!(
                "  {}  ({})\n    A: {a}\n    B: {bb}\n",
                b.name, b.reason
            ));
        }
        out.push_str(&format!("both failing: {}\n", s.both_failing.len()));
        for n in &s.both_failing {
            out.push_str(&format!("  {n}\n"));
        }
        for (label, names) in [("only in A", &s.only_a), ("only in B", &s.only_b)] {
            if !names.is_empty() {
                out.push_str(&format!("{label} (not compared): {}\n", names.join(", ")));
            }
        }
    }
    if !c.unmatched_suites.is_empty() {
        out.push_str(&format!(
            "\nsuites on one side only (not compared): {}\n",
            c.unmatched_suites.join(", ")
        ));
    }
    out
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The markdown rendering, for a pull-request comment.
pub fn markdown(c: &Comparison) -> String {
    let mut out = format!(
        "## vlmtest compare\n\nA = `{}`, B = `{}`\n",
        md_escape(&c.sides.a),
        md_escape(&c.sides.b)
    );
    for s in &c.suites {
        let [h1, h2] = header(s);
        out.push_str(&format!("\n### {}\n\n{}\n", md_escape(&h1), md_escape(&h2)));
        let rows = metric_rows(s);
        for (i, row) in rows.iter().enumerate() {
            let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
            if i == 0 {
                out.push_str(&format!("|{}\n", "---|".repeat(row.len())));
            }
        }
        out.push_str(&format!(
            "\n**Fixed** (fail → pass): {}  \n**Broken** (pass → fail): {}  \n**Both failing**: {}\n",
            s.fixed.len(),
            s.broken.len(),
            s.both_failing.len()
        ));
        if !s.broken.is_empty() {
            out.push_str("\n| broken case | why | A answered | B answered |\n|---|---|---|---|\n");
            for b in &s.broken {
                let [a, bb] = answers(b, 120);
                out.push_str(&format!(
                    "| `{}` | {} | {} | {} |\n",
                    md_escape(&b.name),
                    md_escape(&b.reason),
                    md_escape(&a),
                    md_escape(&bb)
                ));
            }
        }
        if !s.fixed.is_empty() {
            let names: Vec<String> = s.fixed.iter().map(|f| format!("`{}`", f.name)).collect();
            out.push_str(&format!("\nFixed: {}\n", names.join(", ")));
        }
    }
    out
}
