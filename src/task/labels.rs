//! Image labels (seed 004): the model answers `{"scene": "scene.food", "attributes":
//! {"attr.has_person": false, …}, "objects": ["object.food", …]}` (objects ranked best first); the
//! suite reports scene accuracy with a confusion table, per-attribute precision / recall / F1, and
//! object top-1 / top-3 hit rates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::first_json;
use super::Aggregator;
use crate::metric::labels::{label_metrics, LabelRow};
use crate::score::Score;

/// Ground truth in the seed's format (also the shape of a valid answer, with `scene` a list).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelTruth {
    pub scene: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, bool>,
    #[serde(default)]
    pub objects: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSpec {
    pub scene: Vec<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, bool>,
    #[serde(default)]
    pub objects: Vec<String>,
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_threshold() -> f64 {
    0.5
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LabelAnswer {
    pub scene: Option<String>,
    pub attributes: BTreeMap<String, bool>,
    pub objects: Vec<String>,
}

pub fn parse_answer(answer: &str) -> Result<LabelAnswer, String> {
    let (v, _) = first_json(answer).ok_or("no JSON object in the answer")?;
    let o = v.as_object().ok_or("the answer's JSON is not an object")?;
    let scene = match o.get("scene") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => match a.first() {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err("field `scene` holds a non-string".into()),
        },
        None => return Err("missing field `scene`".into()),
        Some(_) => return Err("field `scene` is not a string or list".into()),
    };
    let attributes = match o.get("attributes") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_bool()
                    .map(|b| (k.clone(), b))
                    .ok_or(format!("attribute `{k}` is not a boolean"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("field `attributes` is not an object".into()),
    };
    let objects = match o.get("objects") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("field `objects` holds a non-string".to_owned())
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("field `objects` is not a list".into()),
    };
    Ok(LabelAnswer {
        scene,
        attributes,
        objects,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelsRow {
    pub malformed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub truth: LabelTruth,
    pub pred: LabelAnswer,
}

impl LabelsRow {
    fn metric_row(&self) -> LabelRow {
        LabelRow {
            scene_truth: self.truth.scene.clone(),
            scene_pred: self.pred.scene.clone(),
            attr_truth: self.truth.attributes.clone(),
            attr_pred: self.pred.attributes.clone(),
            obj_truth: self.truth.objects.clone(),
            obj_pred: self.pred.objects.clone(),
        }
    }
}

pub fn score(spec: &Value, answer: &str) -> Score {
    let spec: LabelsSpec = match serde_json::from_value(spec.clone()) {
        Ok(s) => s,
        Err(e) => return Score::scorer_error("labels", 0.5, format!("invalid labels spec: {e}")),
    };
    let t = LabelTruth {
        scene: spec.scene,
        attributes: spec.attributes,
        objects: spec.objects,
    };
    let parsed = parse_answer(answer);
    let pred = parsed.clone().unwrap_or_default();
    // Per case: the mean of scene hit, attribute agreement and top-3 object hit (where defined).
    let mut parts = vec![f64::from(u8::from(
        pred.scene.as_ref().is_some_and(|s| t.scene.contains(s)),
    ))];
    if !t.attributes.is_empty() {
        let agree = t
            .attributes
            .iter()
            .filter(|(k, v)| pred.attributes.get(*k).copied().unwrap_or(false) == **v)
            .count();
        parts.push(agree as f64 / t.attributes.len() as f64);
    }
    if !t.objects.is_empty() {
        parts.push(f64::from(u8::from(
            pred.objects.iter().take(3).any(|o| t.objects.contains(o)),
        )));
    }
    let value = if parsed.is_ok() {
        parts.iter().sum::<f64>() / parts.len() as f64
    } else {
        0.0
    };
    let detail = match &parsed {
        Err(e) => format!("malformed answer: {e}"),
        Ok(p) => format!(
            "scene {:?} (truth {:?}), objects {:?}",
            p.scene, t.scene, p.objects
        ),
    };
    let row = LabelsRow {
        malformed: parsed.is_err(),
        error: parsed.err(),
        truth: t,
        pred,
    };
    Score::scored("labels", value, spec.threshold, detail)
        .with_data(serde_json::to_value(&row).unwrap_or(Value::Null))
}

pub(crate) struct Labels;

impl Aggregator for Labels {
    type Row = LabelsRow;
    /// By true scene (the importer's `metadata.scene`), since test names no longer carry it.
    const SLICES: &'static [(&'static str, &'static [&'static str])] = &[("scene", &[])];

    fn compute(rows: &[&LabelsRow]) -> Option<(BTreeMap<String, f64>, Value)> {
        let mrows: Vec<LabelRow> = rows.iter().map(|r| r.metric_row()).collect();
        let lm = label_metrics(&mrows)?;
        let mut m = BTreeMap::from([("scene_accuracy".to_owned(), lm.scene_accuracy)]);
        if let Some(v) = lm.object_top1 {
            m.insert("object_top1".into(), v);
        }
        if let Some(v) = lm.object_top3 {
            m.insert("object_top3".into(), v);
        }
        for (k, a) in &lm.attributes {
            m.insert(format!("{k}.precision"), a.precision);
            m.insert(format!("{k}.recall"), a.recall);
            m.insert(format!("{k}.f1"), a.f1);
        }
        if !lm.attributes.is_empty() {
            let mean =
                lm.attributes.values().map(|a| a.f1).sum::<f64>() / lm.attributes.len() as f64;
            m.insert("attr_macro_f1".into(), mean);
        }
        let malformed = rows.iter().filter(|r| r.malformed).count() as f64 / rows.len() as f64;
        m.insert("malformed_rate".into(), malformed);
        Some((
            m,
            json!({ "scene_confusion": lm.scene_confusion, "attributes": lm.attributes }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> Value {
        json!({"scene": ["scene.food"], "attributes": {"attr.has_person": false, "attr.has_text": true},
               "objects": ["object.food.dessert"]})
    }

    #[test]
    fn scores_answers() {
        let s = score(
            &spec(),
            r#"{"scene": "scene.food", "attributes": {"attr.has_text": true}, "objects": ["object.drink", "object.food.dessert"]}"#,
        );
        assert_eq!(s.value, Some(1.0));
        let wrong = score(&spec(), r#"{"scene": ["scene.product"], "objects": []}"#);
        assert!((wrong.value.unwrap() - 1.0 / 6.0).abs() < 1e-12);
        let bad = score(&spec(), r#"{"scene": 3}"#);
        assert_eq!(bad.data["malformed"], json!(true));
    }

    proptest! {
        #[test]
        fn any_text_is_bounded(answer in "\\PC{0,100}") {
            let v = score(&spec(), &answer).value.unwrap();
            prop_assert!((0.0..=1.0).contains(&v));
        }

        #[test]
        fn echoing_truth_is_perfect(scene in "scene\\.[a-z]{1,6}", objs in prop::collection::vec("object\\.[a-z]{1,6}", 0..4)) {
            let truth = json!({"scene": [scene.clone()], "objects": objs});
            let s = score(&truth, &json!({"scene": scene, "objects": objs}).to_string());
            prop_assert_eq!(s.value, Some(1.0));
        }
    }
}
