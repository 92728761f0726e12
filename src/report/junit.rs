//! JUnit XML, for CI systems that display test results.

use super::Report;

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .map(|c| match c {
            '&' => "&amp;".into(),
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '"' => "&quot;".into(),
            '\'' => "&apos;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// One `<testsuite>` per report. A case that erred (model or scorer error) is an `<error>`, a
/// failed case a `<failure>`; every entry that did not load is one more test case with an
/// `<error>` naming its file, line and field, so `tests`, `failures` and `errors` add up to what
/// the suite holds.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for r in reports {
        let baseline_failed = r.baseline.as_ref().is_some_and(|b| !b.passed);
        let errors = r.verdicts.iter().filter(|v| v.is_error()).count() + r.load_errors.len();
        let failures = r
            .verdicts
            .iter()
            .filter(|v| !v.passed && !v.is_error())
            .count();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">\n",
            escape(&r.suite),
            r.verdicts.len() + r.load_errors.len() + usize::from(r.baseline.is_some()),
            failures + usize::from(baseline_failed),
            errors
        ));
        for e in &r.load_errors {
            let file = e.file.file_name().map_or_else(
                || e.file.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            let place = match e.line {
                Some(line) => format!("{file}:{line}"),
                None => file,
            };
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}::load::{}\">\n      <error message=\"{}\"/>\n    </testcase>\n",
                escape(&r.suite),
                escape(&r.suite),
                escape(&place),
                escape(&e.to_string())
            ));
        }
        for v in &r.verdicts {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&r.suite),
                escape(&v.name)
            ));
            if v.passed {
                out.push_str("/>\n");
                continue;
            }
            out.push_str(">\n");
            let detail: Vec<String> = v
                .scores
                .iter()
                .map(|s| format!("{}: {}", s.scorer, s.detail))
                .collect();
            let scorer_errors: Vec<String> = v
                .scores
                .iter()
                .filter(|s| s.status == crate::score::ScoreStatus::ScorerError)
                .map(|s| format!("{}: {}", s.scorer, s.detail))
                .collect();
            match &v.model_error {
                Some(e) => out.push_str(&format!("      <error message=\"{}\"/>\n", escape(e))),
                None if !scorer_errors.is_empty() => out.push_str(&format!(
                    "      <error message=\"{}\"/>\n",
                    escape(&scorer_errors.join("; "))
                )),
                None => out.push_str(&format!(
                    "      <failure message=\"{}\"/>\n",
                    escape(&detail.join("; "))
                )),
            }
            if let Some(a) = &v.answer {
                out.push_str(&format!(
                    "      <system-out>{}</system-out>\n",
                    escape(&a.text)
                ));
            }
            out.push_str("    </testcase>\n");
        }
        if let Some(b) = &r.baseline {
            let name = format!("{}::compare", r.suite);
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&r.suite),
                escape(&name)
            ));
            if b.passed {
                out.push_str("/>\n");
            } else {
                let mut why: Vec<String> = b.error.iter().cloned().collect();
                why.extend(
                    b.rules
                        .iter()
                        .filter(|x| !x.passed)
                        .map(|x| format!("{}: {}", x.rule, x.detail)),
                );
                out.push_str(&format!(
                    ">\n      <failure message=\"baseline {}: {}\"/>\n    </testcase>\n",
                    escape(&b.baseline),
                    escape(&why.join("; "))
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::SuiteConfig;
    use crate::score::Score;
    use crate::suite::SuiteError;
    use crate::verdict::Verdict;

    fn verdict(name: &str, score: Score, model_error: Option<&str>) -> Verdict {
        Verdict {
            name: name.into(),
            category: "c".into(),
            tags: Vec::new(),
            passed: model_error.is_none() && score.passed,
            answer: None,
            model_error: model_error.map(str::to_owned),
            scores: vec![score],
        }
    }

    /// tests = passed + failures + errors, counting each entry that did not load; a judge error is
    /// an `<error>`, never a `<failure>`.
    #[test]
    fn counts_add_up_with_load_model_and_judge_errors() {
        let verdicts = vec![
            verdict(
                "s::c::pass",
                Score::scored("numeric", 1.0, 1.0, "ok".into()),
                None,
            ),
            verdict(
                "s::c::fail",
                Score::scored("numeric", 0.0, 1.0, "no".into()),
                None,
            ),
            verdict(
                "s::c::judge",
                Score::scorer_error("judge.correctness", 0.5, "judge error: down".into()),
                None,
            ),
            verdict(
                "s::c::model",
                Score::scored("numeric", 0.0, 1.0, String::new()),
                Some("timeout"),
            ),
        ];
        let load = [SuiteError::new(
            std::path::Path::new("/p/cases/s.jsonl"),
            Some(7),
            Some("role"),
            "unknown role",
        )];
        let cfg = SuiteConfig {
            bootstrap: 0,
            ..SuiteConfig::default()
        };
        let r = crate::report::build(
            "s",
            "m",
            &cfg,
            &[],
            verdicts.clone(),
            BTreeMap::new(),
            &load,
        );
        let xml = render(&[r]);
        assert!(
            xml.contains(r#"<testsuite name="s" tests="5" failures="1" errors="3">"#),
            "{xml}"
        );
        assert!(xml.contains(r#"name="s::load::s.jsonl:7""#), "{xml}");
        assert!(
            xml.contains("/p/cases/s.jsonl:7: field `role`: unknown role"),
            "{xml}"
        );
        assert!(
            xml.contains(r#"<error message="judge.correctness: judge error: down"/>"#),
            "{xml}"
        );
        assert_eq!(xml.matches("<error ").count(), 3, "{xml}");
        assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    }
}
