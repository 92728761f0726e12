//! Deal extraction from flyer pages (seed 000): the model answers a JSON list of deals (`name`,
//! `price`, optional `unit` and `bbox`); predictions are matched one-to-one to the ground truth and
//! the suite reports precision, deal_retrieval_rate (recall), f1, safe_deal_rate (price and unit
//! right, over ground-truth deals) and price_reliability (price right among matched deals).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{first_json, json_number};
use super::Aggregator;
use crate::metric::matching::{
    deal_metrics, match_one_to_one, normalise_name, DealCounts, MatchOptions, Matchable,
};
use crate::score::Score;

/// One deal, as annotated or as predicted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deal {
    pub name: String,
    pub price: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f64; 4]>,
}

/// A page's ground truth and options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealsSpec {
    pub deals: Vec<Deal>,
    #[serde(default)]
    pub matching: MatchOptions,
    /// A price is right within this absolute difference.
    #[serde(default = "default_price_tolerance")]
    pub price_tolerance: f64,
    /// The page passes when its F1 reaches this.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

fn default_price_tolerance() -> f64 {
    0.005
}
fn default_threshold() -> f64 {
    0.5
}

/// Canonical unit spelling: lowercase, `/`, `per` and punctuation dropped, common aliases merged.
pub fn normalise_unit(u: Option<&str>) -> String {
    let n = normalise_name(u.unwrap_or("")).replace("per ", "");
    match n.trim() {
        "" | "ea" | "each" | "piece" | "pc" | "pcs" | "item" | "st" | "stk" | "stuck" => {
            "each".into()
        }
        "lb" | "lbs" | "pound" => "lb".into(),
        "kg" | "kilo" | "kilogram" => "kg".into(),
        "l" | "liter" | "litre" => "l".into(),
        other => other.replace(' ', ""),
    }
}

/// Reads one deal object; `Err` names the field.
pub fn parse_deal(v: &Value) -> Result<Deal, String> {
    let o = v.as_object().ok_or("deal is not an object")?;
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .ok_or("field `name` is missing or not a string")?;
    let price = o
        .get("price")
        .and_then(json_number)
        .ok_or("field `price` is missing or not a number")?;
    let unit = match o.get("unit") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("field `unit` is not a string".into()),
    };
    let bbox = match o.get("bbox") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.len() == 4 => {
            let nums: Option<Vec<f64>> = a.iter().map(Value::as_f64).collect();
            let nums = nums.ok_or("field `bbox` holds a non-number")?;
            Some([nums[0], nums[1], nums[2], nums[3]])
        }
        Some(_) => return Err("field `bbox` is not a list of 4 numbers".into()),
    };
    Ok(Deal {
        name: name.to_owned(),
        price,
        unit,
        bbox,
    })
}

/// The answer's deal list: a JSON list, or an object with a `deals` list.
pub fn parse_answer(answer: &str) -> Result<Vec<Deal>, String> {
    let (v, _) = first_json(answer).ok_or("no JSON list in the answer")?;
    let list = match &v {
        Value::Array(a) => a,
        Value::Object(o) => o
            .get("deals")
            .and_then(Value::as_array)
            .ok_or("JSON object without a `deals` list")?,
        _ => return Err("the answer's JSON is not a list".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, d)| parse_deal(d).map_err(|e| format!("deal {i}: {e}")))
        .collect()
}

/// What the scorer stores in `Score::data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DealsRow {
    pub malformed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub counts: DealCounts,
    /// `(truth index, prediction index, price right, unit right)`.
    pub matches: Vec<(usize, usize, bool, bool)>,
    pub pred: Vec<Deal>,
}

/// Counts for one page.
pub fn count(spec: &DealsSpec, pred: &[Deal]) -> (DealCounts, Vec<(usize, usize, bool, bool)>) {
    fn m(d: &Deal) -> Matchable<'_> {
        Matchable {
            bbox: d.bbox,
            name: &d.name,
        }
    }
    let gt: Vec<Matchable> = spec.deals.iter().map(m).collect();
    let pr: Vec<Matchable> = pred.iter().map(m).collect();
    let pairs = match_one_to_one(&gt, &pr, &spec.matching);
    let mut c = DealCounts {
        gt: gt.len() as u64,
        pred: pr.len() as u64,
        ..DealCounts::default()
    };
    let mut matches = Vec::new();
    for (i, j) in pairs {
        let (g, p) = (&spec.deals[i], &pred[j]);
        let price_ok = (g.price - p.price).abs() <= spec.price_tolerance + 1e-9;
        let unit_ok = normalise_unit(g.unit.as_deref()) == normalise_unit(p.unit.as_deref());
        c.matched += 1;
        c.price_ok += u64::from(price_ok);
        c.safe += u64::from(price_ok && unit_ok);
        matches.push((i, j, price_ok, unit_ok));
    }
    (c, matches)
}

