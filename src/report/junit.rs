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

/// One `<testsuite>` per report.
pub fn render(reports: &[Report]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites>\n");
    for r in reports {
        let baseline_failed = r.baseline.as_ref().is_some_and(|b| !b.passed);
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">\n",
            escape(&r.suite),
            r.overall.cases + usize::from(r.baseline.is_some()),
            r.failed - r.model_errors + usize::from(baseline_failed),
            r.model_errors
        ));
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
            match &v.model_error {
                Some(e) => out.push_str(&format!("      <error message=\"{}\"/>\n", escape(e))),
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
