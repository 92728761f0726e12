//! The insta snapshot of a suite's aggregate report: counts, rates and means rounded to two
//! decimals (so float noise cannot flap it), volatile fields (times, paths, per-case answers) left
//! out. Stored as `snapshots/<suite>@<model>.snap`; `cargo insta review` accepts a new baseline.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::Report;

/// Rounds to two decimals.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round_all(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64().map_or(Value::Null, |x| json!(round2(x))),
        Value::Array(a) => Value::Array(a.iter().map(round_all).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), round_all(v)))
                .collect::<Map<_, _>>(),
        ),
        other => other.clone(),
    }
}

/// The snapshot's content: the aggregates, and the sorted names of the failing cases (the
/// accepted baseline's known failures).
pub fn view(report: &Report) -> Value {
    let mut v = serde_json::to_value(report).unwrap_or(Value::Null);
    if let Value::Object(o) = &mut v {
        o.remove("verdicts");
        o.remove("model");
        // The baseline comparison is about another run; its outcome is the `suite::compare` trial.
        o.remove("baseline");
        // Judge calls, retries, cache hits and tokens vary run to run; the outcome counts do not.
        if let Some(j) = o.remove("judge").and(report.judge.as_ref()) {
            o.insert(
                "judge".into(),
                json!({"items": j.items, "scored": j.scored, "skipped": j.skipped, "errors": j.errors}),
            );
        }
        let mut failing: Vec<&str> = report
            .verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| v.name.as_str())
            .collect();
        failing.sort_unstable();
        o.insert("failing_cases".into(), json!(failing));
    }
    round_all(&v)
}

/// The path of a suite's accepted snapshot for a model.
pub fn path(project: &Path, suite: &str, model: &str) -> std::path::PathBuf {
    project
        .join("snapshots")
        .join(format!("{suite}@{model}.snap"))
}

/// The failing cases recorded in the accepted snapshot, if there is one. A case that fails and is
/// listed here is a known failure, not a regression.
pub fn known_failures(project: &Path, suite: &str, model: &str) -> Option<BTreeSet<String>> {
    let text = std::fs::read_to_string(path(project, suite, model)).ok()?;
    // An insta snapshot is a `---`-delimited header followed by the serialized value.
    let body = text.strip_prefix("---")?.split_once("\n---\n")?.1;
    let value: Value = serde_json::from_str(body).ok()?;
    let names = value.get("failing_cases")?.as_array()?;
    Some(
        names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
    )
}

/// The snapshot's name: `<suite>@<model label>`.
pub fn name(report: &Report) -> String {
    format!("{}@{}", report.suite, report.model)
}

/// Compares the report against `snapshots/<suite>@<model>.snap` under `project`; panics with
/// insta's diff when it differs (the harness turns that into a failed trial).
pub fn assert_matches(project: &Path, report: &Report) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(project.join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_description(format!(
        "aggregate report of suite `{}` on model `{}`",
        report.suite, report.model
    ));
    let value = view(report);
    let snapshot_name = name(report);
    settings.bind(|| insta::assert_json_snapshot!(snapshot_name, value));
}
