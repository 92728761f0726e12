//! Regression metrics of the price task (seed 003): SMAPE in percent where a prediction that could
//! not be parsed counts as 200 % (the worst possible row), the parse-failure rate, and the mean
//! absolute error over the rows that did parse.

use serde::Serialize;

/// One row's symmetric absolute percentage error, 0..=200; 200 for a missing prediction, 0 when
/// both values are 0.
pub fn smape_row(pred: Option<f64>, target: f64) -> f64 {
    match pred {
        None => 200.0,
        Some(p) => {
            let den = p.abs() + target.abs();
            if den == 0.0 {
                0.0
            } else {
                200.0 * (p - target).abs() / den
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Regression {
    pub n: usize,
    /// Mean of `smape_row`, in percent.
    pub smape: f64,
    pub parse_failure_rate: f64,
    /// Mean absolute error over parsed rows; `None` when no row parsed.
    pub mae: Option<f64>,
}

/// `None` for no rows.
pub fn regression(pred: &[Option<f64>], target: &[f64]) -> Option<Regression> {
    assert_eq!(
        pred.len(),
        target.len(),
        "prediction and target lengths differ"
    );
    if pred.is_empty() {
        return None;
    }
    let n = pred.len() as f64;
    let smape = pred
        .iter()
        .zip(target)
        .map(|(&p, &t)| smape_row(p, t))
        .sum::<f64>()
        / n;
    let parsed: Vec<f64> = pred
        .iter()
        .zip(target)
        .filter_map(|(p, t)| p.map(|p| (p - t).abs()))
        .collect();
    let mae = (!parsed.is_empty()).then(|| parsed.iter().sum::<f64>() / parsed.len() as f64);
    Some(Regression {
        n: pred.len(),
        smape,
        parse_failure_rate: (pred.len() - parsed.len()) as f64 / n,
        mae,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        assert_eq!(smape_row(Some(100.0), 100.0), 0.0);
        assert_eq!(smape_row(Some(0.0), 5.0), 200.0);
        assert!((smape_row(Some(110.0), 100.0) - 200.0 * 10.0 / 210.0).abs() < 1e-12);
        let r = regression(&[Some(1.0), None], &[1.0, 2.0]).unwrap();
        assert_eq!(r.smape, 100.0);
        assert_eq!(r.parse_failure_rate, 0.5);
        assert_eq!(r.mae, Some(0.0));
    }

    proptest! {
        #[test]
        fn smape_is_symmetric_and_bounded(p in -1e6f64..1e6, t in -1e6f64..1e6) {
            let a = smape_row(Some(p), t);
            prop_assert!((0.0..=200.0 + 1e-9).contains(&a));
            prop_assert!((a - smape_row(Some(t), p)).abs() < 1e-9);
        }

        #[test]
        fn failures_raise_smape(rows in prop::collection::vec((0.01f64..1e4, 0.01f64..1e4), 1..30)) {
            let target: Vec<f64> = rows.iter().map(|r| r.1).collect();
            let pred: Vec<Option<f64>> = rows.iter().map(|r| Some(r.0)).collect();
            let all = regression(&pred, &target).unwrap();
            let none = regression(&vec![None; rows.len()], &target).unwrap();
            prop_assert!(all.smape <= none.smape);
            prop_assert_eq!(none.smape, 200.0);
            prop_assert_eq!(none.parse_failure_rate, 1.0);
            prop_assert!(none.mae.is_none());
        }
    }
}
