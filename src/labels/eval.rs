//! `vlmtest labels eval`: scores a prediction file against a ground truth, both in the
//! ground-truth format (JSONL or a JSON list of `{"image_id", "scene", "attributes",
//! "objects"}`, prediction objects ranked best first), joined by `image_id`. The metrics are
//! [`label_metrics`], the same function the `labels` task suites report; ids on one side only are
//! listed, never scored.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::jsonl::read_records;
use super::LabelsError;
use crate::metric::labels::{label_metrics, LabelMetrics, LabelRow};
use crate::task::import::labels::parse_record;
use crate::task::labels::LabelTruth;

/// One side of the join, in file order, first record of an id kept.
#[derive(Debug, Default)]
pub struct Side {
    pub records: Vec<(String, LabelTruth)>,
    pub rejected: Vec<String>,
    pub duplicate_ids: usize,
}

/// Reads a ground-truth style file.
pub fn read_side(path: &Path) -> Result<Side, LabelsError> {
    let parsed = read_records(path)?;
    let mut side = Side::default();
    for (line, why) in &parsed.bad {
        side.rejected
            .push(format!("{}:{line}: not JSON: {why}", path.display()));
    }
    let mut seen = HashMap::new();
    for l in parsed.lines {
        match parse_record(path, l.line, &l.value) {
            Ok((id, t)) => {
                if seen.insert(id.clone(), ()).is_some() {
                    side.duplicate_ids += 1;
                } else {
                    side.records.push((id, t));
                }
            }
            Err(e) => side.rejected.push(e.to_string()),
        }
    }
    Ok(side)
}

/// An evaluation's result.
#[derive(Debug, Serialize)]
pub struct EvalReport {
    pub gt: PathBuf,
    pub pred: PathBuf,
    pub gt_records: usize,
    pub pred_records: usize,
    pub joined: usize,
    /// Ground-truth ids without a prediction, in ground-truth order.
    pub missing_predictions: Vec<String>,
    /// Prediction ids not in the ground truth, in prediction order.
    pub unknown_predictions: Vec<String>,
    pub rejected: Vec<String>,
    pub duplicate_ids: usize,
    /// `None` when no id joined.
    pub metrics: Option<LabelMetrics>,
}

/// Joins and scores.
pub fn evaluate(gt_path: &Path, pred_path: &Path) -> Result<EvalReport, LabelsError> {
    let gt = read_side(gt_path)?;
    let pred = read_side(pred_path)?;
    let pred_by_id: HashMap<&str, &LabelTruth> = pred
        .records
        .iter()
        .map(|(id, t)| (id.as_str(), t))
        .collect();
    let gt_ids: HashMap<&str, ()> = gt.records.iter().map(|(id, _)| (id.as_str(), ())).collect();
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    for (id, t) in &gt.records {
        match pred_by_id.get(id.as_str()) {
            Some(p) => rows.push(LabelRow {
                scene_truth: t.scene.clone(),
                scene_pred: p.scene.first().cloned(),
                attr_truth: t.attributes.clone(),
                attr_pred: p.attributes.clone(),
                obj_truth: t.objects.clone(),
                obj_pred: p.objects.clone(),
            }),
            None => missing.push(id.clone()),
        }
    }
    let unknown: Vec<String> = pred
        .records
        .iter()
        .filter(|(id, _)| !gt_ids.contains_key(id.as_str()))
        .map(|(id, _)| id.clone())
        .collect();
    Ok(EvalReport {
        gt: gt_path.to_owned(),
        pred: pred_path.to_owned(),
        gt_records: gt.records.len(),
        pred_records: pred.records.len(),
        joined: rows.len(),
        missing_predictions: missing,
        unknown_predictions: unknown,
        rejected: gt.rejected.into_iter().chain(pred.rejected).collect(),
        duplicate_ids: gt.duplicate_ids + pred.duplicate_ids,
        metrics: label_metrics(&rows),
    })
}

fn ids_line(s: &mut String, title: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    const SHOWN: usize = 20;
    let shown: Vec<&str> = ids.iter().take(SHOWN).map(String::as_str).collect();
    let more = if ids.len() > SHOWN {
        format!(" … and {} more", ids.len() - SHOWN)
    } else {
        String::new()
    };
    s.push_str(&format!(
        "{title} ({}): {}{more}\n",
        ids.len(),
        shown.join(", ")
    ));
}

