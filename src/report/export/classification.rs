//! `classification_report.json`: scikit-learn's `classification_report(output_dict=True,
//! zero_division=0)` layout for the classification tasks — per class `precision`, `recall`,
//! `f1-score`, `support`; `accuracy`; `macro avg` and `weighted avg`.
//!
//! Spam uses the labels `[0, 1]` (as `"0"` and `"1"`, sklearn's keys for integer labels), with a
//! malformed answer predicting 0, as everywhere else in the spam task. The labels task's scene
//! uses the primary (first) true scene against the predicted one, `(none)` when the answer had
//! none, over the sorted union of both (sklearn's default label list). That is the scene
//! confusion matrix's view; the `scene_accuracy` metric instead accepts any of a case's true
//! scenes, so the two accuracies differ where a case has several.

use serde_json::{json, Map, Value};

use crate::metric::classification::Confusion;
use crate::metric::labels::NO_SCENE;
use crate::report::Report;
use crate::task::labels::LabelsRow;
use crate::task::spam::SpamRow;

/// The report of `(truth, pred)` pairs over `labels` (every label a row and column).
pub fn report_of(labels: &[String], pairs: &[(usize, usize)]) -> Option<Value> {
    if pairs.is_empty() {
        return None;
    }
    let m = Confusion::from_pairs(labels.to_vec(), pairs.iter().copied());
    let stats = m.per_class();
    let n = m.total() as f64;
    let mut out = Map::new();
    let (mut mp, mut mr, mut mf) = (0.0, 0.0, 0.0);
    let (mut wp, mut wr, mut wf) = (0.0, 0.0, 0.0);
    for s in &stats {
        out.insert(
            s.label.clone(),
            json!({"precision": s.precision, "recall": s.recall, "f1-score": s.f1, "support": s.support}),
        );
        mp += s.precision;
        mr += s.recall;
        mf += s.f1;
        let w = s.support as f64 / n;
        wp += w * s.precision;
        wr += w * s.recall;
        wf += w * s.f1;
    }
    let k = stats.len() as f64;
    out.insert("accuracy".into(), json!(m.accuracy()?));
    out.insert(
        "macro avg".into(),
        json!({"precision": mp / k, "recall": mr / k, "f1-score": mf / k, "support": m.total()}),
    );
    out.insert(
        "weighted avg".into(),
        json!({"precision": wp, "recall": wr, "f1-score": wf, "support": m.total()}),
    );
    Some(Value::Object(out))
}

fn rows<'a, T: serde::de::DeserializeOwned>(
    r: &'a Report,
    task: &'a str,
) -> impl Iterator<Item = T> + 'a {
    r.verdicts
        .iter()
        .flat_map(|v| &v.scores)
        .filter(move |s| s.scorer == task && s.value.is_some())
        .filter_map(|s| serde_json::from_value(s.data.clone()).ok())
}

/// Spam: truth and prediction as 0/1.
pub fn spam(r: &Report) -> Option<Value> {
    let pairs: Vec<(usize, usize)> = rows::<SpamRow>(r, "spam")
        .map(|row| (usize::from(row.truth), usize::from(row.predicted())))
        .collect();
    report_of(&["0".into(), "1".into()], &pairs)
}

/// The labels task's primary scene.
pub fn scene(r: &Report) -> Option<Value> {
    let raw: Vec<(String, String)> = rows::<LabelsRow>(r, "labels")
        .filter_map(|row| {
            let t = row.truth.scene.first()?.clone();
            Some((t, row.pred.scene.unwrap_or_else(|| NO_SCENE.to_owned())))
        })
        .collect();
    let mut labels: Vec<String> = raw
        .iter()
        .flat_map(|(t, p)| [t.clone(), p.clone()])
        .collect();
    labels.sort();
    labels.dedup();
    let idx = |l: &str| labels.binary_search_by(|x| x.as_str().cmp(l)).unwrap_or(0);
    let pairs: Vec<(usize, usize)> = raw.iter().map(|(t, p)| (idx(t), idx(p))).collect();
    report_of(&labels, &pairs)
}

/// Every suite's classification reports: suite → `spam` and/or `labels.scene` → report.
pub fn all(reports: &[Report]) -> Value {
    let mut out = Map::new();
    for r in reports {
        let mut m = Map::new();
        if let Some(v) = spam(r) {
            m.insert("spam".into(), v);
        }
        if let Some(v) = scene(r) {
            m.insert("labels.scene".into(), v);
        }
        if !m.is_empty() {
            out.insert(r.suite.clone(), Value::Object(m));
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sklearn_on_a_small_case() {
        // sklearn.metrics.classification_report([0,0,0,1,1,2], [0,1,0,1,2,2], output_dict=True)
        let labels: Vec<String> = ["0", "1", "2"].iter().map(|s| s.to_string()).collect();
        let pairs = [(0, 0), (0, 1), (0, 0), (1, 1), (1, 2), (2, 2)];
        let r = report_of(&labels, &pairs).unwrap();
        let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12;
        assert!(close(&r["0"]["precision"], 1.0) && close(&r["0"]["recall"], 2.0 / 3.0));
        assert!(close(&r["0"]["f1-score"], 0.8));
        assert_eq!(r["0"]["support"], 3);
        assert!(close(&r["1"]["precision"], 0.5) && close(&r["1"]["recall"], 0.5));
        assert!(close(&r["2"]["precision"], 0.5) && close(&r["2"]["recall"], 1.0));
        assert!(close(&r["accuracy"], 4.0 / 6.0));
        assert!(close(
            &r["macro avg"]["f1-score"],
            (0.8 + 0.5 + 2.0 / 3.0) / 3.0
        ));
        assert!(close(
            &r["weighted avg"]["precision"],
            (3.0 * 1.0 + 2.0 * 0.5 + 0.5) / 6.0
        ));
        assert_eq!(r["macro avg"]["support"], 6);
        assert!(report_of(&labels, &[]).is_none());
    }
}
