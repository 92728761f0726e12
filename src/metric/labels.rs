//! Image-label metrics (seed 004): scene accuracy with a confusion table, per-attribute
//! precision / recall / F1, and object top-1 / top-3 hit rates.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::classification::{binary, Confusion};

/// The label used in the confusion table for a missing scene prediction.
pub const NO_SCENE: &str = "(none)";

/// One image's truth and prediction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelRow {
    /// Ground-truth scenes; the first is the primary one used in the confusion table.
    pub scene_truth: Vec<String>,
    pub scene_pred: Option<String>,
    pub attr_truth: BTreeMap<String, bool>,
    pub attr_pred: BTreeMap<String, bool>,
    pub obj_truth: Vec<String>,
    /// Ranked, best first.
    pub obj_pred: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttrStats {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Rows whose truth has the attribute set.
    pub support: u64,
    /// Rows whose truth mentions the attribute at all.
    pub n: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelMetrics {
    pub n: usize,
    /// Fraction of rows whose predicted scene is one of the true scenes.
    pub scene_accuracy: f64,
    pub scene_confusion: Confusion,
    pub attributes: BTreeMap<String, AttrStats>,
    /// Over rows with at least one true object; `None` when there are none.
    pub object_top1: Option<f64>,
    pub object_top3: Option<f64>,
    pub object_rows: usize,
}

/// `None` for no rows.
pub fn label_metrics(rows: &[LabelRow]) -> Option<LabelMetrics> {
    if rows.is_empty() {
        return None;
    }
    let primary = |r: &LabelRow| {
        r.scene_truth
            .first()
            .cloned()
            .unwrap_or_else(|| NO_SCENE.into())
    };
    let predicted = |r: &LabelRow| r.scene_pred.clone().unwrap_or_else(|| NO_SCENE.into());
    let labels: BTreeSet<String> = rows
        .iter()
        .flat_map(|r| [primary(r), predicted(r)])
        .collect();
    let labels: Vec<String> = labels.into_iter().collect();
    let index = |s: &String| labels.iter().position(|l| l == s).unwrap_or(0);
    let scene_confusion = Confusion::from_pairs(
        labels.clone(),
        rows.iter()
            .map(|r| (index(&primary(r)), index(&predicted(r)))),
    );
    let scene_hits = rows
        .iter()
        .filter(|r| {
            r.scene_pred
                .as_ref()
                .is_some_and(|p| r.scene_truth.contains(p))
        })
        .count();

    let keys: BTreeSet<&String> = rows.iter().flat_map(|r| r.attr_truth.keys()).collect();
    let mut attributes = BTreeMap::new();
    for key in keys {
        let (truth, pred): (Vec<bool>, Vec<bool>) = rows
            .iter()
            .filter_map(|r| {
                r.attr_truth
                    .get(key)
                    .map(|&t| (t, r.attr_pred.get(key).copied().unwrap_or(false)))
            })
            .unzip();
        if let Some(b) = binary(&truth, &pred) {
            let support = truth.iter().filter(|&&t| t).count() as u64;
            attributes.insert(
                key.clone(),
                AttrStats {
                    precision: b.precision,
                    recall: b.recall,
                    f1: b.f1,
                    support,
                    n: b.n,
                },
            );
        }
    }

    let with_objects: Vec<&LabelRow> = rows.iter().filter(|r| !r.obj_truth.is_empty()).collect();
    let hit = |r: &LabelRow, k: usize| r.obj_pred.iter().take(k).any(|o| r.obj_truth.contains(o));
    let rate = |k: usize| {
        (!with_objects.is_empty()).then(|| {
            with_objects.iter().filter(|r| hit(r, k)).count() as f64 / with_objects.len() as f64
        })
    };
    Some(LabelMetrics {
        n: rows.len(),
        scene_accuracy: scene_hits as f64 / rows.len() as f64,
        scene_confusion,
        attributes,
        object_top1: rate(1),
        object_top3: rate(3),
        object_rows: with_objects.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(scene: &str, pred: Option<&str>, objs: &[&str], preds: &[&str]) -> LabelRow {
        LabelRow {
            scene_truth: vec![scene.into()],
            scene_pred: pred.map(Into::into),
            obj_truth: objs.iter().map(|s| s.to_string()).collect(),
            obj_pred: preds.iter().map(|s| s.to_string()).collect(),
            ..LabelRow::default()
        }
    }

    #[test]
    fn known_values() {
        let rows = [
            row(
                "scene.food",
                Some("scene.food"),
                &["object.food"],
                &["object.drink", "object.food"],
            ),
            row("scene.product", None, &[], &[]),
        ];
        let m = label_metrics(&rows).unwrap();
        assert_eq!(m.scene_accuracy, 0.5);
        assert_eq!(m.object_top1, Some(0.0));
        assert_eq!(m.object_top3, Some(1.0));
        assert_eq!(
            m.scene_confusion.labels,
            vec!["(none)", "scene.food", "scene.product"]
        );
    }

    proptest! {
        #[test]
        fn top3_at_least_top1(rows in prop::collection::vec(
            (0u8..3, prop::option::of(0u8..3), prop::collection::vec(0u8..5, 0..3), prop::collection::vec(0u8..5, 0..5)),
            1..30,
        )) {
            let rows: Vec<LabelRow> = rows.iter().map(|(s, p, o, q)| LabelRow {
                scene_truth: vec![format!("s{s}")],
                scene_pred: p.map(|p| format!("s{p}")),
                obj_truth: o.iter().map(|x| format!("o{x}")).collect(),
                obj_pred: q.iter().map(|x| format!("o{x}")).collect(),
                ..LabelRow::default()
            }).collect();
            let m = label_metrics(&rows).unwrap();
            prop_assert!((0.0..=1.0).contains(&m.scene_accuracy));
            if let (Some(a), Some(b)) = (m.object_top1, m.object_top3) { prop_assert!(a <= b); }
            prop_assert_eq!(m.scene_confusion.total() as usize, rows.len());
            prop_assert_eq!(m.scene_confusion.accuracy().unwrap(), m.scene_accuracy);
        }
    }
}
