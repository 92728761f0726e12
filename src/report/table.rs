//! Terminal rendering: one line per case and a summary table per run.

use super::Report;
use crate::verdict::Verdict;

/// `PASS manual_qa::torque::torque_001  numeric 1.00  keywords 0.67`.
pub fn case_line(v: &Verdict) -> String {
    let mark = if v.passed {
        "PASS"
    } else if v.model_error.is_some() {
        "ERR "
    } else {
        "FAIL"
    };
    let mut line = format!("{mark} {}", v.name);
    if let Some(e) = &v.model_error {
        line.push_str(&format!("  model error: {e}"));
    }
    for s in &v.scores {
        match s.value {
            Some(x) => line.push_str(&format!("  {} {x:.2}", s.scorer)),
            None => line.push_str(&format!("  {} error", s.scorer)),
        }
    }
    line
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// A fixed-width summary of several suite reports.
pub fn summary(reports: &[Report]) -> String {
    let mut scorer_names: Vec<String> = reports
        .iter()
        .flat_map(|r| r.scorers.keys().cloned())
        .collect();
    scorer_names.sort();
    scorer_names.dedup();
    let mut header = vec![
        "suite".to_string(),
        "model".into(),
        "cases".into(),
        "passed".into(),
        "rate".into(),
        "95% CI".into(),
    ];
    header.extend(scorer_names.iter().cloned());
    header.push("gates".into());
    let mut rows = vec![header];
    for r in reports {
        let mut row = vec![
            r.suite.clone(),
            r.model.clone(),
            r.overall.cases.to_string(),
            r.overall.passed.to_string(),
            format!("{:.2}", r.overall.pass_rate),
            format!(
                "{:.2}-{:.2}",
                r.overall.pass_rate_ci95.0, r.overall.pass_rate_ci95.1
            ),
        ];
        for name in &scorer_names {
            row.push(cell(r.scorers.get(name).and_then(|s| s.mean)));
        }
        let failed: Vec<&str> = r
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.name.as_str())
            .collect();
        row.push(if r.gates.is_empty() {
            "-".into()
        } else if failed.is_empty() {
            "ok".into()
        } else {
            format!("FAILED: {}", failed.join(", "))
        });
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for (n, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            out.push_str(&rule.join("  "));
            out.push('\n');
        }
    }
    for r in reports {
        for g in r.gates.iter().filter(|g| !g.passed) {
            out.push_str(&format!(
                "gate failed: {}::{} = {} (bounds: {})\n",
                r.suite,
                g.name,
                cell(g.actual),
                g.describe()
            ));
        }
    }
    out
}
