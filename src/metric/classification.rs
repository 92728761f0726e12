//! Classification metrics from a confusion matrix: accuracy, per-class precision / recall / F1,
//! macro and micro F1. Conventions follow scikit-learn with `zero_division=0` and an explicit
//! label list, so a class absent from both truth and predictions still counts in the macro mean
//! (with F1 0).

use serde::Serialize;

use super::{f1_from_counts, ratio};

/// A confusion matrix: `counts[truth][pred]` over a fixed label list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Confusion {
    pub labels: Vec<String>,
    pub counts: Vec<Vec<u64>>,
}

/// One class's one-vs-rest numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassStats {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many rows have this class as truth.
    pub support: u64,
}

impl Confusion {
    pub fn new(labels: Vec<String>) -> Self {
        let k = labels.len();
        Self {
            labels,
            counts: vec![vec![0; k]; k],
        }
    }

    /// Builds a matrix from `(truth, pred)` label indices; indices must be `< labels.len()`.
    pub fn from_pairs(
        labels: Vec<String>,
        pairs: impl IntoIterator<Item = (usize, usize)>,
    ) -> Self {
        let mut m = Self::new(labels);
        for (t, p) in pairs {
            m.add(t, p);
        }
        m
    }

    pub fn add(&mut self, truth: usize, pred: usize) {
        self.counts[truth][pred] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    fn tp_fp_fn(&self, k: usize) -> (f64, f64, f64) {
        let tp = self.counts[k][k] as f64;
        let col: u64 = self.counts.iter().map(|row| row[k]).sum();
        let row: u64 = self.counts[k].iter().sum();
        (tp, col as f64 - tp, row as f64 - tp)
    }

    pub fn per_class(&self) -> Vec<ClassStats> {
        (0..self.labels.len())
            .map(|k| {
                let (tp, fp, fn_) = self.tp_fp_fn(k);
                ClassStats {
                    label: self.labels[k].clone(),
                    precision: ratio(tp, tp + fp),
                    recall: ratio(tp, tp + fn_),
                    f1: f1_from_counts(tp, fp, fn_),
                    support: self.counts[k].iter().sum(),
                }
            })
            .collect()
    }

    /// Fraction of rows on the diagonal; `None` for an empty matrix.
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| {
            let diag: u64 = (0..self.labels.len()).map(|k| self.counts[k][k]).sum();
            diag as f64 / n as f64
        })
    }

    /// Unweighted mean of the per-class F1 over every label in the list.
    pub fn macro_f1(&self) -> Option<f64> {
        if self.total() == 0 || self.labels.is_empty() {
            return None;
        }
        let stats = self.per_class();
        Some(stats.iter().map(|s| s.f1).sum::<f64>() / stats.len() as f64)
    }

    /// F1 of the pooled counts (equals accuracy when every label is listed).
    pub fn micro_f1(&self) -> Option<f64> {
        if self.total() == 0 {
            return None;
        }
        let (mut tp, mut fp, mut fn_) = (0.0, 0.0, 0.0);
        for k in 0..self.labels.len() {
            let (a, b, c) = self.tp_fp_fn(k);
            tp += a;
            fp += b;
            fn_ += c;
        }
        Some(f1_from_counts(tp, fp, fn_))
    }
}

/// Binary classification with `true` as the positive class (spam, an attribute being set).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Binary {
    pub n: usize,
    pub accuracy: f64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub macro_f1: f64,
    pub micro_f1: f64,
    /// Rows truth (false, true), columns prediction (false, true).
    pub confusion: Confusion,
}

/// Binary metrics of `pred` against `truth`; `None` when there are no rows.
pub fn binary(truth: &[bool], pred: &[bool]) -> Option<Binary> {
    assert_eq!(
        truth.len(),
        pred.len(),
        "truth and prediction lengths differ"
    );
    let confusion = Confusion::from_pairs(
        vec!["0".into(), "1".into()],
        truth
            .iter()
            .zip(pred)
            .map(|(&t, &p)| (usize::from(t), usize::from(p))),
    );
    let stats = confusion.per_class();
    Some(Binary {
        n: truth.len(),
        accuracy: confusion.accuracy()?,
        precision: stats[1].precision,
        recall: stats[1].recall,
        f1: stats[1].f1,
        macro_f1: confusion.macro_f1()?,
        micro_f1: confusion.micro_f1()?,
        confusion,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_values() {
        let t = [true, true, false, false, true];
        let p = [true, false, false, true, true];
        let b = binary(&t, &p).unwrap();
        assert_eq!(b.confusion.counts, vec![vec![1, 1], vec![1, 2]]);
        assert!((b.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((b.accuracy - 0.6).abs() < 1e-12);
        assert!((b.macro_f1 - (0.5 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
    }

    #[test]
    fn absent_class_counts_as_zero_in_macro() {
        let b = binary(&[false, false], &[false, false]).unwrap();
        assert_eq!(b.f1, 0.0);
        assert_eq!(b.macro_f1, 0.5);
        assert_eq!(b.accuracy, 1.0);
    }

    #[test]
    fn empty_is_none() {
        assert!(binary(&[], &[]).is_none());
    }

    proptest! {
        #[test]
        fn bounded_and_micro_equals_accuracy(pairs in prop::collection::vec((0usize..4, 0usize..4), 1..60)) {
            let labels = (0..4).map(|k| k.to_string()).collect();
            let m = Confusion::from_pairs(labels, pairs.iter().copied());
            let acc = m.accuracy().unwrap();
            prop_assert!((m.micro_f1().unwrap() - acc).abs() < 1e-12);
            let mf = m.macro_f1().unwrap();
            prop_assert!((0.0..=1.0).contains(&mf));
            for s in m.per_class() {
                prop_assert!((0.0..=1.0).contains(&s.f1));
                prop_assert!(s.f1 <= s.precision.max(s.recall) + 1e-12);
                prop_assert!(s.f1 >= s.precision.min(s.recall) - 1e-12);
            }
            prop_assert_eq!(m.total() as usize, pairs.len());
        }

        #[test]
        fn perfect_prediction_scores_one(truth in prop::collection::vec(any::<bool>(), 1..40)) {
            let b = binary(&truth, &truth).unwrap();
            prop_assert_eq!(b.accuracy, 1.0);
            let both = truth.iter().any(|&t| t) && truth.iter().any(|&t| !t);
            if both { prop_assert_eq!(b.macro_f1, 1.0); }
        }
    }
}