impl EvalReport {
    /// The terminal report.
    pub fn render(&self) -> String {
        let mut s = format!(
            "eval: {} ground-truth records, {} predictions, {} joined by image_id\n",
            self.gt_records, self.pred_records, self.joined
        );
        ids_line(
            &mut s,
            "ground-truth ids without a prediction",
            &self.missing_predictions,
        );
        ids_line(
            &mut s,
            "prediction ids not in the ground truth",
            &self.unknown_predictions,
        );
        if self.duplicate_ids > 0 {
            s.push_str(&format!(
                "{} duplicate ids (first record kept)\n",
                self.duplicate_ids
            ));
        }
        for r in self.rejected.iter().take(20) {
            s.push_str(&format!("rejected: {r}\n"));
        }
        let Some(m) = &self.metrics else {
            s.push_str("no image has both a ground truth and a prediction: nothing to score\n");
            return s;
        };
        let hits = (m.scene_accuracy * m.n as f64).round() as usize;
        s.push_str(&format!(
            "\nscene accuracy {:.3} ({hits}/{})\n",
            m.scene_accuracy, m.n
        ));
        let c = &m.scene_confusion;
        let w = c.labels.iter().map(String::len).max().unwrap_or(5).max(5);
        s.push_str(&format!(
            "scene confusion (rows truth, columns prediction):\n  {:<w$}",
            ""
        ));
        for (j, _) in c.labels.iter().enumerate() {
            s.push_str(&format!(" {:>5}", format!("[{j}]")));
        }
        s.push('\n');
        for (i, l) in c.labels.iter().enumerate() {
            s.push_str(&format!("  {l:<w$}"));
            for n in &c.counts[i] {
                s.push_str(&format!(" {n:>5}"));
            }
            s.push_str(&format!("   [{i}]\n"));
        }
        if !m.attributes.is_empty() {
            let w = m
                .attributes
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(9)
                .max(9);
            s.push_str(&format!(
                "\n  {:<w$} precision recall    f1 support     n\n",
                "attribute"
            ));
            for (k, a) in &m.attributes {
                s.push_str(&format!(
                    "  {k:<w$} {:>9.3} {:>6.3} {:>5.3} {:>7} {:>5}\n",
                    a.precision, a.recall, a.f1, a.support, a.n
                ));
            }
        }
        match (m.object_top1, m.object_top3) {
            (Some(t1), Some(t3)) => s.push_str(&format!(
                "\nobjects: top-1 {t1:.3}, top-3 {t3:.3} over {} images with true objects\n",
                m.object_rows
            )),
            _ => s.push_str("\nobjects: no ground-truth record has objects\n"),
        }
        s
    }

    /// Per-scene counts of the ground truth that joined, for a quick look at the balance.
    pub fn scene_support(&self) -> BTreeMap<String, u64> {
        self.metrics
            .as_ref()
            .map(|m| {
                m.scene_confusion
                    .labels
                    .iter()
                    .zip(&m.scene_confusion.counts)
                    .map(|(l, row)| (l.clone(), row.iter().sum()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_by_id_and_lists_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let gt = dir.path().join("gt.json");
        std::fs::write(
            &gt,
            r#"[{"image_id": "a", "scene": ["scene.food"], "attributes": {"attr.has_person": true}, "objects": ["object.food"]},
                {"image_id": "b", "scene": ["scene.product"], "attributes": {"attr.has_person": false}},
                {"image_id": "c", "scene": ["scene.food"]}]"#,
        )
        .unwrap();
        let pred = dir.path().join("pred.jsonl");
        std::fs::write(
            &pred,
            "{\"image_id\": \"a\", \"scene\": \"scene.food\", \"attributes\": {\"attr.has_person\": true}, \"objects\": [\"object.drink\", \"object.food\"]}\n\
             {\"image_id\": \"b\", \"scene\": \"scene.food\", \"attributes\": {\"attr.has_person\": true}}\n\
             {\"image_id\": \"z\", \"scene\": \"scene.food\"}\n",
        )
        .unwrap();
        let r = evaluate(&gt, &pred).unwrap();
        assert_eq!((r.gt_records, r.pred_records, r.joined), (3, 3, 2));
        assert_eq!(r.missing_predictions, ["c"]);
        assert_eq!(r.unknown_predictions, ["z"]);
        let m = r.metrics.as_ref().unwrap();
        assert_eq!(m.scene_accuracy, 0.5);
        assert_eq!((m.object_top1, m.object_top3), (Some(0.0), Some(1.0)));
        let a = &m.attributes["attr.has_person"];
        assert_eq!((a.precision, a.recall), (0.5, 1.0));
        assert_eq!(r.scene_support()["scene.product"], 1);
        let text = r.render();
        assert!(text.contains("scene accuracy 0.500 (1/2)"), "{text}");
        assert!(
            text.contains("ground-truth ids without a prediction (1): c"),
            "{text}"
        );
    }
}
