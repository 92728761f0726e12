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
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\">\n",
            escape(&r.suite),
            r.overall.cases,
            r.failed - r.model_errors,
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
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
