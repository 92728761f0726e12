//! Terminal rendering: one line per case and a summary table per run.

use super::Report;
use crate::judge::JudgeStats;
use crate::verdict::Verdict;

/// `PASS manual_qa::torque::torque_001  numeric 1.00  keywords 0.67`.
pub fn case_line(v: &Verdict) -> String {
    let mark = if v.passed {
        "PASS"
    } else if v.is_error() {
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

/// Left-aligned fixed-width columns, the first row a header underlined with dashes.
pub fn grid(rows: &[Vec<String>]) -> String {
    let Some(first) = rows.first() else {
        return String::new();
    };
    let widths: Vec<usize> = (0..first.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
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
    out
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
        "errors".into(),
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
            r.errors().to_string(),
            format!("{:.2}", r.overall.pass_rate),
            format!(
                "{:.2}-{:.2}",
                r.overall.pass_rate_ci95.0, r.overall.pass_rate_ci95.1
            ),
        ];
        for name in &scorer_names {
            row.push(match r.scorers.get(name) {
                Some(s) => mean_cell(s),
                None => "-".into(),
            });
        }
        let mut failed: Vec<&str> = r
            .gates
            .iter()
            .filter(|g| !g.passed)
            .map(|g| g.name.as_str())
            .collect();
        if r.baseline.as_ref().is_some_and(|b| !b.passed) {
            failed.push("baseline");
        }
        row.push(if r.gates.is_empty() && r.baseline.is_none() {
            "-".into()
        } else if failed.is_empty() {
            "ok".into()
        } else {
            format!("FAILED: {}", failed.join(", "))
        });
        rows.push(row);
    }
    let mut out = grid(&rows);
    for r in reports {
        if let Some(j) = &r.judge {
            out.push_str(&judge_line(&r.suite, j));
            out.push('\n');
        }
    }
    for r in reports {
        for e in &r.load_errors {
            out.push_str(&format!("load error: {}: {e}\n", r.suite));
        }
        for g in r.gates.iter().filter(|g| !g.passed) {
            out.push_str(&format!(
                "gate failed: {}::{} = {}\n",
                r.suite,
                g.name,
                g.failure()
            ));
        }
        if let Some(b) = r.baseline.as_ref().filter(|b| !b.passed) {
            out.push_str(&format!(
                "baseline failed: {} against {}\n",
                r.suite, b.baseline
            ));
            if let Some(e) = &b.error {
                out.push_str(&format!("  {e}\n"));
            }
            for rule in b.rules.iter().filter(|x| !x.passed) {
                out.push_str(&format!("  {}: {}\n", rule.rule, rule.detail));
            }
        }
    }
    out
}

/// A scorer's mean with its 95% interval, and its errors when it has any:
/// `0.57 [0.45,0.69]`, `1.00 [1.00,1.00] 69 ERR`.
fn mean_cell(s: &super::ScorerSummary) -> String {
    let value = match (s.mean, s.mean_ci95) {
        (Some(m), Some((lo, hi))) => format!("{m:.2} [{lo:.2},{hi:.2}]"),
        (m, _) => cell(m),
    };
    if s.errors > 0 {
        format!("{value} {} ERR", s.errors)
    } else {
        value
    }
}

/// `judge judge_smoke (smollm2): 6 items: 6 scored, 0 skipped, 0 errors, 1 repaired; 7 HTTP
/// calls, 0 retries, 0 cache hits; 1476 prompt + 350 completion tokens, $0.0000`.
pub fn judge_line(suite: &str, j: &JudgeStats) -> String {
    let model = if j.judge_model.is_empty() {
        "no judge"
    } else {
        j.judge_model.as_str()
    };
    let stopped = j
        .stopped
        .as_ref()
        .map(|why| format!("; STOPPED: {why}"))
        .unwrap_or_default();
    format!(
        "judge {suite} ({model}): {} items: {} scored, {} skipped, {} errors, {} repaired; \
         {} HTTP calls, {} retries, {} cache hits; {} prompt + {} completion tokens, ${:.4}{stopped}",
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
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::report::snapshot;
    use crate::report::Tally;

    fn report(judge: Option<JudgeStats>) -> Report {
        Report {
            suite: "smoke".into(),
            model: "m".into(),
            overall: Tally::default(),
            failed: 0,
            model_errors: 0,
            scorer_errors: 0,
            scorers: BTreeMap::new(),
            categories: BTreeMap::new(),
            slices: BTreeMap::new(),
            tasks: BTreeMap::new(),
            gates: Vec::new(),
            judge,
            baseline: None,
            load_errors: Vec::new(),
            verdicts: Vec::new(),
        }
    }

    fn stats() -> JudgeStats {
        JudgeStats {
            judge_model: "gpt-x".into(),
            items: 6,
            scored: 4,
            skipped: 1,
            errors: 1,
            repairs: 2,
            http_calls: 9,
            retries: 3,
            cache_hits: 2,
            prompt_tokens: 1476,
            completion_tokens: 350,
            cost_usd: 0.0123,
            stopped: None,
        }
    }

    #[test]
    fn the_summary_shows_the_judge_counters_of_each_suite() {
        let table = summary(&[report(Some(stats())), report(None)]);
        let lines: Vec<&str> = table.lines().filter(|l| l.starts_with("judge ")).collect();
        assert_eq!(
            lines,
            ["judge smoke (gpt-x): 6 items: 4 scored, 1 skipped, 1 errors, 2 repaired; 9 HTTP calls, 3 retries, 2 cache hits; 1476 prompt + 350 completion tokens, $0.0123"]
        );
    }

    #[test]
    fn the_report_json_keeps_every_counter_and_the_snapshot_only_outcomes() {
        let r = report(Some(stats()));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["judge"]["cache_hits"], 2);
        assert_eq!(json["judge"]["prompt_tokens"], 1476);
        assert_eq!(json["judge"]["retries"], 3);
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
        let view = snapshot::view(&r);
        assert_eq!(
            view["judge"],
            serde_json::json!({"items": 6, "scored": 4, "skipped": 1, "errors": 1})
        );
        // A suite without judge expectations has no `judge` key at all: older snapshots and
        // reports are unchanged.
        let plain = report(None);
        assert!(serde_json::to_value(&plain).unwrap().get("judge").is_none());
        assert!(snapshot::view(&plain).get("judge").is_none());
    }
}
