//! The review / demote policy of the spam task (seed 001) and its threshold sweep.
//!
//! A prediction `(is_spam, confidence)` is *demoted* when `is_spam && confidence >= demote`,
//! sent to *review* when `is_spam && review <= confidence < demote`, and *kept* otherwise. For the
//! metrics an item the policy acts on (review or demote) counts as a spam call. The sweep walks a
//! grid of `(review, demote)` pairs with `review <= demote` and picks the best macro F1; ties go
//! to the higher precision of automatic demotions, then to fewer reviews, then to the first pair
//! in grid order (review ascending, then demote ascending).

use serde::Serialize;

use super::classification::binary;
use super::ratio;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Demote,
    Review,
    Keep,
}

pub fn decide(is_spam: bool, confidence: f64, review: f64, demote: f64) -> Decision {
    if is_spam && confidence >= demote {
        Decision::Demote
    } else if is_spam && confidence >= review {
        Decision::Review
    } else {
        Decision::Keep
    }
}

/// The metrics of one `(review, demote)` pair.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperatingPoint {
    pub review_threshold: f64,
    pub demote_threshold: f64,
    pub macro_f1: f64,
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    pub accuracy: f64,
    pub demote_rate: f64,
    pub review_rate: f64,
    /// Fraction of demoted items that are spam (0 when nothing is demoted).
    pub demote_precision: f64,
}

/// The policy's metrics at one operating point; `None` for no rows.
pub fn evaluate(
    truth: &[bool],
    pred: &[(bool, f64)],
    review: f64,
    demote: f64,
) -> Option<OperatingPoint> {
    assert_eq!(
        truth.len(),
        pred.len(),
        "truth and prediction lengths differ"
    );
    let decisions: Vec<Decision> = pred
        .iter()
        .map(|&(s, c)| decide(s, c, review, demote))
        .collect();
    let flagged: Vec<bool> = decisions.iter().map(|&d| d != Decision::Keep).collect();
    let b = binary(truth, &flagged)?;
    let n = truth.len() as f64;
    let demoted = decisions.iter().filter(|&&d| d == Decision::Demote).count() as f64;
    let reviewed = decisions.iter().filter(|&&d| d == Decision::Review).count() as f64;
    let demoted_spam = decisions
        .iter()
        .zip(truth)
        .filter(|(&d, &t)| d == Decision::Demote && t)
        .count() as f64;
    Some(OperatingPoint {
        review_threshold: review,
        demote_threshold: demote,
        macro_f1: b.macro_f1,
        f1: b.f1,
        precision: b.precision,
        recall: b.recall,
        accuracy: b.accuracy,
        demote_rate: demoted / n,
        review_rate: reviewed / n,
        demote_precision: ratio(demoted_spam, demoted),
    })
}

/// `0, 1/steps, …, 1`.
pub fn grid(steps: usize) -> Vec<f64> {
    (0..=steps).map(|i| i as f64 / steps as f64).collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sweep {
    pub table: Vec<OperatingPoint>,
    pub best: OperatingPoint,
}

fn better(a: &OperatingPoint, b: &OperatingPoint) -> bool {
    (a.macro_f1, a.demote_precision, -a.review_rate)
        > (b.macro_f1, b.demote_precision, -b.review_rate)
}

/// Every `(review, demote)` pair of `grid` with `review <= demote`, and the best one.
pub fn sweep(truth: &[bool], pred: &[(bool, f64)], grid: &[f64]) -> Option<Sweep> {
    let mut table = Vec::new();
    for &r in grid {
        for &d in grid.iter().filter(|&&d| d >= r) {
            table.push(evaluate(truth, pred, r, d)?);
        }
    }
    let mut best = table.first()?.clone();
    for p in &table[1..] {
        if better(p, &best) {
            best = p.clone();
        }
    }
    Some(Sweep { table, best })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seed_policy_boundaries() {
        assert_eq!(decide(true, 0.7, 0.5, 0.7), Decision::Demote);
        assert_eq!(decide(true, 0.5, 0.5, 0.7), Decision::Review);
        assert_eq!(decide(true, 0.49, 0.5, 0.7), Decision::Keep);
        assert_eq!(decide(false, 0.99, 0.5, 0.7), Decision::Keep);
    }

    #[test]
    fn sweep_finds_separating_threshold() {
        let truth = [true, true, false, false];
        let pred = [(true, 0.9), (true, 0.8), (true, 0.3), (false, 0.9)];
        let s = sweep(&truth, &pred, &grid(10)).unwrap();
        assert_eq!(s.best.macro_f1, 1.0);
        assert!(s.best.review_threshold > 0.3 && s.best.review_threshold <= 0.8);
        assert_eq!(s.table.len(), 66);
    }

    proptest! {
        #[test]
        fn best_is_max_of_table(
            rows in prop::collection::vec((any::<bool>(), any::<bool>(), 0.0f64..=1.0), 1..40)
        ) {
            let truth: Vec<bool> = rows.iter().map(|r| r.0).collect();
            let pred: Vec<(bool, f64)> = rows.iter().map(|r| (r.1, r.2)).collect();
            let s = sweep(&truth, &pred, &grid(5)).unwrap();
            for p in &s.table {
                prop_assert!(p.macro_f1 <= s.best.macro_f1);
                prop_assert!(p.review_threshold <= p.demote_threshold);
                prop_assert!(p.demote_rate + p.review_rate <= 1.0 + 1e-12);
            }
        }
    }
}