pub fn score(spec: &Value, answer: &str) -> Score {
    let spec: DealsSpec = match serde_json::from_value(spec.clone()) {
        Ok(s) => s,
        Err(e) => return Score::scorer_error("deals", 0.5, format!("invalid deals spec: {e}")),
    };
    let parsed = parse_answer(answer);
    let pred = parsed.clone().unwrap_or_default();
    let (counts, matches) = count(&spec, &pred);
    let m = deal_metrics(counts);
    // A page with no deals in truth or answer is perfect, not undefined.
    let value = if counts.gt == 0 && counts.pred == 0 && parsed.is_ok() {
        1.0
    } else {
        m.f1
    };
    let detail = match &parsed {
        Err(e) => format!("malformed answer: {e}"),
        Ok(_) => format!(
            "matched {}/{} deals ({} predicted), {} with price and unit right",
            counts.matched, counts.gt, counts.pred, counts.safe
        ),
    };
    let row = DealsRow {
        malformed: parsed.is_err(),
        error: parsed.err(),
        counts,
        matches,
        pred,
    };
    Score::scored("deals", value, spec.threshold, detail)
        .with_data(serde_json::to_value(&row).unwrap_or(Value::Null))
}

pub(crate) struct Deals;

impl Aggregator for Deals {
    type Row = DealsRow;
    const SLICES: &'static [(&'static str, &'static [&'static str])] = &[("store", &[])];

    fn compute(rows: &[&DealsRow]) -> Option<(BTreeMap<String, f64>, Value)> {
        if rows.is_empty() {
            return None;
        }
        let total = rows.iter().fold(DealCounts::default(), |a, r| a + r.counts);
        let d = deal_metrics(total);
        let malformed = rows.iter().filter(|r| r.malformed).count() as f64 / rows.len() as f64;
        let m = BTreeMap::from([
            ("precision".to_owned(), d.precision),
            ("deal_retrieval_rate".to_owned(), d.deal_retrieval_rate),
            ("f1".to_owned(), d.f1),
            ("safe_deal_rate".to_owned(), d.safe_deal_rate),
            ("price_reliability".to_owned(), d.price_reliability),
            ("malformed_rate".to_owned(), malformed),
        ]);
        Some((m, json!({ "counts": total })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec() -> Value {
        json!({"deals": [
            {"name": "Bananas", "price": 1.99, "unit": "kg", "bbox": [0, 0, 100, 50]},
            {"name": "Whole Milk 1L", "price": 0.89, "unit": "each", "bbox": [0, 60, 100, 110]}
        ]})
    }

    #[test]
    fn scores_a_page() {
        let s = score(
            &spec(),
            r#"Here: [{"name": "bananas", "price": "$1.99", "unit": "/kg"}, {"name": "Milk", "price": 0.99}]"#,
        );
        assert_eq!(
            s.data["counts"],
            json!({"gt": 2, "pred": 2, "matched": 1, "price_ok": 1, "safe": 1})
        );
        assert_eq!(s.value, Some(0.5));
        let bad = score(&spec(), "I see bananas for 1.99");
        assert_eq!(bad.data["malformed"], json!(true));
        assert_eq!(bad.value, Some(0.0));
        let empty = score(&json!({"deals": []}), "[]");
        assert_eq!(empty.value, Some(1.0));
    }

    #[test]
    fn units_normalise() {
        assert_eq!(normalise_unit(Some("/KG")), "kg");
        assert_eq!(normalise_unit(Some("per lb")), "lb");
        assert_eq!(normalise_unit(None), normalise_unit(Some("ea")));
        assert_eq!(normalise_unit(Some("100 g")), "100g");
    }

    proptest! {
        #[test]
        fn any_text_scores(answer in "\\PC{0,120}") {
            let s = score(&spec(), &answer);
            let v = s.value.unwrap();
            prop_assert!((0.0..=1.0).contains(&v));
        }

        #[test]
        fn echoing_truth_is_perfect(names in prop::collection::btree_set("[a-z]{3,8}", 0..6)) {
            let deals: Vec<Value> = names.iter().enumerate()
                .map(|(i, n)| json!({"name": n, "price": i as f64 + 0.5, "unit": "each"})).collect();
            let s = score(&json!({"deals": deals}), &Value::Array(deals.clone()).to_string());
            prop_assert_eq!(s.value, Some(1.0));
        }
    }
}
