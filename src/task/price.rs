//! Price regression (seed 003): the model answers a price, as JSON (`{"price": 4.89}` or a bare
//! number) or in words (`"$4.89"`). The suite reports SMAPE in percent with an unparseable answer
//! counted as 200 %, the parse-failure rate, and the MAE over parsed rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::extract::{first_json, json_number, parse_number};
use super::Aggregator;
use crate::metric::regression::{regression, smape_row};
use crate::score::Score;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    pub target: f64,
    /// The case passes when its SMAPE (percent) is at most this.
    #[serde(default = "default_max_smape")]
    pub max_smape: f64,
}

fn default_max_smape() -> f64 {
    20.0
}

/// Reads the price from an answer: the first JSON object's `price` field, else the first number
/// in the text. `Err` when there is none.
pub fn parse_answer(answer: &str) -> Result<f64, String> {
    if let Some((Value::Object(o), _)) = first_json(answer) {
        return o
            .get("price")
            .and_then(json_number)
            .ok_or_else(|| "JSON object without a numeric `price`".to_owned());
    }
    parse_number(answer).ok_or_else(|| "no number in the answer".to_owned())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriceRow {
    pub malformed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub pred: Option<f64>,
    pub target: f64,
    pub smape: f64,
}

pub fn score(spec: &Value, answer: &str) -> Score {
    let spec = match serde_json::from_value::<PriceSpec>(spec.clone()) {
        Ok(s) if s.target.is_finite() => s,
        Ok(_) => return Score::scorer_error("price", 0.0, "spec target is not finite".into()),
        Err(e) => return Score::scorer_error("price", 0.0, format!("invalid price spec: {e}")),
    };
    let parsed = parse_answer(answer);
    let pred = parsed.as_ref().ok().copied();
    let smape = smape_row(pred, spec.target);
    let detail = match &parsed {
        Err(e) => format!("unparseable answer ({e}): SMAPE 200%"),
        Ok(p) => format!("predicted {p}, target {}, SMAPE {smape:.1}%", spec.target),
    };
    let row = PriceRow {
        malformed: parsed.is_err(),
        error: parsed.err(),
        pred,
        target: spec.target,
        smape,
    };
    // Value 1 − SMAPE/200 in 0..=1; the threshold is the same bound expressed on that scale.
    let threshold = 1.0 - spec.max_smape / 200.0;
    Score::scored("price", 1.0 - smape / 200.0, threshold, detail)
        .with_data(serde_json::to_value(&row).unwrap_or(Value::Null))
}

pub(crate) struct Price;

impl Aggregator for Price {
    type Row = PriceRow;
    const SLICES: &'static [(&'static str, &'static [&'static str])] = &[];

    fn compute(rows: &[&PriceRow]) -> Option<(BTreeMap<String, f64>, Value)> {
        let pred: Vec<Option<f64>> = rows.iter().map(|r| r.pred).collect();
        let target: Vec<f64> = rows.iter().map(|r| r.target).collect();
        let r = regression(&pred, &target)?;
        let mut m = BTreeMap::from([
            ("smape".to_owned(), r.smape),
            ("parse_failure_rate".to_owned(), r.parse_failure_rate),
            ("malformed_rate".to_owned(), r.parse_failure_rate),
        ]);
        if let Some(mae) = r.mae {
            m.insert("mae".into(), mae);
        }
        let worst: Vec<f64> = {
            let mut s: Vec<f64> = rows.iter().map(|r| r.smape).collect();
            s.sort_by(|a, b| b.total_cmp(a));
            s.truncate(5);
            s
        };
        Some((m, json!({ "worst_smape": worst })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_forms() {
        assert_eq!(parse_answer(r#"{"price": 4.89}"#), Ok(4.89));
        assert_eq!(parse_answer(r#"```json {"price": "$12.50"} ```"#), Ok(12.5));
        assert_eq!(parse_answer("The price is 4.89 USD"), Ok(4.89));
        assert!(parse_answer(r#"{"cost": 3}"#).is_err());
        assert!(parse_answer("I cannot tell").is_err());
        let s = score(&json!({"target": 10.0}), "no idea");
        assert_eq!(s.value, Some(0.0));
        assert_eq!(s.data["smape"], json!(200.0));
    }

    proptest! {
        #[test]
        fn exact_answer_passes(cents in 1u32..1_000_000) {
            let t = cents as f64 / 100.0;
            let s = score(&json!({"target": t}), &format!("{{\"price\": {t}}}"));
            prop_assert_eq!(s.value, Some(1.0));
            prop_assert!(s.passed);
        }

        #[test]
        fn any_text_is_bounded(answer in "\\PC{0,80}") {
            let s = score(&json!({"target": 3.5}), &answer);
            let v = s.value.unwrap();
            prop_assert!((0.0..=1.0).contains(&v));
        }
    }
}
